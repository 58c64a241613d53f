package zmqloop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// DefaultMaxInFlight is ReplyConfig.MaxInFlight's default.
const DefaultMaxInFlight = 64

// CodeBadRequest is the code HandleJSON answers with when a request body
// does not decode into the handler's argument type.
const CodeBadRequest = "bad_request"

// Request is one verified request as a Handler sees it.
type Request struct {
	Type  string          // the message type the handler was registered for
	ID    string          // the request's message id
	KeyID string          // the key that verified it
	Time  time.Time       // the sender's timestamp
	Body  json.RawMessage // the request body; empty if none
}

// Handler answers one request with a JSON body or an error. It runs on one
// of the loop's worker goroutines, at most MaxInFlight at once; ctx is
// cancelled when the loop stops. A *RemoteError (or an error wrapping one)
// reaches the caller with its code; any other error reaches it with code
// CodeInternal and the error's text. A panic is recovered and reaches the
// caller as code CodePanic. The handler must not keep req after returning.
type Handler func(ctx context.Context, req *Request) (json.RawMessage, error)

// HandleJSON adapts a typed function into a Handler: the request body is
// decoded into Req with encoding/json (an undecodable body is answered with
// CodeBadRequest) and the result is encoded as the reply body.
func HandleJSON[Req, Resp any](fn func(ctx context.Context, req Req) (Resp, error)) Handler {
	return func(ctx context.Context, r *Request) (json.RawMessage, error) {
		var in Req
		if len(r.Body) > 0 {
			if err := json.Unmarshal(r.Body, &in); err != nil {
				return nil, Errorf(CodeBadRequest, "%s body: %v", r.Type, err)
			}
		}
		out, err := fn(ctx, in)
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	}
}

// ReplyConfig configures a ReplyLoop. Zero values are the documented
// defaults.
type ReplyConfig struct {
	// Bind and Connect list the ROUTER socket's endpoints; at least one is
	// required. "tcp://127.0.0.1:*" binds a free port (see Endpoints).
	Bind, Connect []string
	// Codec signs and verifies. Required.
	Codec *Codec
	// Handlers maps message types to handlers. At least one is required.
	// A request of any other type is answered with CodeUnknownType.
	Handlers map[string]Handler
	// MaxInFlight bounds how many handlers run at once; while that many
	// run, the loop leaves further requests queued in libzmq. Default
	// DefaultMaxInFlight (64).
	MaxInFlight int
	// ReplayCapacity bounds the loop's replay window; see ReplayConfig.
	ReplayCapacity int
	// Curve, if set, encrypts the transport.
	Curve *Curve
	// Logger gets one Debug line per refused message; nil means
	// slog.Default().
	Logger *slog.Logger
	// Rejected, if set, is called with the reason for every refused
	// message (errors.Is against ErrBadMAC, ErrReplay, ...). It runs on
	// the loop's socket goroutine and must not block.
	Rejected func(err error)
}

// LoopStats counts what a serve loop did since it started.
type LoopStats struct {
	Received uint64 // messages read from the socket
	Handled  uint64 // messages given to a handler
	Rejected uint64 // messages refused (bad MAC, replay, unknown type, ...)
	Panics   uint64 // handler panics recovered
}

type loopCounters struct{ received, handled, rejected, panics atomic.Uint64 }

func (c *loopCounters) snapshot() LoopStats {
	return LoopStats{Received: c.received.Load(), Handled: c.handled.Load(), Rejected: c.rejected.Load(), Panics: c.panics.Load()}
}

// ReplyLoop serves requests on a ROUTER socket: it verifies each request,
// runs its handler on a bounded pool of workers and routes the signed reply
// back to the caller that sent it. Plug Run into daemon as a main loop.
type ReplyLoop struct {
	cfg      ReplyConfig
	log      *slog.Logger
	handlers map[string]Handler
	stats    loopCounters

	started   atomic.Bool
	ready     chan struct{}
	mu        sync.Mutex
	endpoints []string
}

