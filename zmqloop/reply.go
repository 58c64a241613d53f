package zmqloop

import (
	"context"
	"encoding/json"
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
	// Data is the request's raw data frame (Message.Data); empty if none.
	// Like Body it points into the loop's receive buffer.
	Data []byte
	// ReplyData, if a ReplyLoop's handler sets it, goes with a successful
	// reply as its data frame (Message.Data), raw; an error reply carries
	// none. A PullLoop or SubLoop ignores it.
	ReplyData []byte
}

// Handler answers one request with a JSON body or an error. It runs on one
// of the loop's worker goroutines, at most MaxInFlight at once; ctx is
// cancelled when the loop stops. A *RemoteError (or an error wrapping one)
// reaches the caller with its code; any other error reaches it with code
// CodeInternal and the error's text. A panic is recovered and reaches the
// caller as code CodePanic. The handler must not keep req after returning:
// req.Body points into its worker's receive buffer (no copy per request),
// so copy it to keep it; returning it as the reply body is fine. The same
// holds for req.Data (and setting req.ReplyData to it).
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
	// SyscallWait is how long an idle loop (no handler running) waits for
	// the next request in a blocking ppoll system call, which wakes
	// faster, before it parks in Go's netpoller (see the package doc,
	// "Sockets and goroutines"). Default DefaultSyscallWait (500µs);
	// negative: never. Linux only.
	SyscallWait time.Duration
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
	Received uint64 // messages read from the socket (each item of a batch counts as one)
	Handled  uint64 // messages given to a handler
	Rejected uint64 // messages refused (bad MAC, replay, unknown type, too large, ...)
	Panics   uint64 // handler panics recovered
	// TooLarge counts the refused messages (also in Rejected) that were
	// over the Codec's MaxSize: read whole, then dropped unread
	// (ErrTooLarge). A peer that sends a single frame over MaxSize is
	// disconnected by libzmq (ZMQ_MAXMSGSIZE) before the loop sees
	// anything, and libzmq reports that as an ordinary disconnect, so
	// such frames are not counted here; see the package doc, "Counters".
	TooLarge uint64
}

type loopCounters struct{ received, handled, rejected, panics, tooLarge atomic.Uint64 }

func (c *loopCounters) snapshot() LoopStats {
	return LoopStats{Received: c.received.Load(), Handled: c.handled.Load(), Rejected: c.rejected.Load(),
		Panics: c.panics.Load(), TooLarge: c.tooLarge.Load()}
}

// count counts one refusal for the reason err.
func (c *loopCounters) count(err error) {
	c.rejected.Add(1)
	if errors.Is(err, ErrTooLarge) {
		c.tooLarge.Add(1)
	}
}

// notARequest is the refusal of an authentic message that carries "re" or
// "error" where a request or one-way message was expected.
func notARequest(loop string, m *Message) error {
	return fmt.Errorf("zmqloop: %s: %q message %q signed with key %q is a reply (it has \"re\" or \"error\"), not a request: %w",
		loop, m.Type, m.ID, m.KeyID, ErrMalformed)
}

