package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/paaskit/paaskit/internal/connproxy"
	"github.com/paaskit/paaskit/internal/evproxy"
	"github.com/paaskit/paaskit/internal/http1"
)

// Serve runs the node front on l until ctx ends, then closes l and every
// connection it accepted and returns once their goroutines are gone.
//
// Plain HTTP/1.1 requests for an app with a ready instance are served by
// event loops (internal/evproxy, Config.EventLoops); everything else, and
// everything when the loops are off, by the shared goroutine-per-
// connection forwarder (internal/connproxy): starts on demand (the
// request waits for its instance), WebSocket and other upgrades,
// Expect: 100-continue, chunked or large bodies, HTTP/1.0, misses. Both
// parse with the strict internal/http1 codec, route, start on demand and
// answer misses and failed starts the same way; ServeHTTP is the same
// front for a net/http server.
func (r *Runner) Serve(ctx context.Context, l net.Listener) error {
	f := &front{r: r, ctx: ctx}
	fwd, err := r.newForwarder(goHandler{r: r, ctx: ctx}, f.resume)
	if err != nil {
		return err
	}
	f.fwd = fwd
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	loops := false
	if tl, ok := l.(*net.TCPListener); ok && r.cfg.EventLoops > 0 {
		err = f.serveLoops(ctx, tl)
		loops = !errors.Is(err, evproxy.ErrUnsupported)
		if !loops {
			err = nil
		}
	}
	if !loops {
		err = f.acceptLoop(ctx, l)
	}
	l.Close()
	// The loops drained theirs for StopGrace; the goroutine path's
	// connections are cut now.
	f.fwd.Shutdown(time.Now())
	return err
}

// newForwarder returns the front's goroutine forwarder: Serve's (with
// resume, giving handed-off connections back to its loops) or
// ServeHTTP's (resume nil).
func (r *Runner) newForwarder(h goHandler, resume func(net.Conn, []byte) bool) (*connproxy.Proxy, error) {
	fwd, err := connproxy.New(connproxy.Config{
		Handler:               h,
		ReadHeaderTimeout:     time.Minute,
		IdleTimeout:           frontIdleTimeout,
		DialTimeout:           time.Minute, // the instance's socket is local; its backlog may be full for a moment
		ResponseHeaderTimeout: r.responseTimeout(),
		MaxHeaderBytes:        maxHead,
		MaxHeaderFields:       maxHeaders,
		MaxBodyBytes:          max(r.cfg.MaxBodyBytes, 0),
		DropFieldPrefix:       platformFieldPrefix,
		KeepForwarded:         true,
		Resume:                resume,
		Logger:                r.log,
	})
	if err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	return fwd, nil
}

// responseTimeout is Config.ResponseTimeout, or none (a year) when it
// is not positive, for both paths.
func (r *Runner) responseTimeout() time.Duration {
	if r.cfg.ResponseTimeout <= 0 {
		return 365 * 24 * time.Hour
	}
	return r.cfg.ResponseTimeout
}

// acceptLoop serves l with a goroutine per connection until l fails or
// is closed.
//
// Running out of descriptors (EMFILE, ENFILE) or memory for a socket is
// not the listener failing: the loop backs off (5 ms, doubling up to 1 s,
// logged once per episode) and goes on serving the connections it has,
// as net/http and the balancer do, instead of stopping the node's front.
func (f *front) acceptLoop(ctx context.Context, l net.Listener) error {
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if retryableAccept(err) {
				if delay == 0 {
					delay = 5 * time.Millisecond
					f.r.log.Warn("runner: front cannot accept for now; backing off", "listener", l.Addr().String(), "err", err)
				} else if delay *= 2; delay > time.Second {
					delay = time.Second
				}
				t := time.NewTimer(delay)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil
				case <-t.C:
				}
				continue
			}
			return fmt.Errorf("runner: front accept on %s: %w", l.Addr(), err)
		}
		if delay != 0 {
			f.r.log.Info("runner: front accepting again", "listener", l.Addr().String())
			delay = 0
		}
		ac := f.r.gate.Accept(c, time.Minute) // nil: over a cap, closed
		if ac == nil {
			continue
		}
		c = ac
		if !f.fwd.Serve(c, nil, false, false) {
			return nil
		}
	}
}

// retryableAccept reports whether an Accept error is a passing shortage
// (descriptors, kernel memory, an aborted handshake, a timeout) rather
// than a listener that is gone.
func retryableAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

