package balancer

import (
	"net"
	"strconv"
	"time"

	"github.com/paaskit/paaskit/internal/evproxy"
)

// loopHandler is the balancer's side of the event-loop forwarder
// (internal/evproxy): routing by the table, the pick with health and
// bounded load, in-flight counts (from Route to End), and health marks
// from the outcomes (in Done).
type loopHandler struct{ p *Proxy }

func reply(status int, reason, body string, extra ...string) evproxy.Decision {
	return evproxy.Decision{Action: evproxy.Reply, Status: status, Reason: reason, Body: body, Extra: extra}
}

// Route implements evproxy.Handler with the same answers as handle.
func (h loopHandler) Route(r *evproxy.Request) evproxy.Decision {
	p := h.p
	req := r.Head
	host, ok := normalizeHost(r.Scratch[:0], req.Host)
	r.Scratch = host
	if !ok {
		return reply(400, "Bad Request", "invalid Host header\n")
	}
	if p.cfg.MaxBodyBytes > 0 && req.ContentLength > p.cfg.MaxBodyBytes {
		return reply(413, "Content Too Large", "request body larger than "+strconv.FormatInt(p.cfg.MaxBodyBytes, 10)+" bytes\n")
	}
	b := p.cur.Load()
	var pl *pool
	if len(host) > 0 {
		pl = b.t.lookup(host)
	} else {
		pl = b.t.def
	}
	if pl == nil {
		return reply(404, "Not Found", "unknown host: "+string(host)+"\n")
	}
	idx, be := p.pick(b, pl, hostHash(host), r.Tried)
	if be == nil && len(r.Tried) > 0 {
		return reply(502, "Bad Gateway", "cannot reach a node for "+string(host)+"\n")
	}
	if be == nil {
		return reply(503, "Service Unavailable", "no live node for "+string(host)+"\n",
			"Retry-After: "+strconv.Itoa(int((p.cfg.RetryAfter+time.Second-1)/time.Second)))
	}
	p.startInflight(be)
	r.Tag = be
	replayable := req.ContentLength <= 0 && idempotent(req.Method)
	return evproxy.Decision{
		Action:        evproxy.Forward,
		Target:        be.loopTarget(),
		ID:            idx,
		Replayable:    replayable,
		HandoffOnMiss: replayable && p.cfg.OnMiss != nil,
	}
}

// Done implements evproxy.Handler: the outcome's health mark. The
// request stays in flight until End: an answered one may still be
// streaming its body.
func (h loopHandler) Done(r *evproxy.Request, o evproxy.Outcome) {
	p := h.p
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
// toward its node's load. The loop calls it once per Forward decision,
// so a request retried elsewhere leaves the first node's count as it
// found it.
func (h loopHandler) End(r *evproxy.Request) {
	be, _ := r.Tag.(*backend)
	if be == nil {
		return
	}
	r.Tag = nil
	h.p.endInflight(be)
}

// loopTarget is where the event loops reach a node, and the key of
// their pools of connections to it.
func loopTarget(addr string) evproxy.Target {
	return evproxy.Target{Network: "tcp", Addr: addr}
}

// handoff takes a client connection from an event loop onto the
// goroutine path, starting with the bytes the loop had read.
func (p *Proxy) handoff(c net.Conn, buffered []byte) {
	cc := p.newClientConn(c, false)
	cc.pre = buffered
	p.connMu.Lock()
	if p.draining.Load() {
		p.connMu.Unlock()
		_ = c.Close()
		return
	}
	p.conns[cc] = struct{}{}
	p.connWG.Add(1)
	p.connMu.Unlock()
	go cc.serve()
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
	fs := ForwarderStats{Refused: p.gate.Refused(), HookPanics: p.panics.Load()}
	l := p.loops.Load()
	if l == nil {
		return fs
	}
	s := l.Stats()
	fs.LoopConns, fs.LoopRequests, fs.Handoffs, fs.LoopIdleConns = s.Conns, s.Requests, s.Handoffs, s.IdleConns
	fs.HookPanics += s.Panics
	return fs
}
