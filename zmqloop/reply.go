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
// returns an error if the socket cannot be set up or fails.
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
	fw, err := newFDWaiter(router)
	if err != nil {
		return fmt.Errorf("zmqloop: reply loop: %w", err)
	}
	defer fw.close()

	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	l.mu.Lock()
	l.endpoints = bound
	l.mu.Unlock()
	close(l.ready)
	err = l.serve(ctx, hctx, router, fw, window, &wg)
	cancel()
	wg.Wait()
	return err
}

// reply is a sealed reply on its way from a handler goroutine to the
// socket goroutine.
type reply struct {
	frames [][]byte
	bufp   *[]byte
}

// serve is the socket goroutine's loop. It waits in Go's netpoller for
// the router's ZMQ_FD; a finished handler or ctx cancellation interrupts
// the wait. Handlers run on their own goroutines (at most MaxInFlight) and
// hand back sealed replies on a channel.
func (l *ReplyLoop) serve(ctx, hctx context.Context, router *zmq.Socket, fw *fdWaiter,
	window *ReplayWindow, wg *sync.WaitGroup) error {
	max := l.cfg.MaxInFlight
	out := &replyQueue{c: make(chan reply, max), fw: fw}
	stop := context.AfterFunc(ctx, fw.interrupt)
	defer stop()
	inflight, stopping := 0, false
	io := newMsgIO(l.cfg.Codec.maxSize)
	rd := newBatchReader(l.cfg.Codec.maxSize)
	jobs := make([]*replyJob, 0, batchMsgs)
	for {
		fw.rearm()
		if ctx.Err() != nil {
			stopping = true
		}
		// Send finished replies.
	replies:
		for {
			select {
			case r := <-out.c:
				inflight--
				if err := io.send(router, zmq.DONTWAIT, r.frames...); err != nil {
					l.log.Debug("zmqloop: reply loop: reply not sent", "err", err)
				}
				l.cfg.Codec.release(r.bufp)
			default:
				break replies
			}
		}
		if stopping && inflight == 0 {
			return nil
		}
		// Read requests while there is room. Sends may have made the socket
		// readable without a new edge, so this runs after every wake-up;
		// the EAGAIN that ends it also consumes libzmq's pending commands.
		drained := false
		for !stopping && inflight < max {
			msgs, err := rd.read(router, max-inflight, maxFrames)
			if isAgain(err) {
				drained = true
				break
			}
			if err != nil {
				return fmt.Errorf("zmqloop: reply loop: read request: %w", err)
			}
			now := l.cfg.Codec.now()
			for _, rm := range msgs {
				l.stats.received.Add(1)
				if rm.err != nil {
					l.reject(rm.err)
					continue
				}
				if j := l.admit(router, io, rm.frames, window, now); j != nil {
					inflight++
					jobs = append(jobs, j)
				}
			}
		}
		if !drained {
			// Not reading (full or stopping): consume libzmq's commands so
			// a pending edge does not make the wait below return at once.
			if _, err := router.GetEvents(); err != nil {
				return fmt.Errorf("zmqloop: reply loop: socket events: %w", err)
			}
		}
		// Start the handlers last, right before this goroutine parks, so
		// the newest one runs on this P at once instead of waiting for
		// another thread to wake and steal it.
		for i, j := range jobs {
			wg.Add(1)
			go l.work(hctx, j, out, wg)
			jobs[i] = nil
		}
		jobs = jobs[:0]
		out.waiting.Store(true)
		if len(out.c) == 0 && ctx.Err() == nil {
			if err := fw.wait(); err != nil {
				return fmt.Errorf("zmqloop: reply loop: wait for socket: %w", err)
			}
		}
		out.waiting.Store(false)
	}
}

// replyQueue carries sealed replies from handler goroutines to the socket
// goroutine and wakes it if it is waiting.
type replyQueue struct {
	c       chan reply // capacity MaxInFlight: never blocks
	fw      *fdWaiter
	waiting atomic.Bool
}

func (q *replyQueue) put(r reply) {
	q.c <- r
	if q.waiting.Load() {
		q.fw.interrupt()
	}
}

// work runs one handler on its own goroutine and hands the sealed reply
// back to the socket goroutine.
func (l *ReplyLoop) work(ctx context.Context, j *replyJob, out *replyQueue, wg *sync.WaitGroup) {
	defer wg.Done()
	body, herr := l.call(ctx, j)
	msg := Message{Type: j.msg.Type, ReplyTo: j.msg.ID}
	if herr != nil {
		msg.Error = asRemote(herr)
	} else {
		msg.Body = body
	}
	key, payload, mac, bufp, err := l.cfg.Codec.sealInto(&msg)
	if err != nil {
		l.log.Warn("zmqloop: reply loop: cannot seal reply", "type", j.msg.Type, "id", j.msg.ID, "err", err)
		msg = Message{Type: j.msg.Type, ReplyTo: j.msg.ID, Error: Errorf(CodeInternal, "reply could not be sealed: %v", err)}
		key, payload, mac, bufp, _ = l.cfg.Codec.sealInto(&msg)
	}
	out.put(reply{frames: append(j.routing, key, payload, mac), bufp: bufp})
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

// admit verifies one request; it answers authentic requests it refuses and
// returns the job for requests that go to a handler.
func (l *ReplyLoop) admit(router *zmq.Socket, io *msgIO, frames [][]byte, window *ReplayWindow, now time.Time) *replyJob {
	routing, env := splitRouting(frames)
	if len(env) != 3 {
		l.reject(fmt.Errorf("zmqloop: reply loop: request with %d routing and %d envelope frames, want 3 envelope frames: %w", len(routing), len(env), ErrFrames))
		return nil
	}
	// frames alias io's buffer: keep a copy of the routing frames.
	j := &replyJob{routing: make([][]byte, len(routing))}
	for i, f := range routing {
		j.routing[i] = append([]byte(nil), f...)
	}
	if err := l.cfg.Codec.openAt(env, &j.msg, now); err != nil {
		l.reject(err)
		if errors.Is(err, ErrStale) {
			l.replyError(router, io, j, Errorf(CodeRejected, "%v", err))
		}
		return nil
	}
	if err := window.admitAt(&j.msg, now); err != nil {
		l.reject(err)
		return nil
	}
	h, ok := l.handlers[j.msg.Type]
	if !ok {
		err := Errorf(CodeUnknownType, "no handler for message type %q", j.msg.Type)
		l.reject(err)
		l.replyError(router, io, j, err)
		return nil
	}
	j.h = h
	return j
}

func (l *ReplyLoop) replyError(router *zmq.Socket, io *msgIO, j *replyJob, re *RemoteError) {
	reply := Message{Type: j.msg.Type, ReplyTo: j.msg.ID, Error: re}
	key, payload, mac, bufp, err := l.cfg.Codec.sealInto(&reply)
	if err != nil {
		return
	}
	defer l.cfg.Codec.release(bufp)
	out := append(append(j.routing, key), payload, mac)
	if err := io.send(router, zmq.DONTWAIT, out...); err != nil {
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