const (
	// maxIdlePerInstance bounds the idle connections kept to one
	// instance.
	maxIdlePerInstance = 1024
	frontIdleTimeout   = 2 * time.Minute
	maxHead            = 16 << 10
	maxHeaders         = 100
)

// front is one Serve's state.
type front struct {
	r   *Runner
	ctx context.Context // Serve's: bounds waits for starts
	fwd *connproxy.Proxy
	// loops are the event loops while they serve: a connection they
	// handed off for one exchange goes back to them afterwards.
	loops atomic.Pointer[evproxy.Proxy]
}

// resume gives a handed-off connection back to the event loops
// (connproxy.Config.Resume) once its exchange ended cleanly.
func (f *front) resume(c net.Conn, buffered []byte) bool {
	l := f.loops.Load()
	return l != nil && f.ctx.Err() == nil && l.Resume(c, buffered) == nil
}

// goHandler routes the goroutine path's requests (Serve's and
// ServeHTTP's): the app for the host, an instance acquired for the
// request (started on demand: Route may wait for it), released in End.
type goHandler struct {
	r *Runner
	// ctx bounds the wait for a start: Serve's; nil for ServeHTTP,
	// where the request's own context (Request.Ctx) does.
	ctx context.Context
}

func (h goHandler) Route(r *connproxy.Request) connproxy.Decision {
	if len(r.Tried) > 0 {
		return frontReply(http.StatusBadGateway, "runner: cannot connect to the app's instance\n", false, false)
	}
	ctx := h.ctx
	if ctx == nil {
		ctx = r.Ctx
	}
	arrival := h.r.cfg.Clock.Now()
	host, ok := r.Scratch[:0], true
	if r.Head.Host != nil { // nil: HTTP/1.0 without Host, no app
		host, ok = http1.NormalizeHost(host, r.Head.Host)
	}
	r.Scratch = host
	if !ok {
		return frontReply(http.StatusBadRequest, "malformed request: invalid Host\n", false, false)
	}
	a := h.r.lookupBytes(host)
	if a == nil {
		return frontReply(http.StatusNotFound, fmt.Sprintf("runner: no app for host %q\n", host), true, true)
	}
	inst, err := a.acquire(ctx, arrival)
	if err != nil {
		var se *StartError
		switch {
		case errors.As(err, &se):
			return frontReply(http.StatusServiceUnavailable, startErrorText(se), false, true)
		case errors.Is(err, ErrUnknownApp):
			return frontReply(http.StatusNotFound, err.Error()+"\n", true, true)
		default:
			return frontReply(http.StatusServiceUnavailable, err.Error()+"\n", false, true)
		}
	}
	r.Tag = inst
	return connproxy.Decision{Action: connproxy.Forward, Pool: inst.fpool, ID: int32(inst.id), Replayable: replayable(r.Head)}
}

// replayable reports whether a request may be sent again after its
// instance's connection failed before any response byte: a GET, HEAD or
// OPTIONS without a body. Both paths decide so.
func replayable(h *http1.Head) bool {
	m := h.Method
	return h.ContentLength <= 0 && !h.Chunked && (string(m) == "GET" || string(m) == "HEAD" || string(m) == "OPTIONS")
}

// frontReply is the front's own plain-text answer; a miss carries
// MissHeader for the balancer's miss hook.
func frontReply(code int, body string, miss, keep bool) connproxy.Decision {
	d := connproxy.Decision{Action: connproxy.Reply, Status: code, Reason: http.StatusText(code), Body: body, KeepAlive: keep}
	if miss {
		d.Extra = []string{MissHeader + ": 1"}
	}
	return d
}

// Done implements connproxy.Handler, counting as the loops do.
func (h goHandler) Done(r *connproxy.Request, o connproxy.Outcome) { loopHandler{}.Done(r, o) }

// End implements connproxy.Handler: the instance is released.
func (h goHandler) End(r *connproxy.Request) { loopHandler{}.End(r) }

func startErrorText(se *StartError) string {
	msg := se.Error()
	if !se.RetryAt.IsZero() {
		msg += "\nnext start not before " + se.RetryAt.UTC().Format("15:04:05.000Z")
	}
	if se.Stderr != "" {
		msg += "\n\nlast lines of the app's stderr:\n" + se.Stderr
	}
	return msg + "\n"
}

// platformFieldPrefix starts the names of the response fields the
// platform gives a meaning to (MissHeader makes the balancer run its miss
// hook): the front drops them from every app response, on every path.
const platformFieldPrefix = "x-paaskit-"
