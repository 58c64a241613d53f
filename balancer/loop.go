package balancer

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/paaskit/paaskit/internal/connproxy"
	"github.com/paaskit/paaskit/internal/evproxy"
	"github.com/paaskit/paaskit/internal/http1"
)

// route is the routing both forwarders share: the table's pool for the
// host, the pick with health and bounded load, and the request counted
// in flight from the pick (until End). It returns the picked node, or a
// Reply decision when there is none to forward to.
func (p *Proxy) route(r *evproxy.Request) (int32, *backend, evproxy.Decision) {
	req := r.Head
	host, ok := r.Scratch[:0], true
	if req.Host != nil { // nil: HTTP/1.0 without Host, the default site
		host, ok = normalizeHost(host, req.Host)
	}
	r.Scratch = host
	if !ok {
		return 0, nil, reply(400, "Bad Request", "invalid Host header\n")
	}
	if p.cfg.MaxBodyBytes > 0 && req.ContentLength > p.cfg.MaxBodyBytes {
		return 0, nil, reply(413, "Content Too Large", "request body larger than "+strconv.FormatInt(p.cfg.MaxBodyBytes, 10)+" bytes\n")
	}
	b := p.cur.Load()
	var pl *pool
	if len(host) > 0 {
		pl = b.t.lookup(host)
	} else {
		pl = b.t.def
	}
	if pl == nil {
		return 0, nil, reply(404, "Not Found", "unknown host: "+string(host)+"\n")
	}
	idx, be := p.pick(b, pl, hostHash(host), r.Tried)
	if be == nil && len(r.Tried) > 0 {
		return 0, nil, reply(502, "Bad Gateway", "cannot reach a node for "+string(host)+"\n")
	}
	if be == nil {
		return 0, nil, reply(503, "Service Unavailable", "no live node for "+string(host)+"\n",
			"Retry-After: "+strconv.Itoa(int((p.cfg.RetryAfter+time.Second-1)/time.Second)))
	}
	p.startInflight(be)
	r.Tag = be
	return idx, be, evproxy.Decision{}
}

