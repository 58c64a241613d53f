package connproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paaskit/paaskit/internal/evproxy"
	"github.com/paaskit/paaskit/internal/http1"
)

// Request is one parsed request as a Handler sees it: the same type as
// the event loops' (internal/evproxy), so that one routing function
// serves both paths. It belongs to the client connection and is reused
// for its next request; a Handler must not keep it after End.
type Request = evproxy.Request

// Outcome is how one forwarded request ended for its target, reported
// to Handler.Done exactly once per Forward decision; the values are the
// event loops'.
type Outcome = evproxy.Outcome

// The outcomes, as evproxy defines them.
const (
	Answered      = evproxy.Answered
	ConnectFailed = evproxy.ConnectFailed
	Failed        = evproxy.Failed
	TimedOut      = evproxy.TimedOut
	Broken        = evproxy.Broken
	Stale         = evproxy.Stale
	Aborted       = evproxy.Aborted
	Missed        = evproxy.Missed
)

// Action is what a Handler decides for a request.
type Action int

const (
	// Forward sends the request to Decision.Pool's target.
	Forward Action = iota
	// Reply answers with Decision.Status and Decision.Body.
	Reply
)

// Decision is a Handler's answer for one request.
type Decision struct {
	Action Action
	// Pool is the target's connection pool (Forward; required).
	Pool *Pool
	// ID is the handler's own number for the target; a target whose
	// connection failed before anything was sent is added to
	// Request.Tried by this ID before Route is called again.
	ID int32
	// Replayable says the request may be sent again after its
	// connection failed before any response byte (idempotent, no body):
	// once on a fresh connection when a pooled one was stale, or to the
	// next target Route picks.
	Replayable bool
	// MayMiss makes a miss answer (status 404 with Config.MissHeader
	// "1") call the Handler's Miss (see Misser) and, when it returns
	// nil, route the request again. Only for Replayable requests.
	MayMiss bool

	// Reply: status line and plain-text body; Extra are more header
	// lines ("Name: value"). The connection is closed after it unless
	// KeepAlive is set and the request's body (if any, up to 1 MiB) can
	// be read and dropped.
	Status    int
	Reason    string
	Body      string
	Extra     []string
	KeepAlive bool
}

// Handler routes requests and learns their outcomes. Its methods are
// called on the client connection's goroutine, so unlike the event
// loops' Handler, Route may block (to start a target on demand, say); a
// panic in one is recovered and logged with its stack (Stats.Panics):
// in Route the request is answered 502; in Done, End or Miss the request
// is answered 502 when nothing was sent to the client yet, and the
// connection is closed.
type Handler interface {
	// Route decides what to do with a request. It is called again with
	// a longer Tried when the connection to the target it chose failed
	// before anything was sent (or, Replayable, before any response
	// byte), and after a miss Miss handled.
	Route(r *Request) Decision
	// Done reports how a Forward decision ended, when the response head
	// arrived or the attempt failed.
	Done(r *Request, o Outcome)
	// End comes exactly once per Forward decision, after its Done, when
	// the exchange is wholly over: the response body relayed or cut, a
	// tunnel (WebSocket) closed, or at once for an outcome other than
	// Answered. Request.Tag is still set.
	End(r *Request)
}

// Misser is an optional interface of a Handler: Miss is called after a
// MayMiss request's target answered a miss (after Done(Missed) and End),
// with the ID of the target that answered; nil routes the request again
// (the hook may have started the app, or changed the routing), an error
// answers 502. A request is routed again after at most one miss.
type Misser interface {
	Miss(r *Request, id int32) error
}

