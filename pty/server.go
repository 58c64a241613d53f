package pty

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/paaskit/paaskit/zmqloop"
)

// Server defaults.
const (
	DefaultStreamBind    = "tcp://127.0.0.1:*"
	DefaultGrace         = time.Minute
	DefaultAttachTimeout = 10 * time.Second
	DefaultBuffer        = 1 << 20
	DefaultMaxSessions   = 256
	DefaultRetain        = 10 * time.Minute
	// chunkSize bounds the output bytes of one stream message. They
	// travel raw in the message's data frame (zmqloop's Message.Data), so
	// the sealed payload stays a few dozen bytes whatever the chunk.
	chunkSize = 256 << 10
)

// Error codes of the session protocol (zmqloop error replies).
const (
	CodeNotFound    = "not_found"    // no such session for this caller (another caller's looks the same)
	CodeForbidden   = "forbidden"    // Authorize refused the start
	CodeBadRequest  = "bad_request"  // a malformed or out-of-range field
	CodeExited      = "exited"       // input, resize or signal after the child exited
	CodeDetached    = "detached"     // the attach id is not the session's current attachment
	CodeBadOffset   = "bad_offset"   // an ack or resume offset beyond the output
	CodeTooMany     = "too_many"     // MaxSessions sessions are running
	CodeStartFailed = "start_failed" // the command could not be built or started
)

// Message types of the session protocol.
const (
	TypeStart  = "pty.start"
	TypeAttach = "pty.attach"
	TypeInput  = "pty.input"
	TypeAck    = "pty.ack"
	TypeResize = "pty.resize"
	TypeSignal = "pty.signal"
	TypeDetach = "pty.detach"
	TypeClose  = "pty.close"
	TypeStatus = "pty.status"
	TypeList   = "pty.list"
	TypeOutput = "pty.output" // stream
	TypeExit   = "pty.exit"   // stream
)

// StartRequest is the body of pty.start.
type StartRequest struct {
	// App names what to run the command for (runnerd: the app whose
	// sandbox it runs in). Its meaning is the Command hook's.
	App string `json:"app"`
	// Argv is the command and its arguments; required.
	Argv []string `json:"argv"`
	// Rows and Cols are the initial window size; 0 and 0 mean 24x80.
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	// Detached starts the command with no client attached: its output
	// goes to the server's Log sink, and past Buffer the oldest output is
	// dropped from memory rather than pausing the child. It may be
	// attached later and is never hung up for want of a client.
	Detached bool `json:"detached,omitempty"`
}

// SessionInfo describes a session (the body of a pty.status reply, and
// each element of pty.list's).
type SessionInfo struct {
	ID       string    `json:"session"`
	App      string    `json:"app"`
	Argv     []string  `json:"argv"`
	Detached bool      `json:"detached"`
	Attached bool      `json:"attached"`
	Pid      int       `json:"pid"`
	Started  time.Time `json:"started"`
	Exited   bool      `json:"exited"`
	Code     int       `json:"code"`
	Signal   string    `json:"signal,omitempty"`
	// Output is how many bytes the command has written; Buffered is the
	// offset of the oldest output still held.
	Output   int64 `json:"output"`
	Buffered int64 `json:"buffered"`
}

