package pty

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"sync"
	"syscall"
	"time"

	"github.com/paaskit/paaskit/zmqloop"
)

// ClientConfig configures a Client of a session Server. Zero values are
// the documented defaults.
type ClientConfig struct {
	// Endpoint is the server's control endpoint. Required.
	Endpoint string
	// Codec signs and verifies; its signing key id is the caller the
	// server knows. Required.
	Codec *zmqloop.Codec
	// Curve, if set, encrypts the transport (the server's public key).
	Curve *zmqloop.Curve
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Client starts, attaches and manages remote sessions. It is safe for
// concurrent use.
type Client struct {
	cfg ClientConfig
	log *slog.Logger
	zc  *zmqloop.Client
}

// NewClient validates cfg and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Codec == nil || cfg.Endpoint == "" {
		return nil, errors.New("pty: new client: Endpoint and Codec are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	zc, err := zmqloop.NewClient(zmqloop.ClientConfig{Endpoints: []string{cfg.Endpoint}, Codec: cfg.Codec, Curve: cfg.Curve,
		Logger: cfg.Logger, TryTimeout: time.Hour})
	if err != nil {
		return nil, fmt.Errorf("pty: new client: %w", err)
	}
	return &Client{cfg: cfg, log: cfg.Logger, zc: zc}, nil
}

// Close releases the client's sockets. Sessions attached through it stop
// streaming (as if the client vanished); call their Detach first to be
// polite.
func (c *Client) Close() error { return c.zc.Close() }

// Start starts a session and returns its description; Attach it to see
// and type into it (a session not attached within the server's grace
// period is hung up, unless it is Detached).
func (c *Client) Start(ctx context.Context, req StartRequest) (SessionInfo, error) {
	return call[SessionInfo](ctx, c, TypeStart, req)
}

// Run starts a session and attaches to it.
func (c *Client) Run(ctx context.Context, req StartRequest) (*RemoteSession, error) {
	info, err := c.Start(ctx, req)
	if err != nil {
		return nil, err
	}
	return c.Attach(ctx, info.ID, 0)
}

// Status returns a session's description.
func (c *Client) Status(ctx context.Context, id string) (SessionInfo, error) {
	return call[SessionInfo](ctx, c, TypeStatus, SessionRequest{Session: id})
}

// List returns the caller's sessions.
func (c *Client) List(ctx context.Context) ([]SessionInfo, error) {
	return call[[]SessionInfo](ctx, c, TypeList, struct{}{})
}

// Hangup hangs a session up (SIGHUP, then SIGKILL) and returns its final
// description.
func (c *Client) Hangup(ctx context.Context, id string) (SessionInfo, error) {
	return call[SessionInfo](ctx, c, TypeClose, SessionRequest{Session: id})
}

// Signal sends sig to a session's foreground job.
func (c *Client) Signal(ctx context.Context, id string, sig syscall.Signal) error {
	_, err := call[struct{}](ctx, c, TypeSignal, SignalRequest{Session: id, Signal: SignalName(sig)})
	return err
}

// input sends one pty.input with data raw in the data frame.
func (c *Client) input(ctx context.Context, id, attach string, data []byte) error {
	body, err := json.Marshal(InputRequest{Session: id, Attach: attach})
	if err != nil {
		return fmt.Errorf("pty: %s: %w", TypeInput, err)
	}
	if _, _, err := c.zc.CallData(ctx, TypeInput, body, data); err != nil {
		return fmt.Errorf("pty: %s: %w", TypeInput, err)
	}
	return nil
}

func call[Resp any](ctx context.Context, c *Client, typ string, req any) (Resp, error) {
	r, err := zmqloop.CallJSON[Resp](ctx, c.zc, typ, req)
	if err != nil {
		var zero Resp
		return zero, fmt.Errorf("pty: %s: %w", typ, err)
	}
	return r, nil
}

// ErrorCode returns the session protocol's error code in err (CodeNotFound,
// CodeExited, ...), or "" if err is not an error reply.
func ErrorCode(err error) string {
	var re *zmqloop.RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	return ""
}

// RemoteSession is an attached remote session: a Terminal. Read returns
// its output from the offset it was attached at, in order and without
// gaps, and io.EOF after the command's exit; Wait then has the exit
// status. Read acknowledges what it returns, so a client that stops reading
// pauses the remote command once the server's buffer is full.
type RemoteSession struct {
	c  *Client
	id string

	mu       sync.Mutex
	cond     *sync.Cond
	attach   string
	stream   string
	window   int
	pending  []byte // received output; pending[pendOff:] is not yet read
	pendOff  int
	recv     int64     // offset after the last byte received
	recvAt   time.Time // when recv last grew (or the stream was attached)
	read     int64     // offset after the last byte Read returned
	acked    int64
	exited   bool
	status   ExitStatus
	err      error // the session is lost
	closed   bool
	gap      bool // a stream message was missing: reattach
	pull     *zmqloop.PullLoop
	pullStop context.CancelFunc
	pullDone chan struct{}
	kick     chan struct{} // wakes the supervisor
	done     chan struct{} // the supervisor has returned
	exitCh   chan struct{}
	hb       time.Duration
}