func idempotent(m []byte) bool {
	switch string(m) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

func replayable(h *http1.Head) bool {
	return h.ContentLength <= 0 && !h.Chunked && idempotent(h.Method)
}

// loopHandler is the balancer's side of the event-loop forwarder
// (internal/evproxy): routing by the table (route), health marks from the
// outcomes (in Done) and the in-flight count's end (in End).
type loopHandler struct{ p *Proxy }

func reply(status int, reason, body string, extra ...string) evproxy.Decision {
	return evproxy.Decision{Action: evproxy.Reply, Status: status, Reason: reason, Body: body, Extra: extra}
}

// Route implements evproxy.Handler.
func (h loopHandler) Route(r *evproxy.Request) evproxy.Decision {
	p := h.p
	idx, be, d := p.route(r)
	if be == nil {
		return d
	}
	rp := replayable(r.Head)
	return evproxy.Decision{
		Action:        evproxy.Forward,
		Target:        be.loopTarget(),
		ID:            idx,
		Replayable:    rp,
		HandoffOnMiss: rp && p.cfg.OnMiss != nil,
	}
}

// Done implements evproxy.Handler: the outcome's health mark. The
// request stays in flight until End: an answered one may still be
// streaming its body.
func (h loopHandler) Done(r *evproxy.Request, o evproxy.Outcome) { h.p.done(r, o) }

func (p *Proxy) done(r *evproxy.Request, o evproxy.Outcome) {
	be, _ := r.Tag.(*backend)
	if be == nil {
		return
	}
	switch o {
	case evproxy.Answered, evproxy.Missed:
		if be.markOK() {
			p.log.Info("balancer: node is back", "node", be.id, "addr", be.addr)
		}
	case evproxy.ConnectFailed, evproxy.Failed:
		if o == evproxy.ConnectFailed {
			p.connectFailed(be)
		}
		if p.markFail(be) {
			p.log.Warn("balancer: node ejected", "node", be.id, "addr", be.addr, "err", o.String())
		}
	}
}

// End implements evproxy.Ender: the exchange is wholly over (the body
// relayed or cut, or it was never answered, or it was handed off or is
// about to be routed to another node), so the request stops counting
// toward its node's load. Both forwarders call it once per Forward
// decision, so a request retried elsewhere leaves the first node's count
// as it found it.
func (h loopHandler) End(r *evproxy.Request) {
	be, _ := r.Tag.(*backend)
	if be == nil {
		return
	}
	r.Tag = nil
	h.p.endInflight(be)
}

// goHandler is the balancer's side of the goroutine forwarder
// (internal/connproxy), routing as the loops do; it is also its Misser,
// which runs Config.OnMiss.
type goHandler struct{ p *Proxy }

// Route implements connproxy.Handler.
func (h goHandler) Route(r *connproxy.Request) connproxy.Decision {
	p := h.p
	idx, be, d := p.route(r)
	if be == nil {
		return connproxy.Decision{Action: connproxy.Reply, Status: d.Status, Reason: d.Reason, Body: d.Body, Extra: d.Extra}
	}
	rp := replayable(r.Head)
	return connproxy.Decision{Action: connproxy.Forward, Pool: be.pool, ID: idx, Replayable: rp, MayMiss: rp && p.cfg.OnMiss != nil}
}

// Done implements connproxy.Handler.
func (h goHandler) Done(r *connproxy.Request, o connproxy.Outcome) { h.p.done(r, o) }

// End implements connproxy.Handler. The Tag stays for Miss (connproxy
// clears it before the next Route).
func (h goHandler) End(r *connproxy.Request) {
	if be, _ := r.Tag.(*backend); be != nil {
		h.p.endInflight(be)
	}
}

// Miss implements connproxy.Misser: Config.OnMiss, under MissTimeout.
func (h goHandler) Miss(r *connproxy.Request, _ int32) error {
	p := h.p
	be, _ := r.Tag.(*backend)
	if be == nil || p.cfg.OnMiss == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(p.baseCtx, p.cfg.MissTimeout)
	defer cancel()
	return p.callOnMiss(ctx, Miss{Host: string(r.Scratch), Node: Node{ID: be.id, Addr: be.addr}})
}

// loopTarget is where the event loops reach a node, and the key of
// their pools of connections to it.
func loopTarget(addr string) evproxy.Target {
	return evproxy.Target{Network: "tcp", Addr: addr}
}

// handoff takes a client connection from an event loop onto the
// goroutine path, starting with the bytes the loop had read.
func (p *Proxy) handoff(c net.Conn, buffered []byte) {
	p.fwd.Serve(c, buffered, false, true)
}

// resume gives a handed-off connection back to the event loops once its
// exchange ended cleanly (connproxy.Config.Resume), so a client that
// sent one chunked upload keeps its connection on the fast path.
func (p *Proxy) resume(c net.Conn, buffered []byte) bool {
	l := p.loops.Load()
	return l != nil && !p.draining.Load() && l.Resume(c, buffered) == nil
}

// newLoops returns the event-loop forwarder for a plain TCP listener, or
// nil when it is off or the listener is not TCP.
func (p *Proxy) newLoops(ln net.Listener) (*evproxy.Proxy, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok || p.cfg.EventLoops <= 0 {
		return nil, nil
	}
	return evproxy.New(evproxy.Config{
		Listener:              tl,
		Handler:               loopHandler{p},
		Handoff:               p.handoff,
		Loops:                 p.cfg.EventLoops,
		ReadHeaderTimeout:     p.cfg.ReadHeaderTimeout,
		IdleTimeout:           p.cfg.IdleTimeout,
		DialTimeout:           p.cfg.DialTimeout,
		ResponseHeaderTimeout: p.cfg.ResponseHeaderTimeout,
		ShutdownTimeout:       p.cfg.ShutdownTimeout,
		MaxHeaderBytes:        p.cfg.MaxHeaderBytes,
		MaxHeaderFields:       p.cfg.MaxHeaderFields,
		MaxIdlePerTarget:      p.cfg.MaxIdlePerNode,
		MaxBodyBytes:          p.cfg.MaxBodyBytes,
		MaxBufferedBody:       p.cfg.MaxConnBuffer,
		MissHeader:            p.missLower,
		BusyPoll:              p.cfg.BusyPoll,
		Gate:                  p.gate,
		SocketBuffer:          p.cfg.SocketBuffer,
		Logger:                p.log,
	})
}

// ForwarderStats counts what the event loops did (all zero when they are
// off or the listener is TLS).
type ForwarderStats struct {
	LoopConns     int64 `json:"loop_conns"`      // client connections on the loops now
	LoopRequests  int64 `json:"loop_requests"`   // requests the loops forwarded so far
	Handoffs      int64 `json:"handoffs"`        // connections handed to the goroutine path so far
	Resumed       int64 `json:"resumed"`         // connections given back to the loops after a handed-off exchange so far
	LoopIdleConns int64 `json:"loop_idle_conns"` // idle node connections pooled by the loops now
	// Refused counts client connections refused by MaxConns or
	// MaxConnsPerIP so far (both forwarders).
	Refused int64 `json:"refused_conns"`
	// HookPanics counts panics recovered in hooks (OnMiss, the loops'
	// route callbacks) and connection goroutines so far.
	HookPanics int64 `json:"hook_panics"`
}

// ForwarderStats returns the event loops' counters.
func (p *Proxy) ForwarderStats() ForwarderStats {
	fs := ForwarderStats{Refused: p.gate.Refused(), HookPanics: p.panics.Load() + p.fwd.Stats().Panics}
	l := p.loops.Load()
	if l == nil {
		return fs
	}
	s := l.Stats()
	fs.LoopConns, fs.LoopRequests, fs.Handoffs, fs.LoopIdleConns, fs.Resumed = s.Conns, s.Requests, s.Handoffs, s.IdleConns, s.Resumed
	fs.HookPanics += s.Panics
	return fs
}
