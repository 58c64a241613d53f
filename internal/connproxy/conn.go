package connproxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/paaskit/paaskit/internal/http1"
	"github.com/paaskit/paaskit/internal/proxyproto"
)

// clientConn is one client connection, served by one goroutine.
type clientConn struct {
	p *Proxy
	c net.Conn
	// ctx bounds dials and is Request.Ctx: the proxy's (ended by the
	// final cut of Shutdown), or the net/http request's (ServeHTTP).
	ctx context.Context
	// rw, on ServeHTTP's path, is where the response goes instead of w
	// (which then carries only body bytes, to rw); see http.go.
	rw     *rwState
	r      *connReader
	w      *bufio.Writer
	req    http1.Head
	rq     Request // the Handler's view of req
	host   []byte  // normalized host of the current request
	ip     string
	proto  string
	idle   atomic.Bool
	closed atomic.Bool
	// node is the target connection of the exchange under way (a
	// tunnel included): forceClose closes it, so that a request waiting
	// for its target, or a body or a tunnel stalled on it, ends at once
	// when the shutdown deadline passes instead of after its own
	// timeout.
	node atomic.Pointer[net.Conn]
	// raw and step implement the common path (rawStep); nil raw: not a
	// plain socket (TLS). rawNext is what serve does after it.
	raw     syscall.RawConn
	step    func(fd uintptr) bool
	rawNext int
	// pre holds the bytes an event loop read before handing the
	// connection over; serve starts with them.
	pre []byte
	// isHead is set before the request body is read: reading the body may
	// reuse the buffer the head's slices point into, so nothing in req
	// but its plain values is used after that.
	isHead bool
	// forwarding is set from a Forward decision to its End.
	forwarding, doneSent bool
	// resumable: the connection may go back to an event loop
	// (Config.Resume); resumed: it did, so serve leaves it open.
	resumable, resumed bool
}

var clientWriterPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}

func (p *Proxy) newClientConn(c net.Conn, tlsOn bool) *clientConn {
	cc := &clientConn{p: p, c: c, proto: "http", ctx: p.ctx}
	if tlsOn {
		cc.proto = "https"
	}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			cc.raw = raw
			cc.step = cc.rawStep
		}
	}
	return cc
}

// clientIP is c's client address for X-Forwarded-For. It is asked on
// the connection's goroutine: on a connection from a trusted proxy
// RemoteAddr reads the PROXY header first (internal/admit).
func clientIP(c net.Conn) string {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.IP.String()
	} else if h, _, err := net.SplitHostPort(c.RemoteAddr().String()); err == nil {
		return h
	}
	return ""
}

func (cc *clientConn) forceClose() {
	if cc.closed.CompareAndSwap(false, true) {
		if cc.raw != nil {
			// Close would wait for a request being served inside
			// rawStep (it holds the socket's read lock); cut the
			// socket instead, which ends that request's writes and
			// its wait. serve closes the socket when it returns.
			_ = cc.c.SetDeadline(time.Unix(1, 0))
			if tc, ok := cc.c.(interface {
				CloseRead() error
				CloseWrite() error
			}); ok { // a *net.TCPConn or an *admit.Conn over one
				_ = tc.CloseRead()
				_ = tc.CloseWrite()
			}
		} else {
			_ = cc.c.Close()
		}
		if n := cc.node.Load(); n != nil {
			// At worst this is a connection the exchange just
			// pooled: forceClose is the end of the proxy or of a
			// stalled tunnel, and a pooled connection found closed
			// is a stale one, sent again on a fresh connection.
			_ = (*n).Close()
		}
	}
}