// ServerConfig configures a Server. Zero values are the documented
// defaults.
type ServerConfig struct {
	// Bind lists the control socket's (ROUTER) endpoints. Required.
	Bind []string
	// StreamBind is where each attachment's PUSH stream binds; a wildcard
	// port picks a free one. A client connects to the bound endpoint,
	// using its control endpoint's host if the host is a wildcard.
	// Default DefaultStreamBind ("tcp://127.0.0.1:*").
	StreamBind string
	// Codec signs and verifies control and stream messages. Required.
	Codec *zmqloop.Codec
	// Command builds the command for a start request from caller (the key
	// id that signed it). Required. runnerd wires runner.Runner.Command.
	// It runs on a control worker goroutine; its error refuses the start
	// (a *zmqloop.RemoteError keeps its code).
	Command func(ctx context.Context, caller string, req StartRequest) (*exec.Cmd, error)
	// KeepAlive, if set, is called before each command starts and the
	// release func it returns after the command exits (runner.Runner.Attach
	// fits: an app is not reaped while one of its commands runs).
	KeepAlive func(caller string, req StartRequest) (release func(), err error)
	// Authorize, if set, decides whether caller may start req; a non-nil
	// error refuses it with CodeForbidden. Nil lets every key holder start
	// sessions. Either way a session is only ever seen, attached,
	// signalled or closed by the caller that started it.
	Authorize func(caller string, req StartRequest) error
	// Log, if set, is called when a detached session starts and gets all
	// its output; the server closes it when the session ends. Nil keeps a
	// detached session's output only in its Buffer.
	Log func(info SessionInfo) (io.WriteCloser, error)
	// Grace is how long a session whose client vanished (or detached)
	// keeps running, its output buffered, waiting for a reattach; then the
	// child gets SIGHUP. Default DefaultGrace (1m).
	Grace time.Duration
	// AttachTimeout is how long an attached client may stay silent (no
	// request: clients ack at least every AttachTimeout/4) before it
	// counts as vanished. Default DefaultAttachTimeout (10s).
	AttachTimeout time.Duration
	// Buffer bounds each session's output held for its client (sent but
	// not acknowledged, or not yet sent), in bytes. When it is full the
	// server stops reading the terminal, so the child blocks in write:
	// nothing is dropped. Default DefaultBuffer (1 MiB).
	Buffer int
	// MaxSessions bounds the sessions running at once. Default
	// DefaultMaxSessions (256).
	MaxSessions int
	// Retain is how long an exited session stays queryable and
	// attachable. Default DefaultRetain (10m). A client's Run starts and
	// then attaches: a command that exits at once must still be there
	// for the attach, so Retain should be well above a round trip.
	Retain time.Duration
	// KillAfter is the time between SIGHUP and SIGKILL when a session is
	// hung up. Default DefaultKillAfter (5s).
	KillAfter time.Duration
	// MaxInFlight bounds control handlers running at once; see
	// zmqloop.ReplyConfig.
	MaxInFlight int
	// Curve, if set, encrypts the control and stream sockets.
	Curve *zmqloop.Curve
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for grace periods and timeouts. Default time.Now.
	Now func() time.Time
}

// Server starts sessions for authorised callers and streams them over
// zmqloop: control requests on a ReplyLoop, each attachment's output on a
// PUSH socket of its own (see the package doc, "Session protocol"). Run it
// as a daemon main loop.
type Server struct {
	cfg  ServerConfig
	log  *slog.Logger
	loop *zmqloop.ReplyLoop

	mu       sync.Mutex
	sessions map[string]*remote
	running  int
	stopping bool
	wg       sync.WaitGroup
	ready    chan struct{}
	// attachPinned, when set (by tests), runs in attach between the
	// session's lookup and its binding to the new attachment.
	attachPinned func()
}

// remote is one session as the server keeps it. Its fields below mu are
// guarded by mu; cond signals every change of the buffer, the attachment
// and the end of output.
type remote struct {
	id, owner string
	req       StartRequest
	started   time.Time
	s         *Session
	log       io.WriteCloser

	mu      sync.Mutex
	cond    *sync.Cond
	buf     []byte // output from offset base on; a window of store
	store   []byte // the array buf lives in (appendLocked)
	base    int64
	eof     bool // the reader has seen all output
	exited  bool // and the status is in
	status  ExitStatus
	exitAt  time.Time
	att     *attachment
	graceAt time.Time // zero, or when the child gets SIGHUP if no client attaches
	hungUp  bool
	// forgotten: the sweep removed the session from the server's table.
	// An attach that looked it up just before must not bind to it: no
	// sweep or shutdown would ever end that attachment. attaching counts
	// the attaches between their lookup and their end, which the sweep
	// does not forget under (a Run's attach right after a short command
	// exits finds its session even with a short Retain).
	forgotten bool
	attaching int
}

type attachment struct {
	id       string
	push     *zmqloop.Pusher
	sent     int64
	lastSeen time.Time
	closed   bool
	// ctx is the streamer's, for Push's wait for queue space, kept here so
	// that detachLocked can end it (cancel) along with the attachment.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // the streamer has returned
}