// NewReplyLoop validates cfg and returns a loop; Run starts it.
func NewReplyLoop(cfg ReplyConfig) (*ReplyLoop, error) {
	switch {
	case cfg.Codec == nil:
		return nil, fmt.Errorf("zmqloop: new reply loop: Codec is required")
	case len(cfg.Bind)+len(cfg.Connect) == 0:
		return nil, fmt.Errorf("zmqloop: new reply loop: at least one Bind or Connect endpoint is required")
	case len(cfg.Handlers) == 0:
		return nil, fmt.Errorf("zmqloop: new reply loop: at least one handler is required")
	case cfg.MaxInFlight < 0 || cfg.ReplayCapacity < 0:
		return nil, fmt.Errorf("zmqloop: new reply loop: negative MaxInFlight %d or ReplayCapacity %d", cfg.MaxInFlight, cfg.ReplayCapacity)
	}
	if err := validateEndpoints("reply loop", append(append([]string(nil), cfg.Bind...), cfg.Connect...)); err != nil {
		return nil, err
	}
	if err := cfg.Curve.validate(); err != nil {
		return nil, fmt.Errorf("zmqloop: new reply loop: %w", err)
	}
	h := make(map[string]Handler, len(cfg.Handlers))
	for typ, fn := range cfg.Handlers {
		if !validTokenString(typ) || fn == nil {
			return nil, fmt.Errorf("zmqloop: new reply loop: handler for type %q: want a non-nil handler and a type of 1 to 128 bytes of [A-Za-z0-9._:/-]", typ)
		}
		h[typ] = fn
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &ReplyLoop{cfg: cfg, log: cfg.Logger, handlers: h, ready: make(chan struct{})}, nil
}

// Ready is closed once Run has bound and connected its socket and started
// its workers.
func (l *ReplyLoop) Ready() <-chan struct{} { return l.ready }

// Endpoints returns the bound endpoints with wildcard ports resolved; it is
// empty before Ready.
func (l *ReplyLoop) Endpoints() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.endpoints...)
}

// Stats returns the loop's counters.
func (l *ReplyLoop) Stats() LoopStats { return l.stats.snapshot() }

type replyJob struct {
	routing [][]byte
	msg     Message
	h       Handler
}

// Run serves until ctx is cancelled, then stops reading requests, waits for
// running handlers (their ctx is cancelled too), sends their replies, and
// returns nil after every goroutine and socket it started is gone. It
// returns an error if a socket cannot be set up or fails.
func (l *ReplyLoop) Run(ctx context.Context) error {
	if !l.started.CompareAndSwap(false, true) {
		return fmt.Errorf("zmqloop: reply loop: Run called twice")
	}
	window, err := NewReplayWindow(ReplayConfig{Window: l.cfg.Codec.window, Capacity: l.cfg.ReplayCapacity, Now: l.cfg.Codec.now})
	if err != nil {
		return err
	}
	router, bound, err := openSocket(sockOpts{typ: zmq.ROUTER, bind: l.cfg.Bind, connect: l.cfg.Connect,
		maxSize: l.cfg.Codec.maxSize, curve: l.cfg.Curve})
	if err != nil {
		return fmt.Errorf("zmqloop: reply loop: %w", err)
	}
	defer closeSocket(router)
	backEP := inprocName("reply")
	back, _, err := openSocket(sockOpts{typ: zmq.PULL, bind: []string{backEP}})
	if err != nil {
		return fmt.Errorf("zmqloop: reply loop: %w", err)
	}
	defer closeSocket(back)

	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := l.cfg.MaxInFlight
	jobs := make(chan *replyJob, n)
	done := make(chan struct{})
	started := make(chan error, n+1)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go l.worker(hctx, backEP, jobs, started, &wg)
	}
	wg.Add(1)
	go stopper(ctx, backEP, done, started, &wg)
	for i := 0; i < n+1; i++ {
		if e := <-started; e != nil && err == nil {
			err = fmt.Errorf("zmqloop: reply loop: start worker: %w", e)
		}
	}
	if err == nil {
		l.mu.Lock()
		l.endpoints = bound
		l.mu.Unlock()
		close(l.ready)
		err = l.serve(router, back, jobs, window)
	}
	cancel()
	close(jobs)
	close(done)
	wg.Wait()
	return err
}