// serve is the client connection's goroutine: read a request, forward it,
// repeat while the connection stays keep-alive.
func (cc *clientConn) serve() {
	p := cc.p
	defer p.recoverConn()
	defer p.forget(cc)
	defer func() {
		if cc.forwarding {
			// A panic between a Forward decision and its End.
			cc.end()
		}
		if !cc.resumed {
			cc.forceClose()
			_ = cc.c.Close()
		}
	}()
	cc.ip = clientIP(cc.c)
	cc.r = newConnReader(cc.c, p.cfg.MaxHeaderBytes)
	cc.r.deadline = p.cfg.IdleTimeout
	if len(cc.pre) > 0 {
		// Handed off by an event loop with these bytes already read.
		if len(cc.pre) > len(cc.r.buf) {
			cc.r.buf = make([]byte, max(len(cc.pre), min(2*len(cc.pre), p.cfg.MaxHeaderBytes)))
		}
		cc.r.w = copy(cc.r.buf, cc.pre)
		cc.pre = nil
	}
	cc.w = clientWriterPool.Get().(*bufio.Writer)
	cc.w.Reset(cc.c)
	defer func() {
		cc.w.Reset(nil)
		clientWriterPool.Put(cc.w)
	}()
	cc.host = make([]byte, 0, 64)
	for {
		cc.idle.Store(true)
		if p.draining.Load() {
			return
		}
		if cc.r.buffered() == 0 {
			cc.r.lazyDeadline(time.Now(), p.cfg.IdleTimeout)
		} else {
			cc.headerStart()
		}
		if cc.raw != nil && cc.r.buffered() == 0 {
			cc.rawNext = rawClose
			err := cc.raw.Read(cc.step)
			switch cc.rawNext {
			case rawHandle:
				if !cc.handle() {
					return
				}
				if cc.tryResume() {
					return
				}
				continue
			case rawServed:
				if cc.tryResume() {
					return
				}
				continue
			case rawSlow:
				cc.headerStart()
			default:
				_ = err // idle deadline, closed or read error: nothing to answer
				return
			}
		}
		raw, err := cc.r.readHead(cc.headerStart)
		cc.idle.Store(false)
		if !cc.afterHead(raw, err) || !cc.handle() {
			return
		}
		if cc.tryResume() {
			return
		}
	}
}

// tryResume offers the connection back to an event loop after an
// exchange that ended cleanly with the connection kept alive; it reports
// whether the loop took it.
func (cc *clientConn) tryResume() bool {
	if !cc.resumable || cc.closed.Load() || cc.p.draining.Load() {
		return false
	}
	if cc.w.Flush() != nil {
		return false
	}
	buffered := append([]byte(nil), cc.r.buf[cc.r.r:cc.r.w]...)
	// The loop takes the socket as it is: no deadline of ours may
	// stay on it.
	_ = cc.c.SetDeadline(time.Time{})
	if !cc.p.cfg.Resume(cc.c, buffered) {
		cc.resumable = false // once refused, not offered again
		return false
	}
	cc.resumed = true
	cc.p.resumed.Add(1)
	return true
}

// headerStart switches the read deadline to the request head's.
func (cc *clientConn) headerStart() {
	cc.r.setDeadline(time.Now().Add(cc.p.cfg.ReadHeaderTimeout))
}

// afterHead answers a failed head read or a malformed head; it reports
// whether cc.req holds a request to handle.
func (cc *clientConn) afterHead(raw []byte, err error) bool {
	p := cc.p
	if err != nil {
		cc.isHead = false
		switch {
		case errors.Is(err, errHeadTooLarge):
			cc.simple(431, "Request Header Fields Too Large", "request head larger than the limit\n", nil)
		case cc.r.buffered() > 0 && errors.Is(err, os.ErrDeadlineExceeded):
			cc.simple(408, "Request Timeout", "request head not received in time\n", nil)
		}
		return false
	}
	if err := http1.ParseRequestHead(raw, &cc.req, p.cfg.MaxHeaderFields, ""); err != nil {
		cc.isHead = false
		if isHeader, _ := proxyproto.Sniff(raw[:len(raw)+cc.r.buffered()]); isHeader {
			// Not from a trusted source (admit reads those): refused.
			p.log.Warn("connproxy: PROXY header from an untrusted source; closing", "client", cc.ip)
			return false
		}
		if errors.Is(err, http1.ErrTooManyFields) {
			cc.simple(431, "Request Header Fields Too Large", "too many header fields\n", nil)
		} else {
			cc.simple(400, "Bad Request", "malformed request: "+http1.Printable(err.Error())+"\n", nil)
		}
		return false
	}
	return true
}

// What serve does after a raw read (rawStep) ends.
const (
	rawClose  = iota // close the connection
	rawSlow          // bytes are buffered: go on with readHead
	rawHandle        // cc.req holds a request that may read the client: handle it
	rawServed        // a request was served: offer the connection to Resume
)