// NewServer validates cfg and returns a Server; Run starts it.
func NewServer(cfg ServerConfig) (*Server, error) {
	switch {
	case cfg.Codec == nil:
		return nil, errors.New("pty: new server: Codec is required")
	case cfg.Command == nil:
		return nil, errors.New("pty: new server: Command is required")
	case len(cfg.Bind) == 0:
		return nil, errors.New("pty: new server: at least one Bind endpoint is required")
	case cfg.Grace < 0 || cfg.AttachTimeout < 0 || cfg.Buffer < 0 || cfg.MaxSessions < 0 || cfg.Retain < 0 || cfg.KillAfter < 0:
		return nil, fmt.Errorf("pty: new server: negative Grace %v, AttachTimeout %v, Buffer %d, MaxSessions %d, Retain %v or KillAfter %v",
			cfg.Grace, cfg.AttachTimeout, cfg.Buffer, cfg.MaxSessions, cfg.Retain, cfg.KillAfter)
	}
	if cfg.StreamBind == "" {
		cfg.StreamBind = DefaultStreamBind
	}
	if cfg.Grace == 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.AttachTimeout == 0 {
		cfg.AttachTimeout = DefaultAttachTimeout
	}
	if cfg.Buffer == 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.Buffer < 4096 {
		return nil, fmt.Errorf("pty: new server: Buffer %d is below 4096 bytes", cfg.Buffer)
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.Retain == 0 {
		cfg.Retain = DefaultRetain
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger, sessions: map[string]*remote{}, ready: make(chan struct{})}
	loop, err := zmqloop.NewReplyLoop(zmqloop.ReplyConfig{
		Bind: cfg.Bind, Codec: cfg.Codec, Curve: cfg.Curve, Logger: cfg.Logger, MaxInFlight: cfg.MaxInFlight,
		Handlers: map[string]zmqloop.Handler{
			TypeStart:  handle(s.start),
			TypeAttach: handle(s.attach),
			TypeInput:  s.handleInput,
			TypeAck:    handle(s.ack),
			TypeResize: handle(s.resize),
			TypeSignal: handle(s.signal),
			TypeDetach: handle(s.detach),
			TypeClose:  handle(s.close),
			TypeStatus: handle(s.statusOf),
			TypeList:   handle(s.list),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("pty: new server: %w", err)
	}
	s.loop = loop
	return s, nil
}

// handle adapts a typed handler that needs the caller's key id.
func handle[Req, Resp any](fn func(ctx context.Context, caller string, req Req) (Resp, error)) zmqloop.Handler {
	return func(ctx context.Context, r *zmqloop.Request) (json.RawMessage, error) {
		var in Req
		if len(r.Body) > 0 {
			if err := json.Unmarshal(r.Body, &in); err != nil {
				return nil, zmqloop.Errorf(CodeBadRequest, "%s body: %v", r.Type, err)
			}
		}
		out, err := fn(ctx, r.KeyID, in)
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	}
}

// Ready is closed once the control socket is bound.
func (s *Server) Ready() <-chan struct{} { return s.loop.Ready() }

// Endpoints returns the control socket's bound endpoints (wildcard ports
// resolved); empty before Ready.
func (s *Server) Endpoints() []string { return s.loop.Endpoints() }

// Run serves until ctx is cancelled, then hangs up every session, waits for
// their children and returns once every socket and goroutine it started is
// gone.
func (s *Server) Run(ctx context.Context) error {
	loopCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.loop.Run(loopCtx) }()
	tick := time.NewTicker(min(s.cfg.AttachTimeout/4, s.cfg.Grace/4, time.Second))
	defer tick.Stop()
	var err error
loop:
	for {
		select {
		case <-tick.C:
			s.sweep()
		case <-ctx.Done():
			cancel()
			err = <-errc
			break loop
		case err = <-errc:
			break loop
		}
	}
	s.mu.Lock()
	s.stopping = true
	all := make([]*remote, 0, len(s.sessions))
	for _, r := range s.sessions {
		all = append(all, r)
	}
	s.mu.Unlock()
	for _, r := range all {
		r.mu.Lock()
		a := r.detachLocked()
		r.mu.Unlock()
		a.stop()
	}
	for _, r := range all {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			r.hangup(s.cfg.KillAfter)
		}()
	}
	s.wg.Wait()
	if err != nil {
		return fmt.Errorf("pty: server: %w", err)
	}
	return nil
}

// sweep expires silent attachments, hangs up sessions whose grace ran out
// and forgets exited sessions after Retain.
func (s *Server) sweep() {
	now := s.cfg.Now()
	s.mu.Lock()
	all := make([]*remote, 0, len(s.sessions))
	for _, r := range s.sessions {
		all = append(all, r)
	}
	s.mu.Unlock()
	for _, r := range all {
		var stop *attachment
		hang, forget := false, false
		r.mu.Lock()
		if a := r.att; a != nil && now.Sub(a.lastSeen) > s.cfg.AttachTimeout {
			s.log.Info("pty: client vanished; session waits for a reattach", "session", r.id, "grace", s.cfg.Grace)
			stop = r.detachLocked()
			if !r.req.Detached {
				r.graceAt = now.Add(s.cfg.Grace)
			}
		}
		if r.att == nil && !r.graceAt.IsZero() && now.After(r.graceAt) && !r.exited && !r.hungUp {
			hang = true
			r.hungUp = true
		}
		if r.exited && r.att == nil && now.Sub(r.exitAt) > s.cfg.Retain {
			forget = true
		}
		r.mu.Unlock()
		stop.stop()
		if hang {
			s.log.Info("pty: grace period over; hanging up", "session", r.id)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				r.hangup(s.cfg.KillAfter)
			}()
		}
		if forget {
			// Judged again under both locks: an attach may have looked
			// the session up meanwhile.
			s.mu.Lock()
			r.mu.Lock()
			if r.att == nil && r.attaching == 0 {
				r.forgotten = true
				delete(s.sessions, r.id)
			}
			r.mu.Unlock()
			s.mu.Unlock()
		}
	}
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// lookup returns caller's session id. Another caller's session is
// reported exactly like a missing one.
func (s *Server) lookup(caller, id string) (*remote, error) {
	s.mu.Lock()
	r := s.sessions[id]
	s.mu.Unlock()
	if r == nil || r.owner != caller {
		return nil, zmqloop.Errorf(CodeNotFound, "no session %q", id)
	}
	return r, nil
}

func (s *Server) start(ctx context.Context, caller string, req StartRequest) (SessionInfo, error) {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return SessionInfo{}, zmqloop.Errorf(CodeBadRequest, "argv is empty")
	}
	size := WindowSize{Rows: req.Rows, Cols: req.Cols}
	if size == (WindowSize{}) {
		size = WindowSize{Rows: DefaultRows, Cols: DefaultCols}
	}
	if err := size.Validate(); err != nil {
		return SessionInfo{}, zmqloop.Errorf(CodeBadRequest, "%v", err)
	}
	if s.cfg.Authorize != nil {
		if err := s.cfg.Authorize(caller, req); err != nil {
			return SessionInfo{}, zmqloop.Errorf(CodeForbidden, "%s may not run %q for %q: %v", caller, req.Argv[0], req.App, err)
		}
	}
	s.mu.Lock()
	if s.stopping || s.running >= s.cfg.MaxSessions {
		s.mu.Unlock()
		return SessionInfo{}, zmqloop.Errorf(CodeTooMany, "%d sessions are running, the most this server allows", s.cfg.MaxSessions)
	}
	s.running++
	s.mu.Unlock()
	started := false
	defer func() {
		if !started {
			s.mu.Lock()
			s.running--
			s.mu.Unlock()
		}
	}()
	cmd, err := s.cfg.Command(ctx, caller, req)
	if err != nil {
		var re *zmqloop.RemoteError
		if errors.As(err, &re) {
			return SessionInfo{}, err
		}
		return SessionInfo{}, zmqloop.Errorf(CodeStartFailed, "%v", err)
	}
	pcfg := Config{Size: size, KillAfter: s.cfg.KillAfter}
	if s.cfg.KeepAlive != nil {
		pcfg.KeepAlive = func() (func(), error) { return s.cfg.KeepAlive(caller, req) }
	}
	r := &remote{id: newID(), owner: caller, req: req, started: s.cfg.Now()}
	r.cond = sync.NewCond(&r.mu)
	if req.Detached && s.cfg.Log != nil {
		if r.log, err = s.cfg.Log(r.info()); err != nil {
			return SessionInfo{}, zmqloop.Errorf(CodeStartFailed, "log sink: %v", err)
		}
	}
	if r.s, err = Start(cmd, pcfg); err != nil {
		if r.log != nil {
			_ = r.log.Close()
		}
		return SessionInfo{}, zmqloop.Errorf(CodeStartFailed, "%v", err)
	}
	started = true
	if !req.Detached {
		// The client has until the grace period ends to attach.
		r.graceAt = s.cfg.Now().Add(s.cfg.Grace)
	}
	info := r.info()
	s.mu.Lock()
	s.sessions[r.id] = r
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.pump(r)
	}()
	s.log.Info("pty: session started", "session", r.id, "caller", caller, "app", req.App, "argv0", req.Argv[0], "pid", r.s.Pid(), "detached", req.Detached)
	return info, nil
}