// stopper owns a PUSH socket into the loop's inproc back channel and sends
// one stop message when ctx is cancelled, so the socket goroutine never
// polls on a timer.
func stopper(ctx context.Context, ep string, done <-chan struct{}, started chan<- error, wg *sync.WaitGroup) {
	defer wg.Done()
	s, _, err := openSocket(sockOpts{typ: zmq.PUSH, connect: []string{ep}})
	started <- err
	if err != nil {
		return
	}
	defer closeSocket(s)
	select {
	case <-ctx.Done():
		_ = sendFrames(s, 0, []byte{'s'})
		<-done
	case <-done:
	}
}

func (l *ReplyLoop) worker(ctx context.Context, ep string, jobs <-chan *replyJob, started chan<- error, wg *sync.WaitGroup) {
	defer wg.Done()
	s, _, err := openSocket(sockOpts{typ: zmq.PUSH, connect: []string{ep}})
	started <- err
	if err != nil {
		return
	}
	defer closeSocket(s)
	kind := []byte{'r'}
	out := make([][]byte, 0, maxFrames)
	for j := range jobs {
		body, herr := l.call(ctx, j)
		reply := Message{Type: j.msg.Type, ReplyTo: j.msg.ID}
		if herr != nil {
			reply.Error = asRemote(herr)
		} else {
			reply.Body = body
		}
		key, payload, mac, bufp, err := l.cfg.Codec.sealInto(&reply)
		if err != nil {
			l.log.Warn("zmqloop: reply loop: cannot seal reply", "type", j.msg.Type, "id", j.msg.ID, "err", err)
			reply = Message{Type: j.msg.Type, ReplyTo: j.msg.ID, Error: Errorf(CodeInternal, "reply could not be sealed: %v", err)}
			key, payload, mac, bufp, _ = l.cfg.Codec.sealInto(&reply)
		}
		out = append(append(append(out[:0], kind), j.routing...), key, payload, mac)
		if err := sendFrames(s, 0, out...); err != nil {
			l.log.Error("zmqloop: reply loop: hand reply to socket goroutine", "err", err)
		}
		l.cfg.Codec.release(bufp)
	}
}

// call runs the handler, turning a panic into an error.
func (l *ReplyLoop) call(ctx context.Context, j *replyJob) (body json.RawMessage, err error) {
	defer func() {
		if r := recover(); r != nil {
			l.stats.panics.Add(1)
			l.log.Error("zmqloop: handler panicked", "type", j.msg.Type, "id", j.msg.ID, "panic", r, "stack", string(debug.Stack()))
			body, err = nil, Errorf(CodePanic, "handler for %q panicked: %v", j.msg.Type, r)
		}
	}()
	l.stats.handled.Add(1)
	return j.h(ctx, &Request{Type: j.msg.Type, ID: j.msg.ID, KeyID: j.msg.KeyID, Time: j.msg.Time, Body: j.msg.Body})
}

func asRemote(err error) *RemoteError {
	var re *RemoteError
	if errors.As(err, &re) {
		return re
	}
	return &RemoteError{Code: CodeInternal, Message: err.Error()}
}

// splitRouting splits a ROUTER message into routing frames (up to and
// including the first empty delimiter, or just the identity if there is
// none) and the envelope frames.
func splitRouting(frames [][]byte) (routing, env [][]byte) {
	for i, f := range frames {
		if len(f) == 0 {
			return frames[:i+1], frames[i+1:]
		}
	}
	if len(frames) == 0 {
		return nil, nil
	}
	return frames[:1], frames[1:]
}