// Attach attaches to session id, resuming its output at offset from (the
// number of bytes this client already has; -1 for the oldest output the
// server still holds). Another client attached to it is detached.
func (c *Client) Attach(ctx context.Context, id string, from int64) (*RemoteSession, error) {
	rs := &RemoteSession{c: c, id: id, kick: make(chan struct{}, 1), done: make(chan struct{}), exitCh: make(chan struct{})}
	rs.cond = sync.NewCond(&rs.mu)
	if err := rs.attachFrom(ctx, from); err != nil {
		return nil, err
	}
	go rs.supervise()
	return rs, nil
}

// attachFrom (re)attaches and starts a pull loop on the new stream.
func (rs *RemoteSession) attachFrom(ctx context.Context, from int64) error {
	rep, err := call[AttachReply](ctx, rs.c, TypeAttach, AttachRequest{Session: rs.id, From: from})
	if err != nil {
		return err
	}
	stream, err := streamEndpoint(rep.Stream, rs.c.cfg.Endpoint)
	if err != nil {
		return err
	}
	rs.mu.Lock()
	attach := rep.Attach
	rs.mu.Unlock()
	pull, err := zmqloop.NewPullLoop(zmqloop.PullConfig{Connect: []string{stream}, Codec: rs.c.cfg.Codec, Curve: rs.c.cfg.Curve,
		Logger: rs.c.log, Handlers: map[string]zmqloop.MessageHandler{
			TypeOutput: func(ctx context.Context, m *zmqloop.Request) error { return rs.onOutput(attach, m.Body, m.Data) },
			TypeExit:   func(ctx context.Context, m *zmqloop.Request) error { return rs.onExit(attach, m.Body) },
		}})
	if err != nil {
		return fmt.Errorf("pty: attach %s: %w", rs.id, err)
	}
	pctx, stop := context.WithCancel(context.Background())
	pdone := make(chan struct{})
	go func() {
		defer close(pdone)
		if err := pull.Run(pctx); err != nil {
			rs.c.log.Warn("pty: stream loop failed", "session", rs.id, "err", err)
		}
	}()
	rs.mu.Lock()
	rs.attach, rs.stream, rs.window, rs.pull, rs.pullStop, rs.pullDone = attach, stream, rep.Window, pull, stop, pdone
	if rep.From > rs.recv {
		// Output before From is gone (a detached session dropped it).
		rs.recv, rs.read, rs.acked = rep.From, rep.From, rep.From
	}
	rs.gap = false
	rs.recvAt = time.Now() // the new stream gets a heartbeat to deliver
	rs.hb = max(time.Duration(rep.Heartbeat)*time.Millisecond, 10*time.Millisecond)
	rs.mu.Unlock()
	return nil
}

// streamEndpoint replaces a wildcard host in the server's stream endpoint
// with the host of its control endpoint.
func streamEndpoint(stream, control string) (string, error) {
	u, err := url.Parse(stream)
	if err != nil || u.Scheme == "" {
		return "", fmt.Errorf("pty: bad stream endpoint %q from the server", stream)
	}
	if u.Scheme != "tcp" {
		return stream, nil
	}
	switch u.Hostname() {
	case "0.0.0.0", "*", "::", "":
		cu, err := url.Parse(control)
		if err != nil {
			return stream, nil
		}
		return "tcp://" + cu.Hostname() + ":" + u.Port(), nil
	}
	return stream, nil
}

// outputMsg is a pty.exit body, or a decoded pty.output body.
type outputMsg struct {
	S      string `json:"s"`
	A      string `json:"a"`
	O      int64  `json:"o"`
	D      []byte `json:"d"`
	Code   int    `json:"code"`
	Signal string `json:"signal"`
}