// pump reads the terminal into the session's buffer while there is room
// (the flow control: a full buffer leaves the child blocked in write) and
// records the exit status after the last byte.
func (s *Server) pump(r *remote) {
	tmp := make([]byte, 64<<10)
	for {
		r.mu.Lock()
		for len(r.buf) >= s.cfg.Buffer && !r.hungUp {
			if r.req.Detached && r.att == nil {
				r.dropLocked(int64(len(r.buf) - s.cfg.Buffer + len(tmp)))
				break
			}
			r.cond.Wait()
		}
		room := min(s.cfg.Buffer-len(r.buf), len(tmp))
		if room <= 0 {
			room = len(tmp)
		}
		r.mu.Unlock()
		n, err := r.s.Read(tmp[:room])
		for n > 0 && n < room {
			k := r.s.readMore(tmp[n:room])
			if k <= 0 {
				break
			}
			n += k
		}
		if n > 0 {
			if r.log != nil {
				if _, werr := r.log.Write(tmp[:n]); werr != nil {
					s.log.Warn("pty: detached session's log sink failed", "session", r.id, "err", werr)
				}
			}
			r.mu.Lock()
			if !r.hungUp { // after a hang-up nobody will take it: keep the bound
				r.appendLocked(tmp[:n], s.cfg.Buffer+len(tmp))
				r.cond.Broadcast()
			}
			r.mu.Unlock()
		}
		if err != nil {
			break
		}
	}
	st, _ := r.s.Wait(context.Background())
	_ = r.s.Close(context.Background())
	if r.log != nil {
		_ = r.log.Close()
	}
	s.mu.Lock()
	s.running--
	s.mu.Unlock()
	r.mu.Lock()
	r.eof, r.exited, r.status, r.exitAt = true, true, st, s.cfg.Now()
	r.cond.Broadcast()
	r.mu.Unlock()
	s.log.Info("pty: session ended", "session", r.id, "status", st.String())
}