// ReplyLoop serves requests on a ROUTER socket: it verifies each request,
// runs its handler on a bounded pool of workers and routes the signed reply
// back to the caller that sent it. Plug Run into daemon as a main loop.
type ReplyLoop struct {
	cfg      ReplyConfig
	log      *slog.Logger
	handlers map[string]Handler
	intern   func([]byte) string // handler names without an allocation
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
	if cfg.SyscallWait == 0 {
		cfg.SyscallWait = DefaultSyscallWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	names := make(map[string]string, len(h))
	for t := range h {
		names[t] = t
	}
	intern := func(b []byte) string {
		if t, ok := names[string(b)]; ok {
			return t
		}
		return string(b)
	}
	return &ReplyLoop{cfg: cfg, log: cfg.Logger, handlers: h, intern: intern, ready: make(chan struct{})}, nil
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
		maxSize: l.cfg.Codec.maxSize, curve: l.cfg.Curve, log: l.log})
	if err != nil {
		return fmt.Errorf("zmqloop: reply loop: %w", err)
	}
	defer closeSocket(router)
	f, rc, err := pollableFD(router)
	if err != nil {
		return fmt.Errorf("zmqloop: reply loop: %w", err)
	}
	defer f.Close()
	pw, err := newPpollWaiter(rc, l.cfg.SyscallWait)
	if err != nil {
		return fmt.Errorf("zmqloop: reply loop: %w", err)
	}
	defer pw.close()

	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &replyServer{l: l, router: router, f: f, rc: rc, ppoll: pw, window: window, io: newMsgIO(l.cfg.Codec.maxSize), cancel: cancel}
	// Cancellation wakes the worker waiting in the netpoller; the others
	// see the expired deadline when they get to wait.
	stop := context.AfterFunc(hctx, srv.stop)
	defer stop()
	l.mu.Lock()
	l.endpoints = bound
	l.mu.Unlock()
	var wg sync.WaitGroup
	for i := 0; i < l.cfg.MaxInFlight; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.worker(hctx)
		}()
	}
	close(l.ready)
	wg.Wait()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.err
}

// replyServer is one running ReplyLoop. MaxInFlight workers share the
// ROUTER socket: each takes one request, verifies it, runs the handler on
// its own goroutine, and sends the sealed reply itself; a worker with
// nothing to do waits for the socket's ZMQ_FD in Go's netpoller (one at a
// time: the others queue on the file's read lock). No request or reply
// crosses a goroutine on the way, which on a 2-vCPU VM saved a wake-up of
// 5-20µs each.
type replyServer struct {
	l      *ReplyLoop
	router *zmq.Socket
	f      *os.File
	rc     syscall.RawConn
	ppoll  *ppollWaiter // the waiting worker's first, short phase
	// serving counts workers between taking a request and sending its
	// reply; only an idle loop waits in ppoll, as their handlers need
	// the P.
	serving atomic.Int32
	window  *ReplayWindow
	cancel  context.CancelFunc

	// mu serialises every use of router (libzmq sockets may be used from
	// any thread with a full memory barrier between uses) and guards the
	// fields below.
	mu          sync.Mutex
	io          *msgIO
	parked      bool // a worker waits in the netpoller
	inPpoll     bool // a worker waits in ppoll (wake that instead)
	interrupted bool // the read deadline is in the past to wake it
	stopping    bool // ... for good: the loop stops
	err         error
}

// stop wakes every worker for good: the one in the netpoller at once, the
// others when they get to wait.
func (s *replyServer) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping = true
	_ = s.f.SetReadDeadline(time.Unix(1, 0))
	if s.inPpoll {
		s.ppoll.wake()
	}
}

// interrupt wakes the worker waiting in the netpoller (mu held).
func (s *replyServer) interrupt() {
	s.interrupted = true
	_ = s.f.SetReadDeadline(time.Unix(1, 0))
}

// wakeIfPending wakes the waiting worker if a request is there (mu held).
func (s *replyServer) wakeIfPending() {
	if s.interrupted {
		return
	}
	if ev, err := s.router.GetEvents(); err != nil || ev&zmq.POLLIN != 0 {
		if s.inPpoll {
			s.ppoll.wake()
		} else {
			s.interrupt()
		}
	}
}

// beginPpoll reports whether the waiting worker may wait in ppoll, and
// marks it inPpoll. It may not if it was interrupted or the loop stops:
// it then parks in the netpoller, which returns at once.
func (s *replyServer) beginPpoll() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.interrupted || s.stopping {
		return false
	}
	s.parked, s.inPpoll = false, true
	return true
}

func (s *replyServer) endPpoll() {
	s.mu.Lock()
	s.inPpoll = false
	s.mu.Unlock()
}

// rearm clears an interrupt before a worker waits, unless the loop stops,
// and reports whether it did. A worker parked at the time may then miss
// the interrupt, so the one clearing it must take a request before it
// waits: none is left unseen.
func (s *replyServer) rearm() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.interrupted && !s.stopping {
		s.interrupted = false
		_ = s.f.SetReadDeadline(time.Time{})
		return true
	}
	return false
}