// serve is the socket goroutine's loop.
func (l *ReplyLoop) serve(router, back *zmq.Socket, jobs chan<- *replyJob, window *ReplayWindow) error {
	poller := zmq.NewPoller()
	rid := poller.Add(router, zmq.POLLIN)
	poller.Add(back, zmq.POLLIN)
	routerOn, stopping, inflight := true, false, 0
	max := l.cfg.MaxInFlight
	frames := make([][]byte, 0, maxFrames)
	bframes := make([][]byte, 0, maxFrames)
	for {
		if stopping && inflight == 0 {
			return nil
		}
		if want := !stopping && inflight < max; want != routerOn {
			ev := zmq.State(0)
			if want {
				ev = zmq.POLLIN
			}
			if _, err := poller.Update(rid, ev); err != nil {
				return fmt.Errorf("zmqloop: reply loop: update poller: %w", err)
			}
			routerOn = want
		}
		polled, err := poller.Poll(-1)
		if err != nil {
			return fmt.Errorf("zmqloop: reply loop: poll: %w", err)
		}
		for _, p := range polled {
			if p.Socket == back {
				for {
					bf, err := recvFrames(back, zmq.DONTWAIT, bframes)
					if isAgain(err) {
						break
					}
					if err != nil {
						return fmt.Errorf("zmqloop: reply loop: read worker reply: %w", err)
					}
					if len(bf) == 1 && bf[0][0] == 's' {
						stopping = true
						continue
					}
					inflight--
					if err := sendFrames(router, zmq.DONTWAIT, bf[1:]...); err != nil {
						l.log.Debug("zmqloop: reply loop: reply not sent", "err", err)
					}
				}
				continue
			}
			for !stopping && inflight < max {
				var err error
				frames, err = recvFrames(router, zmq.DONTWAIT, frames)
				if isAgain(err) {
					break
				}
				if err != nil && !errors.Is(err, ErrFrames) {
					return fmt.Errorf("zmqloop: reply loop: read request: %w", err)
				}
				l.stats.received.Add(1)
				if err != nil {
					l.reject(err)
					continue
				}
				if j := l.admit(router, frames, window); j != nil {
					jobs <- j // never blocks: cap(jobs) == max > inflight
					inflight++
				}
			}
		}
	}
}

// admit verifies one request; it answers authentic requests it refuses and
// returns the job for requests that go to a handler.
func (l *ReplyLoop) admit(router *zmq.Socket, frames [][]byte, window *ReplayWindow) *replyJob {
	routing, env := splitRouting(frames)
	if len(env) != 3 {
		l.reject(fmt.Errorf("zmqloop: reply loop: request with %d routing and %d envelope frames, want 3 envelope frames: %w", len(routing), len(env), ErrFrames))
		return nil
	}
	j := &replyJob{routing: append([][]byte(nil), routing...)}
	if err := l.cfg.Codec.open(env, &j.msg); err != nil {
		l.reject(err)
		if errors.Is(err, ErrStale) {
			l.replyError(router, j, Errorf(CodeRejected, "%v", err))
		}
		return nil
	}
	if err := window.Admit(&j.msg); err != nil {
		l.reject(err)
		return nil
	}
	h, ok := l.handlers[j.msg.Type]
	if !ok {
		err := Errorf(CodeUnknownType, "no handler for message type %q", j.msg.Type)
		l.reject(err)
		l.replyError(router, j, err)
		return nil
	}
	j.h = h
	return j
}

func (l *ReplyLoop) replyError(router *zmq.Socket, j *replyJob, re *RemoteError) {
	reply := Message{Type: j.msg.Type, ReplyTo: j.msg.ID, Error: re}
	key, payload, mac, bufp, err := l.cfg.Codec.sealInto(&reply)
	if err != nil {
		return
	}
	defer l.cfg.Codec.release(bufp)
	out := append(append(j.routing, key), payload, mac)
	if err := sendFrames(router, zmq.DONTWAIT, out...); err != nil {
		l.log.Debug("zmqloop: reply loop: error reply not sent", "err", err)
	}
}

func (l *ReplyLoop) reject(err error) {
	l.stats.rejected.Add(1)
	l.log.Debug("zmqloop: reply loop: refused message", "err", err)
	if l.cfg.Rejected != nil {
		l.cfg.Rejected(err)
	}
}