// appendLocked appends p to the buffered output. Dropping output only
// moves the buffer's start (see dropLocked); the bytes are moved back to
// the front of the array here, when the end runs out of room, which costs
// one copy of what is held per array's worth of output rather than one per
// ack. size is the array's size (the buffer bound plus a read).
func (r *remote) appendLocked(p []byte, size int) {
	if cap(r.buf)-len(r.buf) < len(p) {
		if cap(r.store) < len(r.buf)+len(p) {
			r.store = make([]byte, 0, max(size, len(r.buf)+len(p)))
		}
		r.buf = append(r.store[:0], r.buf...) // copy handles the overlap
	}
	r.buf = append(r.buf, p...)
}

// dropLocked forgets the oldest n buffered bytes: they were acknowledged,
// or (a detached session with nobody attached) its log has them.
func (r *remote) dropLocked(n int64) {
	n = min(n, int64(len(r.buf)))
	if a := r.att; a != nil && a.sent < r.base+n {
		a.sent = r.base + n
	}
	r.buf = r.buf[n:]
	r.base += n
}

func (r *remote) end() int64 { return r.base + int64(len(r.buf)) }

func (r *remote) info() SessionInfo {
	in := SessionInfo{ID: r.id, App: r.req.App, Argv: r.req.Argv, Detached: r.req.Detached, Started: r.started}
	if r.s != nil {
		in.Pid = r.s.Pid()
	}
	if r.cond == nil {
		return in
	}
	in.Attached = r.att != nil
	in.Exited, in.Output, in.Buffered = r.exited, r.end(), r.base
	if r.exited {
		in.Code = r.status.Code
		if r.status.Signal != 0 {
			in.Signal = SignalName(r.status.Signal)
		}
	}
	return in
}

// hangup closes the session's terminal: SIGHUP, then SIGKILL. Output the
// client has not taken is discarded: the pump stops waiting for room.
func (r *remote) hangup(killAfter time.Duration) {
	r.mu.Lock()
	r.hungUp = true
	r.cond.Broadcast()
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), killAfter)
	defer cancel()
	_ = r.s.Close(ctx)
}

// detachLocked ends the current attachment, if any, and returns it for the
// caller to stop outside the lock.
func (r *remote) detachLocked() *attachment {
	a := r.att
	if a == nil {
		return nil
	}
	a.closed = true
	a.cancel()
	r.att = nil
	r.cond.Broadcast()
	return a
}

// stop waits for the streamer and closes the stream socket.
func (a *attachment) stop() {
	if a == nil {
		return
	}
	<-a.done
	_ = a.push.Close()
}