// worker is one of the loop's MaxInFlight goroutines.
func (s *replyServer) worker(ctx context.Context) {
	w := &replyWorker{}
	for ctx.Err() == nil {
		// Take a request, or wait for the socket. Only the worker holding
		// the file's read lock takes requests, so when it has one and
		// returns, the next worker in line takes the next or waits. An
		// interrupt (see reply) or cancellation ends the wait early.
		if s.rearm() && s.take(w, false) {
			// This worker cleared an interrupt, which the worker it was
			// for may now miss: so it takes the request itself.
			s.serve(ctx, w)
			continue
		}
		got := false
		ppollUntil := s.ppoll.until()
		err := s.rc.Read(func(uintptr) bool {
			for {
				got = s.take(w, true)
				if got || ctx.Err() != nil {
					return true
				}
				d := time.Until(ppollUntil)
				if d <= 0 || s.serving.Load() > 0 || !s.beginPpoll() {
					return false
				}
				ok := s.ppoll.wait(d)
				s.endPpoll()
				if !ok {
					return false
				}
			}
		})
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			s.fail(fmt.Errorf("zmqloop: reply loop: wait for socket: %w", err))
			return
		}
		if got {
			s.serve(ctx, w)
		}
	}
}

// replyWorker is one worker's request, copied out of the shared receive
// buffer.
type replyWorker struct {
	buf     []byte
	routing [][]byte
	env     [][]byte
	frames  int
	msg     Message
	req     Request
}

// take receives one request without waiting and copies it into w (it
// reports whether it got one). waiter says the caller holds the file's
// read lock: it is the one worker that waits in the netpoller when there
// is nothing to take. Any other caller that takes a request wakes the
// waiter if more are there, since its receive may have consumed the
// ZMQ_FD notification.
func (s *replyServer) take(w *replyWorker, waiter bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if waiter {
		s.parked = false
	}
	if s.err != nil {
		return false
	}
	frames, err := s.io.recv(s.router, zmq.DONTWAIT)
	if isAgain(err) {
		s.parked = waiter
		return false
	}
	if err != nil && !errors.Is(err, ErrFrames) && !errors.Is(err, ErrTooLarge) {
		s.failLocked(fmt.Errorf("zmqloop: reply loop: read request: %w", err))
		return false
	}
	s.l.stats.received.Add(1)
	s.serving.Add(1)
	if err != nil {
		s.l.reject(err)
		w.frames = -1
	} else {
		w.copyIn(frames)
	}
	if !waiter && (s.parked || s.inPpoll) {
		s.wakeIfPending()
	}
	return true
}

func (w *replyWorker) copyIn(frames [][]byte) {
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	if cap(w.buf) < n {
		w.buf = make([]byte, 0, n)
	}
	b := w.buf[:0]
	routing, env := splitRouting(frames)
	w.routing, w.env = w.routing[:0], w.env[:0]
	for _, f := range routing {
		o := len(b)
		b = append(b, f...)
		w.routing = append(w.routing, b[o:len(b):len(b)])
	}
	for _, f := range env {
		o := len(b)
		b = append(b, f...)
		w.env = append(w.env, b[o:len(b):len(b)])
	}
	w.buf = b
	w.frames = len(frames)
}

// fail records the loop's fatal error and stops it.
func (s *replyServer) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failLocked(err)
}

func (s *replyServer) failLocked(err error) {
	if s.err == nil {
		s.err = err
	}
	s.cancel()
}

