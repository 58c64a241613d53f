package runner

import (
	"context"
	"net"
	"time"

	"github.com/paaskit/paaskit/internal/evproxy"
	"github.com/paaskit/paaskit/internal/http1"
)

// loopHandler routes the event loops' requests: a request whose app has
// a ready instance goes to that instance's socket, with the instance's
// active count raised from Route to End; anything else is handed to the
// goroutine path, which starts instances, waits for them and answers
// misses.
type loopHandler struct {
	f *front
}

func (h loopHandler) Route(r *evproxy.Request) evproxy.Decision {
	if len(r.Tried) > 0 {
		// The instance's socket failed before anything was sent: the
		// goroutine path retries on a fresh connection and answers
		// what it cannot.
		return evproxy.Decision{Action: evproxy.Handoff}
	}
	host, ok := http1.NormalizeHost(r.Scratch[:0], r.Head.Host)
	r.Scratch = host
	if !ok {
		return evproxy.Decision{Action: evproxy.Reply, Status: 400, Reason: "Bad Request", Body: "invalid Host header\n"}
	}
	a := h.f.r.lookupBytes(host)
	if a == nil {
		return evproxy.Decision{Action: evproxy.Handoff}
	}
	i := a.tryAcquire()
	if i == nil {
		return evproxy.Decision{Action: evproxy.Handoff}
	}
	if i.tcpAddr != "" && i.netns >= 0 {
		// A TCP app's port is inside its namespace, which the loop's
		// thread does not enter: the goroutine path dials it there.
		a.release(i)
		return evproxy.Decision{Action: evproxy.Handoff}
	}
	r.Tag = i
	return evproxy.Decision{Action: evproxy.Forward, Target: i.target, ID: int32(i.id), Replayable: replayable(r.Head)}
}

// Done implements evproxy.Handler: it counts the request for the app's
// usage when its instance answered it, timed out or broke on it. The
// other outcomes are routed again, handed to the goroutine path (which
// counts what it serves) or never reached the app. The instance stays in
// flight until End: an answered request may still be streaming its body.
func (h loopHandler) Done(r *evproxy.Request, o evproxy.Outcome) {
	if o != evproxy.Answered && o != evproxy.TimedOut && o != evproxy.Broken {
		return
	}
	if i, ok := r.Tag.(*instance); ok {
		i.app.requests.Add(1)
	}
}

// End implements evproxy.Ender: the exchange is wholly over (body
// relayed or cut, or never answered), so the instance's in-flight count
// drops and its idle clock may run again.
func (h loopHandler) End(r *evproxy.Request) {
	if i, ok := r.Tag.(*instance); ok {
		r.Tag = nil
		i.app.release(i)
	}
}

// serveLoops serves l with event loops until ctx ends, handing what they
// do not serve to the goroutine forwarder (f.fwd). It returns
// evproxy.ErrUnsupported, having done nothing, where there are no loops.
func (f *front) serveLoops(ctx context.Context, l *net.TCPListener) error {
	cfg := f.r.cfg
	p, err := evproxy.New(evproxy.Config{
		Listener: l,
		Handler:  loopHandler{f: f},
		Handoff: func(c net.Conn, buffered []byte) {
			f.fwd.Serve(c, buffered, false, true)
		},
		Loops:                 cfg.EventLoops,
		ReadHeaderTimeout:     time.Minute,
		IdleTimeout:           frontIdleTimeout,
		ResponseHeaderTimeout: f.r.responseTimeout(),
		ShutdownTimeout:       cfg.StopGrace,
		MaxHeaderBytes:        maxHead,
		MaxHeaderFields:       maxHeaders,
		DropFieldPrefix:       platformFieldPrefix,
		KeepForwarded:         true, // as the goroutine path: the balancer's scheme and host reach the app
		Gate:                  f.r.gate,
		MaxBodyBytes:          cfg.MaxBodyBytes,
		MaxBufferedBody:       cfg.MaxConnBuffer,
		Logger:                f.r.log,
	})
	if err != nil {
		return err
	}
	f.loops.Store(p)
	f.r.frontLoops.Store(p)
	return p.Run(ctx)
}

// loopTarget is where the event loops reach an instance.
// A unix target is connected to through the pinned socket (via) and its
// listener's UID checked on every new connection, as on the goroutine
// path.
func loopTarget(tcpAddr, sockHost, via string, uid int) evproxy.Target {
	if tcpAddr != "" {
		return evproxy.Target{Network: "tcp", Addr: tcpAddr}
	}
	return evproxy.Target{Network: "unix", Addr: sockHost, Via: via, CheckPeer: true, PeerUID: uint32(uid)}
}

// FrontStats counts what the front's event loops did (all zero when they
// are off).
type FrontStats struct {
	LoopRequests int64 `json:"loop_requests"` // requests the loops forwarded so far
	Handoffs     int64 `json:"handoffs"`      // connections handed to the goroutine path so far
	Resumed      int64 `json:"resumed"`       // connections given back to the loops after a handed-off exchange so far
}

// FrontStats returns the counters of the event loops of the latest Serve.
func (r *Runner) FrontStats() FrontStats {
	l := r.frontLoops.Load()
	if l == nil {
		return FrontStats{}
	}
	s := l.Stats()
	return FrontStats{LoopRequests: s.Requests, Handoffs: s.Handoffs, Resumed: s.Resumed}
}
