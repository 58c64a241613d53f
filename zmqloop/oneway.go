package zmqloop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// MessageHandler handles one verified one-way message (PULL or SUB). It
// runs on the loop's socket goroutine, one message at a time and in arrival
// order, so a slow handler holds back the queue (libzmq buffers up to its
// high-water mark). ctx is cancelled when the loop stops. A returned error
// is logged; a panic is recovered, logged and counted. The handler must not
// keep msg after returning: msg.Body points into the loop's receive buffer
// (no copy per message), so copy it to keep it.
type MessageHandler func(ctx context.Context, msg *Request) error

// PullConfig configures a PullLoop. Zero values are the documented
// defaults.
type PullConfig struct {
	// Bind and Connect list the PULL socket's endpoints; at least one is
	// required.
	Bind, Connect []string
	// Codec verifies. Required.
	Codec *Codec
	// Handlers maps message types to handlers; at least one is required.
	// Messages of other types are refused and counted.
	Handlers map[string]MessageHandler
	// ReplayCapacity bounds the replay window; see ReplayConfig.
	ReplayCapacity int
	// Curve, if set, encrypts the transport.
	Curve *Curve
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Rejected, if set, is called with the reason for every refused
	// message, on the socket goroutine; it must not block.
	Rejected func(err error)
}

// SubConfig configures a SubLoop: a PullConfig plus the topics.
type SubConfig struct {
	PullConfig
	// Topics are the subscriptions: a message is delivered when its topic
	// starts with one of them. Empty means every topic.
	Topics []string
}

// PullLoop receives one-way messages (stats, log lines) on a PULL socket.
type PullLoop struct{ oneway }

// SubLoop receives published messages (heartbeats) on a SUB socket. A
// published message is a topic frame followed by the envelope; the
// envelope's type must equal the topic.
type SubLoop struct{ oneway }

type oneway struct {
	kind     string
	typ      zmq.Type
	cfg      PullConfig
	topics   []string
	log      *slog.Logger
	stats    loopCounters
	started  atomic.Bool
	ready    chan struct{}
	mu       sync.Mutex
	bound    []string
	envStart int // index of the key-id frame
	intern   func([]byte) string
}

// NewPullLoop validates cfg and returns a loop; Run starts it.
func NewPullLoop(cfg PullConfig) (*PullLoop, error) {
	l := &PullLoop{}
	if err := l.init("pull loop", zmq.PULL, cfg, nil); err != nil {
		return nil, err
	}
	return l, nil
}

// NewSubLoop validates cfg and returns a loop; Run starts it.
func NewSubLoop(cfg SubConfig) (*SubLoop, error) {
	l := &SubLoop{}
	topics := cfg.Topics
	if len(topics) == 0 {
		topics = []string{""}
	}
	if err := l.init("sub loop", zmq.SUB, cfg.PullConfig, topics); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *oneway) init(kind string, typ zmq.Type, cfg PullConfig, topics []string) error {
	switch {
	case cfg.Codec == nil:
		return fmt.Errorf("zmqloop: new %s: Codec is required", kind)
	case len(cfg.Bind)+len(cfg.Connect) == 0:
		return fmt.Errorf("zmqloop: new %s: at least one Bind or Connect endpoint is required", kind)
	case len(cfg.Handlers) == 0:
		return fmt.Errorf("zmqloop: new %s: at least one handler is required", kind)
	case cfg.ReplayCapacity < 0:
		return fmt.Errorf("zmqloop: new %s: negative ReplayCapacity %d", kind, cfg.ReplayCapacity)
	}
	if err := validateEndpoints(kind, append(append([]string(nil), cfg.Bind...), cfg.Connect...)); err != nil {
		return err
	}
	if err := cfg.Curve.validate(); err != nil {
		return fmt.Errorf("zmqloop: new %s: %w", kind, err)
	}
	h := make(map[string]MessageHandler, len(cfg.Handlers))
	for t, fn := range cfg.Handlers {
		if !validTokenString(t) || fn == nil {
			return fmt.Errorf("zmqloop: new %s: handler for type %q: want a non-nil handler and a type of 1 to 128 bytes of [A-Za-z0-9._:/-]", kind, t)
		}
		if t == BatchType {
			return fmt.Errorf("zmqloop: new %s: handler for type %q: the type is reserved for batches, which the loop unpacks itself", kind, t)
		}
		h[t] = fn
	}
	cfg.Handlers = h
	names := make(map[string]string, len(h)+1)
	for t := range h {
		names[t] = t
	}
	names[BatchType] = BatchType
	l.intern = func(b []byte) string {
		if t, ok := names[string(b)]; ok {
			return t
		}
		return string(b)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	l.kind, l.typ, l.cfg, l.topics, l.log = kind, typ, cfg, topics, cfg.Logger
	l.ready = make(chan struct{})
	if typ == zmq.SUB {
		l.envStart = 1
	}
	return nil
}

// Ready is closed once Run has bound and connected its socket.
func (l *oneway) Ready() <-chan struct{} { return l.ready }

// Endpoints returns the bound endpoints with wildcard ports resolved; it is
// empty before Ready.
func (l *oneway) Endpoints() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.bound...)
}