// AttachRequest is the body of pty.attach.
type AttachRequest struct {
	Session string `json:"session"`
	// From is the output offset to resume at: the count of bytes the
	// client already has. -1 means the oldest output still buffered.
	From int64 `json:"from"`
	// Rows and Cols, if both non-zero, resize the terminal.
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
}

// AttachReply is the reply to pty.attach.
type AttachReply struct {
	Attach string `json:"attach"`
	Stream string `json:"stream"`
	// From is where the stream starts: the request's From, or the oldest
	// buffered offset if that was later (output before it is gone).
	From int64 `json:"from"`
	// Window is the server's Buffer: the client should ack at least every
	// Window/4 bytes.
	Window int `json:"window"`
	// Heartbeat is the longest the client may stay silent, in ms
	// (AttachTimeout/4).
	Heartbeat int64 `json:"heartbeat_ms"`
}

func (s *Server) attach(ctx context.Context, caller string, req AttachRequest) (AttachReply, error) {
	r, err := s.lookup(caller, req.Session)
	if err != nil {
		return AttachReply{}, err
	}
	r.mu.Lock()
	if r.forgotten {
		r.mu.Unlock()
		return AttachReply{}, zmqloop.Errorf(CodeNotFound, "no session %q", req.Session)
	}
	r.attaching++
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.attaching--
		r.mu.Unlock()
	}()
	if s.attachPinned != nil {
		s.attachPinned()
	}
	if req.Rows != 0 || req.Cols != 0 {
		size := WindowSize{Rows: req.Rows, Cols: req.Cols}
		if err := size.Validate(); err != nil {
			return AttachReply{}, zmqloop.Errorf(CodeBadRequest, "%v", err)
		}
		if err := r.s.Resize(size); err != nil && !errors.Is(err, ErrExited) && !errors.Is(err, ErrClosed) {
			return AttachReply{}, zmqloop.Errorf(CodeBadRequest, "%v", err)
		}
	}
	push, err := zmqloop.NewPusher(zmqloop.SenderConfig{Bind: []string{s.cfg.StreamBind}, Codec: s.cfg.Codec,
		Curve: s.cfg.Curve, Logger: s.log, FlushTimeout: 50 * time.Millisecond})
	if err != nil {
		return AttachReply{}, fmt.Errorf("pty: attach %s: stream socket: %w", r.id, err)
	}
	r.mu.Lock()
	if req.From > r.end() {
		r.mu.Unlock()
		_ = push.Close()
		return AttachReply{}, zmqloop.Errorf(CodeBadOffset, "resume offset %d is beyond the output (%d bytes)", req.From, r.end())
	}
	from := max(req.From, r.base)
	old := r.detachLocked()
	a := &attachment{id: newID(), push: push, sent: from, lastSeen: s.cfg.Now(), done: make(chan struct{})}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	r.att = a
	r.graceAt = time.Time{}
	r.mu.Unlock()
	old.stop() // may take a while: it flushes the old stream
	// The client's first ack can come only after this reply: its silence
	// is counted from here, not from before the old stream's flush.
	r.mu.Lock()
	a.lastSeen = s.cfg.Now()
	r.mu.Unlock()
	// Counted before Run's Wait: attach runs in a handler, and the reply
	// loop returns only after its handlers, before Run waits.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.stream(r, a)
	}()
	return AttachReply{Attach: a.id, Stream: push.Endpoints()[0], From: from, Window: s.cfg.Buffer,
		Heartbeat: (s.cfg.AttachTimeout / 4).Milliseconds()}, nil
}

// stream sends the session's output from a.sent on, then the exit
// message, until the attachment ends.
func (s *Server) stream(r *remote, a *attachment) {
	defer close(a.done)
	// Push may wait for queue space; the attachment's end (a.cancel)
	// must end it.
	ctx := a.ctx
	body := make([]byte, 0, 256)
	// The piece to send is copied out under the lock and sent outside it,
	// so the pump and acks never wait for the socket.
	chunk := make([]byte, 0, chunkSize)
	exitSent := false
	for {
		r.mu.Lock()
		for !a.closed && a.sent >= r.end() && (!r.exited || exitSent) {
			r.cond.Wait()
		}
		if a.closed {
			r.mu.Unlock()
			return
		}
		typ := TypeOutput
		if a.sent < r.end() {
			if a.sent < r.base { // dropped while detached
				a.sent = r.base
			}
			lo := a.sent - r.base
			hi := min(int64(len(r.buf)), lo+chunkSize)
			chunk = append(chunk[:0], r.buf[lo:hi]...)
			off := a.sent
			a.sent += hi - lo
			r.mu.Unlock()
			body = appendOutputHead(body[:0], r.id, a.id, off)
		} else {
			typ = TypeExit
			body = appendExit(body[:0], r.id, a.id, r.end(), r.status)
			chunk = chunk[:0]
			exitSent = true
			r.mu.Unlock()
		}
		if err := a.push.PushData(ctx, typ, body, chunk); err != nil {
			if ctx.Err() == nil {
				s.log.Warn("pty: stream push failed", "session", r.id, "err", err)
			}
			return
		}
	}
}