// onOutput takes a pty.output message: its body and data frame.
func (rs *RemoteSession) onOutput(attach string, body, data []byte) error {
	h, err := parseOutputHead(body, data)
	if err != nil {
		return fmt.Errorf("pty: session %s: bad output message: %w", rs.id, err)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if h.S != rs.id || h.A != attach || attach != rs.attach {
		return nil // an older attachment's tail
	}
	if h.O > rs.recv {
		// A message went missing (its stream broke): reattach from what
		// we have rather than show output with a hole in it.
		if !rs.gap {
			rs.gap = true
			rs.wake()
		}
		return nil
	}
	// Decode straight onto the unread output, then drop what we already
	// had (a duplicate after a reattach). Read copies it out under the
	// same lock; compact first if that leaves room at the front.
	if rs.pendOff > 0 && rs.pendOff == len(rs.pending) {
		rs.pending, rs.pendOff = rs.pending[:0], 0
	} else if rs.pendOff > len(rs.pending)/2 && cap(rs.pending)-len(rs.pending) < len(h.Data) {
		n := copy(rs.pending, rs.pending[rs.pendOff:])
		rs.pending, rs.pendOff = rs.pending[:n], 0
	}
	start := len(rs.pending)
	rs.pending, err = h.decode(rs.pending)
	if err != nil {
		rs.pending = rs.pending[:start]
		return fmt.Errorf("pty: session %s: bad output message at offset %d: %w", rs.id, h.O, err)
	}
	skip := rs.recv - h.O
	if got := int64(len(rs.pending) - start); skip >= got {
		rs.pending = rs.pending[:start] // already have it all
		return nil
	} else if skip > 0 {
		n := copy(rs.pending[start:], rs.pending[start+int(skip):])
		rs.pending = rs.pending[:start+n]
	}
	rs.recv += int64(len(rs.pending) - start)
	rs.recvAt = time.Now()
	rs.cond.Broadcast()
	return nil
}

func (rs *RemoteSession) onExit(attach string, body []byte) error {
	var m outputMsg
	if err := json.Unmarshal(body, &m); err != nil {
		return fmt.Errorf("pty: session %s: bad exit message: %w", rs.id, err)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if m.S != rs.id || m.A != attach || attach != rs.attach {
		return nil
	}
	if m.O != rs.recv {
		if !rs.gap {
			rs.gap = true
			rs.wake()
		}
		return nil
	}
	rs.setExitLocked(m.Code, m.Signal)
	return nil
}

func (rs *RemoteSession) setExitLocked(code int, signal string) {
	if rs.exited {
		return
	}
	rs.exited = true
	rs.status = ExitStatus{Code: code}
	if signal != "" {
		rs.status.Signal, _ = ParseSignal(signal)
	}
	close(rs.exitCh)
	rs.cond.Broadcast()
	rs.wake()
}

func (rs *RemoteSession) wake() {
	select {
	case rs.kick <- struct{}{}:
	default:
	}
}

// supervise acks consumed output (at least every window/4 bytes and every
// heartbeat, which keeps the attachment alive), reattaches after a gap and
// detaches once the exit is in and read.
func (rs *RemoteSession) supervise() {
	defer close(rs.done)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		rs.mu.Lock()
		hb := rs.hb
		rs.mu.Unlock()
		t.Reset(hb)
		select {
		case <-rs.kick:
		case <-t.C:
		}
		rs.mu.Lock()
		if rs.closed || rs.err != nil {
			rs.mu.Unlock()
			rs.stopPull()
			return
		}
		gap, attach, read, recv, exited := rs.gap, rs.attach, rs.read, rs.recv, rs.exited
		rs.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), max(4*hb, time.Second))
		if gap {
			rs.stopPull()
			err := rs.attachFrom(ctx, recv)
			cancel()
			if err != nil {
				rs.fail(err)
				return
			}
			rs.wake() // ack at once: the server counts silence from its reply
			continue
		}
		if exited && read == recv {
			_, _ = call[struct{}](ctx, rs.c, TypeDetach, SessionRequest{Session: rs.id, Attach: attach})
			cancel()
			rs.stopPull()
			return
		}
		rep, err := call[AckReply](ctx, rs.c, TypeAck, AckRequest{Session: rs.id, Attach: attach, Offset: read})
		cancel()
		if err != nil {
			if c := ErrorCode(err); c == CodeDetached || c == CodeNotFound {
				rs.fail(err)
				return
			}
			continue // a lost reply: the next heartbeat tries again
		}
		rs.mu.Lock()
		rs.acked = max(rs.acked, read)
		if rep.Exited && !rs.exited && rs.recv == rep.Output {
			// The exit message was lost; the ack says how it ended.
			rs.setExitLocked(rep.Code, rep.Signal)
		} else if rep.Output > rs.recv && time.Since(rs.recvAt) >= 2*hb {
			// Output is waiting and nothing arrived for two heartbeats:
			// the stream is broken; reattach. (Acks that Read asks for
			// come much faster than heartbeats, so two of them with
			// nothing new between say nothing about the stream; and one
			// heartbeat is a short stall on a loaded machine.)
			rs.gap = true
			rs.wake()
		}
		rs.mu.Unlock()
	}
}

