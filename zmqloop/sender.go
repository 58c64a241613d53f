package zmqloop

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// pusherHWM is a Pusher's ZMQ_SNDHWM, in messages (libzmq's default is
// 1000). A batch counts as one, so libzmq still holds up to 6,400 queued
// messages; pushing back early is what lets a backlog be coalesced instead
// of going out one envelope at a time (see the package doc's "Batches").
const pusherHWM = 100

// Sender defaults.
const (
	DefaultQueue        = 1024
	DefaultFlushTimeout = time.Second
)

// SenderConfig configures a Pusher or a Publisher. Zero values are the
// documented defaults.
type SenderConfig struct {
	// Bind and Connect list the socket's endpoints; at least one is
	// required.
	Bind, Connect []string
	// Codec signs. Required.
	Codec *Codec
	// Queue is how many sealed messages may wait for the socket; when it is
	// full, Push waits (Publish too). Default DefaultQueue (1024).
	Queue int
	// FlushTimeout is how long Close keeps trying to hand queued messages
	// to libzmq before it drops them (and logs how many). Default
	// DefaultFlushTimeout (1s).
	FlushTimeout time.Duration
	// Curve, if set, encrypts the transport.
	Curve *Curve
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Pusher sends signed one-way messages on a PUSH socket (to PullLoops).
// It is safe for concurrent use: callers seal in their own goroutine and
// send directly when nothing is queued. Messages that queue because the
// socket pushed back go out coalesced, up to MaxBatchItems in one signed
// BatchType envelope (see the package doc's "Batches"); the PullLoop
// delivers them one by one, in order.
type Pusher struct{ sender }

// Publisher sends signed messages on a PUB socket (to SubLoops); the topic
// is the message type. It is safe for concurrent use. As with any PUB
// socket, messages sent before a subscriber has connected and subscribed
// are not delivered to it, and a slow subscriber loses messages past its
// high-water mark.
type Publisher struct{ sender }

// NewPusher validates cfg, opens the PUSH socket and returns a Pusher.
func NewPusher(cfg SenderConfig) (*Pusher, error) {
	p := &Pusher{}
	if err := p.start("pusher", zmq.PUSH, cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// NewPublisher validates cfg, opens the PUB socket and returns a Publisher.
func NewPublisher(cfg SenderConfig) (*Publisher, error) {
	p := &Publisher{}
	if err := p.start("publisher", zmq.PUB, cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// Push seals a message of type typ with body and queues it for sending. It
// waits while the queue is full, until ctx is done.
func (p *Pusher) Push(ctx context.Context, typ string, body json.RawMessage) error {
	return p.send(ctx, false, typ, body, nil)
}

// PushData is Push with raw data in the message's data frame
// (Message.Data), neither JSON-escaped nor base64'd. A message with data
// is signed alone and never coalesced into a batch (it keeps its place in
// the order); empty data is Push.
func (p *Pusher) PushData(ctx context.Context, typ string, body json.RawMessage, data []byte) error {
	return p.send(ctx, false, typ, body, data)
}

// Publish seals a message with type topic and body and queues it for
// sending under that topic.
func (p *Publisher) Publish(ctx context.Context, topic string, body json.RawMessage) error {
	return p.send(ctx, true, topic, body, nil)
}

// PublishData is Publish with raw data in the message's data frame
// (Message.Data); empty data is Publish.
func (p *Publisher) PublishData(ctx context.Context, topic string, body json.RawMessage, data []byte) error {
	return p.send(ctx, true, topic, body, data)
}

type sender struct {
	kind   string
	cfg    SenderConfig
	log    *slog.Logger
	work   chan struct{} // capacity 1: senders queued messages while the owner was idle
	closed chan struct{}
	done   chan struct{}
	bound  []string
	once   sync.Once

	// Senders seal in their own goroutine and append the frames to pending
	// under mu; the socket goroutine takes the whole batch at once and hands
	// it to libzmq in one cgo call. No channel operation or goroutine
	// wake-up per message: a sender signals work only when the owner went
	// idle (notified false).
	//
	// When nothing is queued and the socket goroutine is not flushing, a
	// sender sends its message itself, under mu (libzmq sockets may be
	// used from any thread with a full memory barrier between uses): no
	// hand-off at all. Only when the socket pushes back (EAGAIN: no peer,
	// or at the high-water mark) do messages queue for the socket
	// goroutine, which waits for the socket and keeps their order.
	mu       sync.Mutex
	sock     *zmq.Socket // nil once the socket goroutine closes it
	io       *msgIO      // buffers for direct sends
	flushing bool        // the socket goroutine holds queued messages
	wait     *os.File    // the socket goroutine waits on it when pushed back
	pending  *batchWriter
	count    int           // messages queued here or held by the owner, not yet sent
	notified bool          // the owner will look at pending without a signal
	space    chan struct{} // closed when count drops; made by a sender waiting on a full queue
	shut     bool

	nsent, nbatches, ndropped atomic.Uint64
}

// SenderStats counts what a Pusher or Publisher did since it was made.
type SenderStats struct {
	// Sent counts messages handed to libzmq (each item of a batch counts
	// as one); libzmq delivers them unless the socket is closed with them
	// still unsent after its linger (FlushTimeout).
	Sent uint64
	// Batches counts the batch envelopes among them (a Pusher's).
	Batches uint64
	// Queued is how many messages wait for the socket now.
	Queued int
	// Dropped counts messages given up: libzmq refused them, or Close's
	// FlushTimeout ran out with them still queued. Each drop is logged.
	Dropped uint64
}

// Stats returns a snapshot of the sender's counters.
func (s *sender) Stats() SenderStats {
	s.mu.Lock()
	q := s.count
	s.mu.Unlock()
	return SenderStats{Sent: s.nsent.Load(), Batches: s.nbatches.Load(), Queued: q, Dropped: s.ndropped.Load()}
}

func (s *sender) start(kind string, typ zmq.Type, cfg SenderConfig) error {
	switch {
	case cfg.Codec == nil:
		return fmt.Errorf("zmqloop: new %s: Codec is required", kind)
	case len(cfg.Bind)+len(cfg.Connect) == 0:
		return fmt.Errorf("zmqloop: new %s: at least one Bind or Connect endpoint is required", kind)
	case cfg.Queue < 0 || cfg.FlushTimeout < 0:
		return fmt.Errorf("zmqloop: new %s: negative Queue %d or FlushTimeout %v", kind, cfg.Queue, cfg.FlushTimeout)
	}
	if err := validateEndpoints(kind, append(append([]string(nil), cfg.Bind...), cfg.Connect...)); err != nil {
		return err
	}
	if err := cfg.Curve.validate(); err != nil {
		return fmt.Errorf("zmqloop: new %s: %w", kind, err)
	}
	if cfg.Queue == 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.FlushTimeout == 0 {
		cfg.FlushTimeout = DefaultFlushTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	*s = sender{kind: kind, cfg: cfg, log: cfg.Logger, work: make(chan struct{}, 1),
		closed: make(chan struct{}), done: make(chan struct{}), pending: newBatchWriter(), io: newMsgIO(0)}
	ready := make(chan error, 1)
	go s.own(typ, ready)
	return <-ready
}

// Endpoints returns the bound endpoints with wildcard ports resolved.
func (s *sender) Endpoints() []string { return append([]string(nil), s.bound...) }

func (s *sender) send(ctx context.Context, topic bool, typ string, body json.RawMessage, data []byte) error {
	if typ == BatchType {
		return fmt.Errorf("zmqloop: %s: send: type %q is reserved for batches: %w", s.kind, typ, ErrMalformed)
	}
	m := Message{Type: typ, Body: body, Data: data}
	hasData := len(data) > 0
	var key, payload, mac []byte
	var bufp *[]byte
	var err error
	if topic || hasData {
		// Signed now: a topic message or one with data never goes in a
		// batch.
		key, payload, mac, bufp, err = s.cfg.Codec.sealIntoID(&m, false)
	} else {
		// A Pusher signs only what it sends alone: a message that queues
		// is signed as part of a batch (or alone, by the socket goroutine).
		payload, bufp, err = s.cfg.Codec.payloadInto(&m, false)
	}
	if err != nil {
		return fmt.Errorf("zmqloop: %s: %w", s.kind, err)
	}
	defer func() { s.cfg.Codec.release(bufp) }()
	for {
		s.mu.Lock()
		if s.shut {
			s.mu.Unlock()
			return fmt.Errorf("zmqloop: %s: send %q: %w", s.kind, typ, ErrClosed)
		}
		if s.pending.pending() == 0 && !s.flushing && s.sock != nil {
			var err error
			switch {
			case topic && hasData:
				err = s.io.send(s.sock, zmq.DONTWAIT, []byte(typ), key, payload, mac, data)
			case topic:
				err = s.io.send(s.sock, zmq.DONTWAIT, []byte(typ), key, payload, mac)
			case hasData:
				err = s.io.send(s.sock, zmq.DONTWAIT, key, payload, mac, data)
			default:
				if mac == nil {
					n := len(*bufp)
					key, *bufp = s.cfg.Codec.sign(*bufp, payload)
					mac = (*bufp)[n:]
				}
				err = s.io.send(s.sock, zmq.DONTWAIT, key, payload, mac)
			}
			if err == nil {
				s.mu.Unlock()
				s.nsent.Add(1)
				return nil
			}
			if !isAgain(err) {
				s.mu.Unlock()
				return fmt.Errorf("zmqloop: %s: send %q: %w", s.kind, typ, err)
			}
			// Pushed back: queue it for the socket goroutine.
		}
		if s.count < s.cfg.Queue {
			switch {
			case topic && hasData:
				s.pending.addTopic(typ, key, payload, mac, data)
			case topic:
				s.pending.addTopic(typ, key, payload, mac)
			case hasData:
				s.pending.add(key, payload, mac, data) // signed: the coalescer sends it alone
			default:
				s.pending.add(payload) // the socket goroutine signs it
			}
			s.count++
			wake := !s.notified
			s.notified = true
			s.mu.Unlock()
			if wake {
				select {
				case s.work <- struct{}{}:
				default:
				}
			}
			return nil
		}
		if s.space == nil {
			s.space = make(chan struct{})
		}
		space := s.space
		s.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return fmt.Errorf("zmqloop: %s: send %q: %w", s.kind, typ, ctx.Err())
		case <-s.closed:
			return fmt.Errorf("zmqloop: %s: send %q: %w", s.kind, typ, ErrClosed)
		}
	}
}

// Close sends what is queued (giving up after FlushTimeout), closes the
// socket and returns once its goroutine has stopped.
func (s *sender) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.shut = true
		f := s.wait
		s.mu.Unlock()
		close(s.closed)
		if f != nil {
			_ = f.SetReadDeadline(time.Unix(1, 0)) // end a wait for the socket
		}
	})
	<-s.done
	return nil
}

// take moves what senders queued into wr (owner only); held is how many
// messages the owner holds elsewhere. It reports whether Close was called;
// when there is nothing to send it clears notified, so the next sender
// signals work.
func (s *sender) take(wr *batchWriter, held int) (*batchWriter, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending.pending() > 0 {
		if wr.pending() == 0 {
			wr, s.pending = s.pending, wr
		} else {
			wr.appendFrom(s.pending)
			s.pending.drop(s.pending.pending())
		}
	}
	if wr.pending()+held == 0 {
		s.notified = false
	}
	s.flushing = wr.pending()+held > 0
	return wr, s.shut
}

// sent frees n queue places (owner only).
func (s *sender) sent(n int) {
	s.mu.Lock()
	s.count -= n
	if s.space != nil {
		close(s.space)
		s.space = nil
	}
	s.mu.Unlock()
}

// own is the socket goroutine.
func (s *sender) own(typ zmq.Type, ready chan<- error) {
	defer close(s.done)
	o := sockOpts{typ: typ, bind: s.cfg.Bind, connect: s.cfg.Connect, curve: s.cfg.Curve, linger: s.cfg.FlushTimeout, log: s.log}
	if typ == zmq.PUSH {
		o.sndhwm = pusherHWM
	}
	sock, bound, err := openSocket(o)
	if err != nil {
		ready <- fmt.Errorf("zmqloop: new %s: %w", s.kind, err)
		return
	}
	defer func() {
		s.mu.Lock()
		s.sock = nil
		s.mu.Unlock()
		sock.Close() // keeps the linger: libzmq flushes in the background
	}()
	s.mu.Lock()
	s.sock = sock
	s.mu.Unlock()
	s.bound = bound
	ready <- nil
	f, rc, err := pollableFD(sock)
	if err != nil {
		s.log.Error("zmqloop: cannot watch socket; messages dropped", "sender", s.kind, "err", err)
		s.mu.Lock()
		s.shut = true
		s.ndropped.Add(uint64(s.count))
		s.mu.Unlock()
		return
	}
	defer f.Close()
	s.mu.Lock()
	s.wait = f
	s.mu.Unlock()
	// wr gets what senders queued. A Pusher coalesces it into out (batches
	// of up to MaxBatchItems messages, see coalescer) once out is empty;
	// a Publisher sends wr as it is. counts[i] is how many queued messages
	// out's i-th message carries.
	wr := newBatchWriter()
	out, co := wr, (*coalescer)(nil)
	if typ == zmq.PUSH {
		out, co = newBatchWriter(), &coalescer{codec: s.cfg.Codec}
	}
	sentOut := func(n int, dropped bool) { // n of out's messages went to libzmq, or were dropped
		items, batches := n, 0
		if co != nil {
			items = 0
			for _, c := range co.counts[:n] {
				items += c
				if c > 1 {
					batches++
				}
			}
			co.counts = co.counts[:copy(co.counts, co.counts[n:])]
		}
		if dropped {
			s.ndropped.Add(uint64(items))
		} else {
			s.nsent.Add(uint64(items))
			s.nbatches.Add(uint64(batches))
		}
		s.sent(items)
	}
	var flushBy time.Time // set once Close was called
	for {
		var shut bool
		held := 0
		if co != nil {
			held = out.pending()
		}
		wr, shut = s.take(wr, held)
		if co != nil {
			if out.pending() == 0 && wr.pending() > 0 {
				co.coalesce(wr, out)
			}
		} else {
			out = wr
		}
		if out.pending() == 0 {
			if shut {
				return
			}
			select {
			case <-s.work:
			case <-s.closed:
			}
			continue
		}
		n, err := out.flush(sock)
		if n > 0 {
			sentOut(n, false)
		}
		if err == nil {
			continue
		}
		if !isAgain(err) {
			lost := 1
			if co != nil {
				lost = co.counts[0]
			}
			s.log.Warn("zmqloop: send failed; message dropped", "sender", s.kind, "messages", lost, "err", err)
			out.drop(1)
			sentOut(1, true)
			continue
		}
		// No peer ready (PUSH with no connection, or at its HWM): wait in
		// the netpoller for the socket to change, or retry soon; Close
		// interrupts the wait.
		if shut && flushBy.IsZero() {
			flushBy = time.Now().Add(s.cfg.FlushTimeout)
		}
		wait := reconnectRetry
		if !flushBy.IsZero() {
			if !time.Now().Before(flushBy) {
				s.mu.Lock()
				dropped := s.count
				s.mu.Unlock()
				s.ndropped.Add(uint64(dropped))
				s.log.Warn("zmqloop: closed with unsent messages", "sender", s.kind, "dropped", dropped)
				return
			}
			wait = min(wait, time.Until(flushBy))
		}
		_ = f.SetReadDeadline(time.Now().Add(wait))
		_ = rc.Read(func(uintptr) bool {
			if flushBy.IsZero() {
				select {
				case <-s.closed:
					return true
				default:
				}
			}
			// A DONTWAIT send that fails does not always process libzmq's
			// commands, so a pending "room again" may sit unseen with its
			// ZMQ_FD edge already gone: ZMQ_EVENTS processes them.
			ev, err := sock.GetEvents()
			return err != nil || ev&zmq.POLLOUT != 0
		})
	}
}