// Config configures a Proxy. Zero values mean the documented defaults.
type Config struct {
	// Handler routes requests (required).
	Handler Handler

	// ReadHeaderTimeout bounds a request head from its first byte.
	// Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request, and each read of
	// a request body. Default 90s.
	IdleTimeout time.Duration
	// DialTimeout bounds connecting to a target. Default 3s.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a response head after
	// the request was sent (answered 504). Default 60s.
	ResponseHeaderTimeout time.Duration

	// MaxHeaderBytes bounds a request or response head. Default 32 KiB.
	MaxHeaderBytes int
	// MaxHeaderFields bounds the fields of a head. Default 100.
	MaxHeaderFields int
	// MaxBodyBytes, if positive, bounds a request body: a larger
	// Content-Length is answered 413 before the body is read, and a
	// chunked body that grows past it is cut and answered 413.
	MaxBodyBytes int64
	// MissHeader is the response field that marks a miss (see
	// Decision.MayMiss). Empty: no miss detection.
	MissHeader string
	// DropFieldPrefix, if set, drops every response field whose name
	// starts with it (case-insensitive), so that a target cannot forge
	// fields the platform gives a meaning to (the runner drops
	// "x-paaskit-").
	DropFieldPrefix string
	// KeepForwarded passes the client's X-Forwarded-Proto and
	// X-Forwarded-Host on, where it sent them, instead of setting them
	// (the runner's front, behind a balancer that set them). X-Forwarded-For is always
	// extended with the client's address.
	KeepForwarded bool

	// Resume, if set, is offered a plain TCP client connection (one Serve
	// got with resumable set) once an exchange on it ended cleanly with
	// the connection kept alive and nothing of the next request waiting
	// for a slow-path decision, together with the bytes already read
	// from it. It returns true when it took the connection (an event
	// loop serves it from then on), false to keep serving it here.
	Resume func(c net.Conn, buffered []byte) bool

	// Logger receives the proxy's logs; nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Handler == nil {
		return errors.New("connproxy: Config.Handler is nil")
	}
	if err := evproxy.SetDurations("connproxy",
		evproxy.Dur(&c.ReadHeaderTimeout, evproxy.DefaultReadHeaderTimeout, "ReadHeaderTimeout"),
		evproxy.Dur(&c.IdleTimeout, evproxy.DefaultIdleTimeout, "IdleTimeout"),
		evproxy.Dur(&c.DialTimeout, evproxy.DefaultDialTimeout, "DialTimeout"),
		evproxy.Dur(&c.ResponseHeaderTimeout, evproxy.DefaultResponseHeaderTimeout, "ResponseHeaderTimeout"),
	); err != nil {
		return err
	}
	if err := evproxy.SetHeadLimits("connproxy", &c.MaxHeaderBytes, &c.MaxHeaderFields); err != nil {
		return err
	}
	if c.MissHeader != "" && !http1.IsToken([]byte(c.MissHeader)) {
		return fmt.Errorf("connproxy: MissHeader %q is not a field name", c.MissHeader)
	}
	c.MissHeader = strings.ToLower(c.MissHeader)
	c.DropFieldPrefix = strings.ToLower(c.DropFieldPrefix)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Proxy is a goroutine-per-connection HTTP/1.1 forwarder. Connections
// come to it through Serve (from an accept loop, or handed off by an
// event loop); Shutdown ends them.
type Proxy struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	conns    map[*clientConn]struct{}
	draining atomic.Bool
	wg       sync.WaitGroup

	// ctx ends when Shutdown cuts the connections left; stored because
	// dials on every connection goroutine take it and it has no other
	// owner.
	ctx    context.Context
	cancel context.CancelFunc

	panics   atomic.Int64
	resumed  atomic.Int64
	requests atomic.Int64
}

// New validates cfg and returns a proxy.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger, conns: make(map[*clientConn]struct{})}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// Serve serves c on a goroutine of its own, starting with buffered, the
// bytes already read from it (an event loop's hand-off). tlsOn says c is
// a TLS connection (X-Forwarded-Proto "https"); resumable says c may be
// offered to Config.Resume. It reports false, having closed c, when the
// proxy is shutting down.
func (p *Proxy) Serve(c net.Conn, buffered []byte, tlsOn, resumable bool) bool {
	cc := p.newClientConn(c, tlsOn)
	cc.pre = buffered
	cc.resumable = resumable && p.cfg.Resume != nil && !tlsOn
	p.mu.Lock()
	if p.draining.Load() {
		p.mu.Unlock()
		_ = c.Close()
		return false
	}
	p.conns[cc] = struct{}{}
	p.wg.Add(1)
	p.mu.Unlock()
	go cc.serve()
	return true
}

// Stats are the proxy's counters.
type Stats struct {
	Conns    int   // client connections served now
	Requests int64 // requests routed so far
	Resumed  int64 // connections given back through Config.Resume so far
	Panics   int64 // panics recovered so far
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	n := len(p.conns)
	p.mu.Unlock()
	return Stats{Conns: n, Requests: p.requests.Load(), Resumed: p.resumed.Load(), Panics: p.panics.Load()}
}

// Drain makes the proxy take no new connection and no new request: idle
// connections are closed now, the others after their exchange.
func (p *Proxy) Drain() {
	p.draining.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for cc := range p.conns {
		if cc.idle.Load() {
			_ = cc.c.SetReadDeadline(time.Unix(1, 0))
		}
	}
}

// Shutdown drains the proxy and waits for its connections to end until
// stopBy; then it cuts what is left (the connections to targets of the
// exchanges cut included) and returns once every goroutine it started
// has ended.
func (p *Proxy) Shutdown(stopBy time.Time) {
	p.Drain()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	t := time.NewTimer(time.Until(stopBy))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		p.cancel()
		p.mu.Lock()
		for cc := range p.conns {
			cc.forceClose()
		}
		p.mu.Unlock()
		<-done
	}
	p.cancel()
}

func (p *Proxy) forget(cc *clientConn) {
	p.mu.Lock()
	delete(p.conns, cc)
	p.mu.Unlock()
	p.wg.Done()
}

// errHookPanicked is what a handler method that panicked counts as.
var errHookPanicked = errors.New("handler panicked")

func (p *Proxy) hookPanic(where string, v any) {
	p.panics.Add(1)
	p.log.Error("connproxy: panic recovered", "in", where, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
}

// recoverConn ends a client connection goroutine that panicked: the
// panic is logged with its stack, and the goroutine's other deferred
// calls close and forget the connection, so the proxy serves on.
func (p *Proxy) recoverConn() {
	if v := recover(); v != nil {
		p.hookPanic("client connection", v)
	}
}