func (rs *RemoteSession) stopPull() {
	rs.mu.Lock()
	stop, done := rs.pullStop, rs.pullDone
	rs.pullStop, rs.pullDone = nil, nil
	rs.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

func (rs *RemoteSession) fail(err error) {
	rs.mu.Lock()
	if rs.err == nil {
		rs.err = fmt.Errorf("pty: session %s lost: %w", rs.id, err)
	}
	rs.cond.Broadcast()
	rs.mu.Unlock()
	rs.stopPull()
}

// ID returns the session id.
func (rs *RemoteSession) ID() string { return rs.id }

// Offset returns how many bytes of output Read has returned, counted from
// the start of the session: the From to pass to a later Attach.
func (rs *RemoteSession) Offset() int64 {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.read
}

// Read returns output in order; io.EOF once the command has exited and all
// its output has been read.
func (rs *RemoteSession) Read(p []byte) (int, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for rs.pendOff == len(rs.pending) {
		switch {
		case rs.exited:
			return 0, io.EOF
		case rs.closed:
			return 0, ErrClosed
		case rs.err != nil:
			return 0, rs.err
		}
		rs.cond.Wait()
	}
	n := copy(p, rs.pending[rs.pendOff:])
	rs.pendOff += n
	rs.read += int64(n)
	if rs.read-rs.acked >= int64(rs.window/4) {
		rs.wake()
	}
	return n, nil
}

func (rs *RemoteSession) ids() (string, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	switch {
	case rs.closed:
		return "", ErrClosed
	case rs.err != nil:
		return "", rs.err
	}
	return rs.attach, nil
}

func (rs *RemoteSession) exitErr(err error) error {
	if ErrorCode(err) == CodeExited {
		return fmt.Errorf("%w: %w", ErrExited, err)
	}
	return err
}

// Write types p into the remote terminal (in pieces of up to 256 KiB). It
// returns an error wrapping ErrExited once the command has exited.
func (rs *RemoteSession) Write(p []byte) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return rs.WriteContext(ctx, p)
}

// WriteContext is Write with a context.
func (rs *RemoteSession) WriteContext(ctx context.Context, p []byte) (int, error) {
	attach, err := rs.ids()
	if err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		n := min(len(p)-done, 256<<10)
		if err := rs.c.input(ctx, rs.id, attach, p[done:done+n]); err != nil {
			return done, rs.exitErr(err)
		}
		done += n
	}
	return done, nil
}

// Resize sets the remote window size.
func (rs *RemoteSession) Resize(size WindowSize) error {
	if err := size.Validate(); err != nil {
		return err
	}
	attach, err := rs.ids()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = call[struct{}](ctx, rs.c, TypeResize, ResizeRequest{Session: rs.id, Attach: attach, Rows: size.Rows, Cols: size.Cols})
	return rs.exitErr(err)
}

// Signal sends sig to the remote terminal's foreground job.
func (rs *RemoteSession) Signal(sig syscall.Signal) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return rs.exitErr(rs.c.Signal(ctx, rs.id, sig))
}

// Wait waits for the command's exit status. The status arrives after the
// last byte of output, so a caller that wants all output reads to io.EOF
// first (from another goroutine, or before calling Wait).
func (rs *RemoteSession) Wait(ctx context.Context) (ExitStatus, error) {
	select {
	case <-rs.exitCh:
		rs.mu.Lock()
		defer rs.mu.Unlock()
		return rs.status, nil
	case <-rs.done:
		rs.mu.Lock()
		defer rs.mu.Unlock()
		if rs.exited {
			return rs.status, nil
		}
		if rs.err != nil {
			return ExitStatus{}, rs.err
		}
		return ExitStatus{}, ErrClosed
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
}

// Detach ends the attachment politely: the server keeps the session
// running for its grace period (a detached session, for good) and a later
// Attach resumes at Offset. The RemoteSession is closed afterwards.
func (rs *RemoteSession) Detach(ctx context.Context) error {
	attach, err := rs.ids()
	if err != nil {
		return err
	}
	_, err = call[struct{}](ctx, rs.c, TypeDetach, SessionRequest{Session: rs.id, Attach: attach})
	rs.Close()
	if err != nil && ErrorCode(err) != CodeDetached {
		return err
	}
	return nil
}

// Close stops this side's goroutines and stream without telling the
// server, exactly as if the client had vanished: the server notices when
// the heartbeats stop and keeps the session for its grace period.
func (rs *RemoteSession) Close() error {
	rs.mu.Lock()
	rs.closed = true
	rs.cond.Broadcast()
	rs.mu.Unlock()
	rs.wake()
	<-rs.done
	rs.stopPull()
	return nil
}