// serve verifies w's request, runs its handler and sends the reply.
// The worker took it in take, which counted it in serving.
func (s *replyServer) serve(ctx context.Context, w *replyWorker) {
	defer s.serving.Add(-1)
	l := s.l
	if w.frames < 0 {
		return
	}
	if len(w.env) != 3 && len(w.env) != 4 {
		l.reject(fmt.Errorf("zmqloop: reply loop: request with %d routing and %d envelope frames, want 3 or 4 envelope frames: %w", len(w.routing), len(w.env), ErrFrames))
		return
	}
	now := l.cfg.Codec.now()
	w.msg = Message{}
	err := l.cfg.Codec.openWith(w.env, &w.msg, now, l.intern, true)
	if err != nil && !errors.Is(err, ErrStale) {
		l.reject(err) // not authentic, or not readable: no answer
		return
	}
	// From here the message is authentic (on ErrStale openWith filled
	// w.msg). A reply is never a request: one sent here is a reply
	// reflected back (signed by a ring key, so it would otherwise pass),
	// and answering it could bounce error replies between two peers.
	if w.msg.ReplyTo != "" || w.msg.Error != nil {
		l.reject(notARequest("reply loop", &w.msg))
		return
	}
	if err == nil {
		err = s.window.admitAt(&w.msg, now)
	}
	if err != nil {
		// Stale or replayed: authentic, so the caller is told why. The
		// answer goes only back over the connection the copy came in on,
		// is a few hundred bytes at most whatever the request was (no
		// body), and is itself a reply, which no loop answers: see the
		// package doc, "Refusals".
		l.reject(err)
		s.reply(w, nil, nil, Errorf(CodeRejected, "%v", err))
		return
	}
	h, ok := l.handlers[w.msg.Type]
	if !ok {
		err := Errorf(CodeUnknownType, "no handler for message type %q", w.msg.Type)
		l.reject(err)
		s.reply(w, nil, nil, err)
		return
	}
	w.req = Request{Type: w.msg.Type, ID: w.msg.ID, KeyID: w.msg.KeyID, Time: w.msg.Time, Body: w.msg.Body, Data: w.msg.Data}
	body, herr := l.call(ctx, h, &w.req)
	var re *RemoteError
	if herr != nil {
		re = asRemote(herr)
	}
	s.reply(w, body, w.req.ReplyData, re)
	w.req = Request{}
}

// reply seals and sends the answer to w's request.
func (s *replyServer) reply(w *replyWorker, body json.RawMessage, data []byte, re *RemoteError) {
	l := s.l
	msg := Message{Type: w.msg.Type, ReplyTo: w.msg.ID, Body: body, Data: data, Error: re}
	if re != nil {
		msg.Body, msg.Data = nil, nil
	}
	key, payload, mac, bufp, err := l.cfg.Codec.sealInto(&msg)
	if err != nil {
		l.log.Warn("zmqloop: reply loop: cannot seal reply", "type", w.msg.Type, "id", w.msg.ID, "err", err)
		msg = Message{Type: w.msg.Type, ReplyTo: w.msg.ID, Error: Errorf(CodeInternal, "reply could not be sealed: %v", err)}
		if key, payload, mac, bufp, err = l.cfg.Codec.sealInto(&msg); err != nil {
			return
		}
	}
	frames := append(w.routing, key, payload, mac)
	if len(msg.Data) > 0 {
		frames = append(frames, msg.Data)
	}
	s.mu.Lock()
	if err := s.io.send(s.router, zmq.DONTWAIT, frames...); err != nil {
		l.log.Debug("zmqloop: reply loop: reply not sent", "err", err)
	}
	if s.parked || s.inPpoll {
		// The send may have consumed the ZMQ_FD notification of a request
		// that is already there; the worker waiting would not see it.
		s.wakeIfPending()
	}
	s.mu.Unlock()
	w.routing = frames[:len(w.routing)]
	l.cfg.Codec.release(bufp)
}

// call runs the handler, turning a panic into an error.
func (l *ReplyLoop) call(ctx context.Context, h Handler, req *Request) (body json.RawMessage, err error) {
	defer func() {
		if r := recover(); r != nil {
			l.stats.panics.Add(1)
			l.log.Error("zmqloop: handler panicked", "type", req.Type, "id", req.ID, "panic", r, "stack", string(debug.Stack()))
			body, err = nil, Errorf(CodePanic, "handler for %q panicked: %v", req.Type, r)
		}
	}()
	l.stats.handled.Add(1)
	return h(ctx, req)
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

func (l *ReplyLoop) reject(err error) {
	l.stats.count(err)
	l.log.Debug("zmqloop: reply loop: refused message", "err", err)
	if l.cfg.Rejected != nil {
		l.cfg.Rejected(err)
	}
}