func appendExit(b []byte, session, attach string, end int64, st ExitStatus) []byte {
	b = append(b, `{"s":"`...)
	b = append(b, session...)
	b = append(b, `","a":"`...)
	b = append(b, attach...)
	b = append(b, `","o":`...)
	b = strconv.AppendInt(b, end, 10)
	b = append(b, `,"code":`...)
	b = strconv.AppendInt(b, int64(st.Code), 10)
	if st.Signal != 0 {
		b = append(b, `,"signal":"`...)
		b = append(b, SignalName(st.Signal)...)
		b = append(b, '"')
	}
	return append(b, '}')
}

// current returns caller's session and checks that attach is its current
// attachment, which it marks as seen. Called with nothing locked; returns
// with r.mu held on success.
func (s *Server) current(caller, id, attach string, live bool) (*remote, error) {
	r, err := s.lookup(caller, id)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if live && (r.exited || r.hungUp) {
		r.mu.Unlock()
		return nil, zmqloop.Errorf(CodeExited, "session %s: the command has exited (or is being hung up); not delivered", id)
	}
	if r.att == nil || r.att.id != attach {
		r.mu.Unlock()
		return nil, zmqloop.Errorf(CodeDetached, "attachment %q of session %s is not current (another client attached, or this one timed out)", attach, id)
	}
	r.att.lastSeen = s.cfg.Now()
	return r, nil
}

// InputRequest is the body of pty.input.
type InputRequest struct {
	Session string `json:"session"`
	Attach  string `json:"attach"`
	// Data is the input. Client sends it raw in the message's data frame
	// (zmqloop's Message.Data) and leaves this out; a body member "data"
	// (base64 in JSON) is accepted too, as clients before data frames
	// sent it, but not both at once.
	Data []byte `json:"data,omitempty"`
}

// handleInput is pty.input's handler: handle's decoding, with the input
// bytes taken from the data frame.
func (s *Server) handleInput(ctx context.Context, r *zmqloop.Request) (json.RawMessage, error) {
	var in InputRequest
	if len(r.Body) > 0 {
		if err := json.Unmarshal(r.Body, &in); err != nil {
			return nil, zmqloop.Errorf(CodeBadRequest, "%s body: %v", r.Type, err)
		}
	}
	if len(r.Data) > 0 {
		if len(in.Data) > 0 {
			return nil, zmqloop.Errorf(CodeBadRequest, `%s has input both in "data" and in the data frame`, r.Type)
		}
		in.Data = r.Data // aliases the loop's buffer: Write is done with it before we return
	}
	if _, err := s.input(ctx, r.KeyID, in); err != nil {
		return nil, err
	}
	return json.RawMessage(`{}`), nil
}

func (s *Server) input(ctx context.Context, caller string, req InputRequest) (struct{}, error) {
	r, err := s.current(caller, req.Session, req.Attach, true)
	if err != nil {
		return struct{}{}, err
	}
	r.mu.Unlock()
	if _, err := r.s.Write(req.Data); err != nil {
		if errors.Is(err, ErrExited) || errors.Is(err, ErrClosed) {
			return struct{}{}, zmqloop.Errorf(CodeExited, "session %s: the command has exited; input not delivered", r.id)
		}
		return struct{}{}, err
	}
	return struct{}{}, nil
}

// AckRequest is the body of pty.ack.
type AckRequest struct {
	Session string `json:"session"`
	Attach  string `json:"attach"`
	// Offset is how many bytes of output the client has consumed; the
	// server may forget everything before it.
	Offset int64 `json:"offset"`
}

// AckReply is the reply to pty.ack: where the session stands.
type AckReply struct {
	Output int64  `json:"output"` // bytes written by the command so far
	Exited bool   `json:"exited"`
	Code   int    `json:"code"`
	Signal string `json:"signal,omitempty"`
}