// rawStep is the RawConn read callback of the common path. It reads the
// client socket only when called after the poller found it readable (or
// first in a fresh wait), and serves whole requests that need nothing
// more from the client right here, so that after the answer is written
// the goroutine waits for the next request without first trying a read
// that would fail with EAGAIN. That is safe because the wait is never
// left between the last read and the next one: a request arriving while
// one is served leaves the poller readable.
func (cc *clientConn) rawStep(fd uintptr) bool {
	p := cc.p
	cr := cc.r
	cr.r, cr.w = 0, 0
	for {
		n, err := syscall.Read(int(fd), cr.buf)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != nil || n == 0:
			cc.rawNext = rawClose
			return true
		}
		cr.w = n
		break
	}
	cc.idle.Store(false)
	cr.noFill = true
	raw, err := cr.readHead(nil)
	cr.noFill = false
	if err == errWouldBlock {
		cc.rawNext = rawSlow
		return true
	}
	if !cc.afterHead(raw, err) {
		cc.rawNext = rawClose
		return true
	}
	req := &cc.req
	if req.ConnUpgrade || req.Chunked || req.Expect100 || req.ContentLength > int64(cr.buffered()) {
		cc.rawNext = rawHandle
		return true
	}
	if !cc.handle() {
		cc.rawNext = rawClose
		return true
	}
	cc.idle.Store(true)
	if p.draining.Load() {
		cc.rawNext = rawClose
		return true
	}
	if cc.resumable {
		cc.rawNext = rawServed
		return true
	}
	if cr.buffered() > 0 {
		cc.rawNext = rawSlow
		return true
	}
	cr.lazyDeadline(time.Now(), p.cfg.IdleTimeout)
	return false
}

// simple writes a complete plain-text answer and asks for the connection
// to be closed.
func (cc *clientConn) simple(status int, reason, body string, extra []string) {
	cc.answer(status, reason, body, extra, false)
}

// answer writes a complete plain-text answer, with Connection: close
// unless keep.
func (cc *clientConn) answer(status int, reason, body string, extra []string, keep bool) {
	if cc.rw != nil {
		cc.rw.answer(status, body, extra, cc.isHead, keep)
		return
	}
	w := cc.w
	_, _ = w.Write(http1.AppendReply(w.AvailableBuffer(), status, reason, body, extra, keep, !cc.isHead))
	_ = w.Flush()
}

// reply answers a Reply decision; it reports whether the connection
// carries another request.
func (cc *clientConn) reply(d *Decision, keepAlive bool) bool {
	req := &cc.req
	if cc.rw != nil {
		// net/http reads what is left of the body, or closes.
		cc.rw.answer(d.Status, d.Body, d.Extra, cc.isHead, d.KeepAlive)
		return false
	}
	keep := d.KeepAlive && keepAlive && !req.ConnUpgrade && !req.Expect100
	if keep && (req.Chunked || req.ContentLength > maxDiscardBody) {
		keep = false
	}
	if keep && req.ContentLength > 0 {
		if _, _, err := copyN(discardWriter(), cc.r, req.ContentLength); err != nil {
			return false
		}
	}
	reason := d.Reason
	if reason == "" {
		reason = statusText(d.Status)
	}
	cc.answer(d.Status, reason, d.Body, d.Extra, keep && req.Minor == 1)
	return keep && req.Minor == 1
}

// maxDiscardBody bounds the request body a kept-alive Reply reads and
// drops; a larger one closes the connection instead.
const maxDiscardBody = 1 << 20

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 404:
		return "Not Found"
	case 413:
		return "Content Too Large"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	}
	return "Status " + strconv.Itoa(code)
}

// The handler's methods, each with a panic recovered (see Handler).

func (cc *clientConn) route() (d Decision, ok bool) {
	defer func() {
		if v := recover(); v != nil {
			cc.p.hookPanic("Route", v)
			ok = false
		}
	}()
	d = cc.p.cfg.Handler.Route(&cc.rq)
	if d.Action == Forward {
		cc.forwarding, cc.doneSent = true, false
	}
	return d, true
}

// done reports o for the Forward decision under way, once.
func (cc *clientConn) done(o Outcome) {
	if !cc.forwarding || cc.doneSent {
		return
	}
	cc.doneSent = true
	defer func() {
		if v := recover(); v != nil {
			cc.p.hookPanic("Done", v)
		}
	}()
	cc.p.cfg.Handler.Done(&cc.rq, o)
}

// end ends the Forward decision under way (reporting Aborted first if
// nothing was reported yet).
func (cc *clientConn) end() {
	if !cc.forwarding {
		return
	}
	cc.done(Aborted)
	cc.forwarding = false
	defer func() {
		if v := recover(); v != nil {
			cc.p.hookPanic("End", v)
		}
	}()
	cc.p.cfg.Handler.End(&cc.rq)
}

func (cc *clientConn) miss(m Misser, id int32) (err error) {
	defer func() {
		if v := recover(); v != nil {
			cc.p.hookPanic("Miss", v)
			err = errHookPanicked
		}
	}()
	return m.Miss(&cc.rq, id)
}