// Stats returns the loop's counters.
func (l *oneway) Stats() LoopStats { return l.stats.snapshot() }

// Run receives until ctx is cancelled and returns nil once its socket and
// goroutines are gone, or an error if the socket cannot be set up or fails.
func (l *oneway) Run(ctx context.Context) error {
	if !l.started.CompareAndSwap(false, true) {
		return fmt.Errorf("zmqloop: %s: Run called twice", l.kind)
	}
	window, err := NewReplayWindow(ReplayConfig{Window: l.cfg.Codec.window, Capacity: l.cfg.ReplayCapacity, Now: l.cfg.Codec.now})
	if err != nil {
		return err
	}
	s, bound, err := openSocket(sockOpts{typ: l.typ, bind: l.cfg.Bind, connect: l.cfg.Connect,
		maxSize: l.cfg.Codec.maxSize, curve: l.cfg.Curve, log: l.log})
	if err != nil {
		return fmt.Errorf("zmqloop: %s: %w", l.kind, err)
	}
	defer closeSocket(s)
	for _, t := range l.topics {
		if err := s.SetSubscribe(t); err != nil {
			return fmt.Errorf("zmqloop: %s: subscribe to %q: %w", l.kind, t, err)
		}
	}
	f, rc, err := pollableFD(s)
	if err != nil {
		return fmt.Errorf("zmqloop: %s: %w", l.kind, err)
	}
	defer f.Close()
	l.mu.Lock()
	l.bound = bound
	l.mu.Unlock()
	close(l.ready)
	return l.serve(ctx, s, f, rc, window)
}