func (s *Server) ack(ctx context.Context, caller string, req AckRequest) (AckReply, error) {
	r, err := s.current(caller, req.Session, req.Attach, false)
	if err != nil {
		return AckReply{}, err
	}
	defer r.mu.Unlock()
	if req.Offset > r.att.sent {
		return AckReply{}, zmqloop.Errorf(CodeBadOffset, "ack of offset %d beyond what was sent (%d)", req.Offset, r.att.sent)
	}
	if req.Offset > r.base {
		r.dropLocked(req.Offset - r.base)
		r.cond.Broadcast()
	}
	in := r.info()
	return AckReply{Output: in.Output, Exited: in.Exited, Code: in.Code, Signal: in.Signal}, nil
}

// ResizeRequest is the body of pty.resize.
type ResizeRequest struct {
	Session string `json:"session"`
	Attach  string `json:"attach"`
	Rows    uint16 `json:"rows"`
	Cols    uint16 `json:"cols"`
}

func (s *Server) resize(ctx context.Context, caller string, req ResizeRequest) (struct{}, error) {
	r, err := s.current(caller, req.Session, req.Attach, true)
	if err != nil {
		return struct{}{}, err
	}
	r.mu.Unlock()
	size := WindowSize{Rows: req.Rows, Cols: req.Cols}
	if err := size.Validate(); err != nil {
		return struct{}{}, zmqloop.Errorf(CodeBadRequest, "%v", err)
	}
	if err := r.s.Resize(size); err != nil {
		if errors.Is(err, ErrExited) || errors.Is(err, ErrClosed) {
			return struct{}{}, zmqloop.Errorf(CodeExited, "session %s has exited", r.id)
		}
		return struct{}{}, err
	}
	return struct{}{}, nil
}

// SignalRequest is the body of pty.signal.
type SignalRequest struct {
	Session string `json:"session"`
	Signal  string `json:"signal"`
}

func (s *Server) signal(ctx context.Context, caller string, req SignalRequest) (struct{}, error) {
	r, err := s.lookup(caller, req.Session)
	if err != nil {
		return struct{}{}, err
	}
	sig, err := ParseSignal(req.Signal)
	if err != nil {
		return struct{}{}, zmqloop.Errorf(CodeBadRequest, "%v", err)
	}
	if err := r.s.Signal(sig); err != nil {
		if errors.Is(err, ErrExited) || errors.Is(err, ErrClosed) {
			return struct{}{}, zmqloop.Errorf(CodeExited, "session %s has exited", r.id)
		}
		return struct{}{}, err
	}
	return struct{}{}, nil
}

// SessionRequest is the body of pty.detach, pty.close and pty.status.
type SessionRequest struct {
	Session string `json:"session"`
	Attach  string `json:"attach,omitempty"` // pty.detach: the attachment to end
}

func (s *Server) detach(ctx context.Context, caller string, req SessionRequest) (struct{}, error) {
	r, err := s.current(caller, req.Session, req.Attach, false)
	if err != nil {
		return struct{}{}, err
	}
	a := r.detachLocked()
	if !r.req.Detached && !r.exited {
		r.graceAt = s.cfg.Now().Add(s.cfg.Grace)
	}
	r.mu.Unlock()
	a.stop()
	return struct{}{}, nil
}

func (s *Server) close(ctx context.Context, caller string, req SessionRequest) (SessionInfo, error) {
	r, err := s.lookup(caller, req.Session)
	if err != nil {
		return SessionInfo{}, err
	}
	r.hangup(s.cfg.KillAfter)
	r.mu.Lock()
	for !r.exited {
		r.cond.Wait()
	}
	in := r.info()
	r.mu.Unlock()
	return in, nil
}

func (s *Server) statusOf(ctx context.Context, caller string, req SessionRequest) (SessionInfo, error) {
	r, err := s.lookup(caller, req.Session)
	if err != nil {
		return SessionInfo{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.info(), nil
}

func (s *Server) list(ctx context.Context, caller string, _ struct{}) ([]SessionInfo, error) {
	s.mu.Lock()
	var mine []*remote
	for _, r := range s.sessions {
		if r.owner == caller {
			mine = append(mine, r)
		}
	}
	s.mu.Unlock()
	out := make([]SessionInfo, 0, len(mine))
	for _, r := range mine {
		r.mu.Lock()
		out = append(out, r.info())
		r.mu.Unlock()
	}
	return out, nil
}