// serve is the socket goroutine's loop. It reads a batch of messages
// inside the netpoller's readiness callback and waits only when that read
// finds nothing (its EAGAIN also consumed libzmq's pending commands, so the
// next message makes ZMQ_FD readable again); ctx cancellation ends the
// wait through an expired read deadline.
func (l *oneway) serve(ctx context.Context, s *zmq.Socket, f *os.File, rc syscall.RawConn, window *ReplayWindow) error {
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	rd := newBatchReader(l.cfg.Codec.maxSize)
	var m Message
	req := &Request{}
	var items []batchItem
	for {
		var msgs []rmsg
		var rerr error
		err := rc.Read(func(uintptr) bool {
			msgs, rerr = rd.read(s, batchMsgs, l.envStart+4)
			return !isAgain(rerr) || ctx.Err() != nil
		})
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("zmqloop: %s: wait for socket: %w", l.kind, err)
		}
		if rerr != nil && !isAgain(rerr) {
			return fmt.Errorf("zmqloop: %s: receive: %w", l.kind, rerr)
		}
		if rerr == nil {
			now := l.cfg.Codec.now()
			for _, rm := range msgs {
				l.stats.received.Add(1)
				if rm.err != nil {
					l.reject(rm.err)
					continue
				}
				frames := rm.frames
				if len(frames) != l.envStart+3 && len(frames) != l.envStart+4 {
					l.reject(fmt.Errorf("zmqloop: %s: %d frames, want %d or %d: %w", l.kind, len(frames), l.envStart+3, l.envStart+4, ErrFrames))
					continue
				}
				m = Message{}
				err := l.cfg.Codec.openWith(frames[l.envStart:], &m, now, l.intern, true)
				if err != nil && !errors.Is(err, ErrStale) {
					l.reject(err)
					continue
				}
				// Authentic (on ErrStale m is filled). A reply reflected
				// here from a request/reply socket is refused as such,
				// stale or not, in the order the package doc gives.
				if m.ReplyTo != "" || m.Error != nil {
					l.reject(notARequest(l.kind, &m))
					continue
				}
				if err != nil {
					l.reject(err)
					continue
				}
				if l.envStart == 1 && string(frames[0]) != m.Type {
					l.reject(fmt.Errorf("zmqloop: %s: topic frame %q does not match signed type %q: %w", l.kind, truncate(frames[0]), m.Type, ErrMalformed))
					continue
				}
				if err := window.admitAt(&m, now); err != nil {
					l.reject(err)
					continue
				}
				if m.Type == BatchType {
					if len(m.Data) > 0 {
						l.reject(fmt.Errorf("zmqloop: %s: batch %q has a data frame (items cannot carry data): %w", l.kind, m.ID, ErrMalformed))
						continue
					}
					items = l.deliverBatch(ctx, &m, now, req, items[:0])
					continue
				}
				h, ok := l.cfg.Handlers[m.Type]
				if !ok {
					l.reject(fmt.Errorf("zmqloop: %s: no handler for message type %q", l.kind, m.Type))
					continue
				}
				*req = Request{Type: m.Type, ID: m.ID, KeyID: m.KeyID, Time: m.Time, Body: m.Body, Data: m.Data}
				l.handle(ctx, h, req)
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// deliverBatch unpacks a verified, admitted batch (see BatchType) and runs
// the handler of each item in order, as if the items had come one by one:
// an item of a type without a handler, or whose timestamp is outside the
// window, is refused alone. A batch whose body is not a well-formed,
// non-empty array of items is refused whole and nothing of it is
// delivered. It returns items for reuse.
func (l *oneway) deliverBatch(ctx context.Context, m *Message, now time.Time, req *Request, items []batchItem) []batchItem {
	items, err := parseBatch(m.Body, items)
	if err != nil {
		// The batch passed the MAC, so its sender holds a key: a bug
		// worth a warning, not a flood from outside.
		err = fmt.Errorf("zmqloop: %s: batch %q signed with key %q: %w: %v", l.kind, m.ID, m.KeyID, ErrMalformed, err)
		l.log.Warn("zmqloop: refused batch", "loop", l.kind, "err", err)
		l.reject(err)
		return items
	}
	l.stats.received.Add(uint64(len(items) - 1))
	window := l.cfg.Codec.window
	for _, it := range items {
		ts := m.Time
		if it.hasTS {
			ts = time.UnixMilli(it.ts)
		}
		typ := l.intern(it.typ)
		if d := now.Sub(ts); d > window || d < -window {
			l.reject(fmt.Errorf("zmqloop: %s: %q message %q in batch %q: timestamp %s is %v from now: %w (window %v)",
				l.kind, typ, it.id, m.ID, ts.UTC().Format(time.RFC3339Nano), d.Round(time.Millisecond), ErrStale, window))
			continue
		}
		h, ok := l.cfg.Handlers[typ]
		if !ok {
			l.reject(fmt.Errorf("zmqloop: %s: no handler for message type %q (in batch %q)", l.kind, typ, m.ID))
			continue
		}
		*req = Request{Type: typ, ID: string(it.id), KeyID: m.KeyID, Time: ts, Body: it.body}
		l.handle(ctx, h, req)
	}
	return items
}

func (l *oneway) handle(ctx context.Context, h MessageHandler, req *Request) {
	defer func() {
		if r := recover(); r != nil {
			l.stats.panics.Add(1)
			l.log.Error("zmqloop: handler panicked", "loop", l.kind, "type", req.Type, "id", req.ID, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	l.stats.handled.Add(1)
	if err := h(ctx, req); err != nil {
		l.log.Warn("zmqloop: handler failed", "loop", l.kind, "type", req.Type, "id", req.ID, "err", err)
	}
}

func (l *oneway) reject(err error) {
	l.stats.count(err)
	l.log.Debug("zmqloop: refused message", "loop", l.kind, "err", err)
	if l.cfg.Rejected != nil {
		l.cfg.Rejected(err)
	}
}
