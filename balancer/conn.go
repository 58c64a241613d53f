package balancer

import (
	"bufio"
	"context"
	"errors"
	"io"
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
	p      *Proxy
	c      net.Conn
	r      *connReader
	w      *bufio.Writer
	req    head
	host   []byte // normalized host of the current request
	ip     string
	proto  string
	idle   atomic.Bool
	closed atomic.Bool
	// node is the node connection of the exchange under way (a tunnel
	// included): forceClose closes it, so that a request waiting for its
	// node, or a body or a tunnel stalled on it, ends at once when Run's
	// shutdown deadline passes instead of after its own timeout.
	node atomic.Pointer[net.Conn]
	// raw and step implement the common path (rawStep); nil raw: not a
	// plain socket (TLS). rawNext is what serve does after it.
	raw     syscall.RawConn
	step    func(fd uintptr) bool
	rawNext int
	// pre holds the bytes an event loop read before handing the
	// connection over (see loop.go); serve starts with them.
	pre []byte
	// isHead is set before the request body is read: reading the body may
	// reuse the buffer the head's slices point into, so nothing in req
	// but its plain values is used after that.
	isHead bool
}

var clientWriterPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}

func (p *Proxy) newClientConn(c net.Conn, tlsOn bool) *clientConn {
	cc := &clientConn{p: p, c: c, proto: "http"}
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
	defer p.recoverConn("client connection")
	defer p.forget(cc)
	defer func() {
		cc.forceClose()
		_ = cc.c.Close()
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
	}
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
	if err := parseRequestHead(raw, &cc.req, p.cfg.MaxHeaderFields, ""); err != nil {
		cc.isHead = false
		if isHeader, _ := proxyproto.Sniff(raw[:len(raw)+cc.r.buffered()]); isHeader {
			// Not from a trusted source (admit reads those): refused.
			p.log.Warn("balancer: PROXY header from an untrusted source; closing", "client", cc.ip)
			return false
		}
		if errors.Is(err, errTooManyFields) {
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
	if req.ConnUpgrade || req.Chunked || req.ContentLength > int64(cr.buffered()) {
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
	w := cc.w
	_, _ = w.WriteString("HTTP/1.1 ")
	writeInt(w, int64(status))
	_ = w.WriteByte(' ')
	_, _ = w.WriteString(reason)
	_, _ = w.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\nContent-Length: ")
	writeInt(w, int64(len(body)))
	_, _ = w.WriteString("\r\n")
	for _, e := range extra {
		_, _ = w.WriteString(e)
		_, _ = w.WriteString("\r\n")
	}
	_, _ = w.WriteString("\r\n")
	if !cc.isHead {
		_, _ = w.WriteString(body)
	}
	_ = w.Flush()
}

// outcome of one exchange with a node.
type outcome int

const (
	exDone     outcome = iota // response forwarded; client may continue
	exClose                   // response forwarded or answered; close the client
	exStale                   // reused connection died before any response byte; retry fresh
	exNodeFail                // could not reach the node, nothing sent; try the next node
	exMiss                    // node answered a miss (already drained)
)

func idempotent(m []byte) bool {
	switch string(m) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// handle routes and forwards one parsed request. It reports whether the
// client connection can carry another request.
func (cc *clientConn) handle() bool {
	p := cc.p
	req := &cc.req
	var ok bool
	if req.Host == nil {
		cc.host = cc.host[:0]
		ok = true
	} else {
		cc.host, ok = normalizeHost(cc.host[:0], req.Host)
	}
	if !ok {
		cc.simple(400, "Bad Request", "invalid Host header\n", nil)
		return false
	}
	cc.isHead = string(req.Method) == "HEAD"
	keepAlive := !req.ConnClose && (req.Minor == 1 || req.ConnKeepAlive)
	hasBody := req.Chunked || req.ContentLength > 0
	if p.cfg.MaxBodyBytes > 0 && req.ContentLength > p.cfg.MaxBodyBytes {
		cc.simple(413, "Content Too Large", "request body larger than "+strconv.FormatInt(p.cfg.MaxBodyBytes, 10)+" bytes\n", nil)
		return false
	}
	b := p.cur.Load()
	var pl *pool
	if len(cc.host) > 0 {
		pl = b.t.lookup(cc.host)
	} else {
		pl = b.t.def
	}
	if pl == nil {
		cc.simple(404, "Not Found", "unknown host: "+string(cc.host)+"\n", nil)
		return false
	}
	h := hostHash(cc.host)
	replayable := !hasBody && idempotent(req.Method)
	var tried [8]int32
	ntried := 0
	missed := false
	staleRetries := 0
	continueSent := false
	for {
		idx, be := p.pick(b, pl, h, tried[:ntried])
		if be == nil && ntried > 0 {
			cc.simple(502, "Bad Gateway", "cannot reach a node for "+string(cc.host)+"\n", nil)
			return false
		}
		if be == nil {
			cc.simple(503, "Service Unavailable", "no live node for "+string(cc.host)+"\n",
				[]string{"Retry-After: " + strconv.Itoa(int((p.cfg.RetryAfter+time.Second-1)/time.Second))})
			return false
		}
		// In flight from the pick, connecting included, as on the
		// event loops (Route to End).
		p.startInflight(be)
		bc, err := be.get(p.cfg.DialTimeout, p.cfg.MaxHeaderBytes, staleRetries > 0)
		if err != nil {
			p.endInflight(be)
			if p.markFail(be) {
				p.log.Warn("balancer: node ejected", "node", be.id, "addr", be.addr, "err", err)
			}
			if ntried < len(tried) && !continueSent {
				tried[ntried] = idx
				ntried++
				continue
			}
			cc.simple(502, "Bad Gateway", "cannot reach a node for "+string(cc.host)+"\n", nil)
			return false
		}
		if req.Expect100 && hasBody && !continueSent {
			continueSent = true
			_, _ = cc.w.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if err := cc.w.Flush(); err != nil {
				p.endInflight(be)
				be.put(bc, p.cfg.MaxIdlePerNode)
				return false
			}
		}
		// exchange returns once the response is wholly relayed or cut
		// (a tunnel closed), which is when the request stops counting.
		cc.node.Store(&bc.c)
		if cc.closed.Load() {
			// forceClose came first and did not see this connection.
			cc.node.Store(nil)
			bc.close()
			p.endInflight(be)
			return false
		}
		out := cc.exchange(bc, b.t.nodes[idx], keepAlive, replayable && !missed)
		cc.node.Store(nil)
		p.endInflight(be)
		if cc.closed.Load() {
			// Cut by the shutdown (or a stalled tunnel): whatever the
			// node did, this is no health signal and nothing to retry.
			return false
		}
		switch out {
		case exDone:
			return keepAlive
		case exClose:
			return false
		case exStale:
			be.flushIdle()
			if staleRetries == 0 && replayable {
				staleRetries++
				continue
			}
			cc.simple(502, "Bad Gateway", "node closed the connection\n", nil)
			return false
		case exNodeFail:
			if p.markFail(be) {
				p.log.Warn("balancer: node ejected", "node", be.id, "addr", be.addr)
			}
			if replayable && ntried < len(tried) {
				tried[ntried] = idx
				ntried++
				continue
			}
			cc.simple(502, "Bad Gateway", "node failed before answering\n", nil)
			return false
		case exMiss:
			missed = true
			ctx, cancel := context.WithTimeout(p.baseCtx, p.cfg.MissTimeout)
			err := p.callOnMiss(ctx, Miss{Host: string(cc.host), Node: b.t.nodes[idx]})
			cancel()
			if err != nil {
				p.log.Warn("balancer: miss hook failed", "host", string(cc.host), "node", be.id, "err", err)
				cc.simple(502, "Bad Gateway", "app not running for "+string(cc.host)+"\n", nil)
				return false
			}
			// Route again: the hook may have changed the table.
			b = p.cur.Load()
			pl = b.t.lookup(cc.host)
			if pl == nil {
				cc.simple(404, "Not Found", "unknown host: "+string(cc.host)+"\n", nil)
				return false
			}
			ntried = 0
			staleRetries = 0
			continue
		}
	}
}

// startInflight counts a request toward be's load (and the mean of
// bounded-load mode) from its pick; endInflight, called exactly once for
// each startInflight, ends it when the exchange is wholly over: the
// response body relayed or cut, a tunnel closed, or the attempt given up
// (a failed connection, a hand-off, a retry on another node). Both
// forwarders and ServeHTTP count this way, so NodeStatus.InFlight and
// bounded load mean the same whichever path served a request.
func (p *Proxy) startInflight(be *backend) {
	be.inflight.Add(1)
	p.total.Add(1)
}

func (p *Proxy) endInflight(be *backend) {
	be.inflight.Add(-1)
	p.total.Add(-1)
}

// pick returns the first usable node in the host's order.
func (p *Proxy) pick(b *bound, pl *pool, h uint64, tried []int32) (int32, *backend) {
	n := len(pl.nodes)
	capLoad := int64(math_MaxInt64)
	if p.cfg.BoundedLoad > 0 {
		mean := float64(p.total.Load()+1) / float64(len(b.be))
		c := int64(p.cfg.BoundedLoad*mean + 0.999999)
		capLoad = max(c, int64(p.cfg.BoundedLoadFloor))
	}
	var fallback *backend
	fallbackIdx := int32(-1)
	probes := min(4*n, 64)
	if probes < 4 {
		probes = 4
	}
	usable := func(idx int32) *backend {
		for _, t := range tried {
			if t == idx {
				return nil
			}
		}
		be := b.be[idx]
		if be.ejected.Load() {
			return nil
		}
		return be
	}
	for i := 0; i < probes; i++ {
		idx := pl.at(h, i)
		be := usable(idx)
		if be == nil {
			continue
		}
		if be.inflight.Load() < capLoad {
			return idx, be
		}
		if fallback == nil {
			fallback, fallbackIdx = be, idx
		}
	}
	// Walk the whole pool from the host's position.
	start := int(h % uint64(n))
	for k := 0; k < n; k++ {
		idx := pl.nodes[(start+k)%n]
		be := usable(idx)
		if be == nil {
			continue
		}
		if be.inflight.Load() < capLoad {
			return idx, be
		}
		if fallback == nil {
			fallback, fallbackIdx = be, idx
		}
	}
	return fallbackIdx, fallback
}

const math_MaxInt64 = 1<<63 - 1

// writeRequestHead writes the forwarded request head to the node.
func (cc *clientConn) writeRequestHead(w *bufio.Writer) {
	req := &cc.req
	_, _ = w.Write(req.Method)
	_ = w.WriteByte(' ')
	_, _ = w.Write(req.Target)
	_, _ = w.WriteString(" HTTP/1.1\r\n")
	if req.Host == nil {
		_, _ = w.WriteString("Host: ")
		_, _ = w.Write(cc.host)
		_, _ = w.WriteString("\r\n")
	}
	writeFields(w, req.Fields)
	_, _ = w.WriteString("X-Forwarded-For: ")
	if req.XFF != nil {
		_, _ = w.Write(req.XFF)
		_, _ = w.WriteString(", ")
	}
	_, _ = w.WriteString(cc.ip)
	_, _ = w.WriteString("\r\nX-Forwarded-Proto: ")
	_, _ = w.WriteString(cc.proto)
	if req.Host != nil {
		_, _ = w.WriteString("\r\nX-Forwarded-Host: ")
		_, _ = w.Write(req.Host)
	}
	_, _ = w.WriteString("\r\n")
	if req.Chunked {
		_, _ = w.WriteString("Transfer-Encoding: chunked\r\n")
	} else if req.ContentLength >= 0 {
		_, _ = w.WriteString("Content-Length: ")
		writeInt(w, req.ContentLength)
		_, _ = w.WriteString("\r\n")
	}
	if req.ConnUpgrade {
		_, _ = w.WriteString("Connection: Upgrade\r\nUpgrade: ")
		_, _ = w.Write(req.Upgrade)
		_, _ = w.WriteString("\r\n")
	}
	_, _ = w.WriteString("\r\n")
}

// bodyResult is how sending a request body ended.
type bodyResult struct {
	readErr bool // the failure was reading from the client
	err     error
}

// sendBody copies the request body to the node and flushes. It runs on
// the connection goroutine, or on its own goroutine while the response is
// read (streaming), never on both at once.
func (cc *clientConn) sendBody(bc *bconn) bodyResult {
	req := &cc.req
	var res bodyResult
	if req.ContentLength > 0 {
		_, res.readErr, res.err = copyN(bc.w, cc.r, req.ContentLength)
	} else if req.Chunked {
		_, res.readErr, res.err = copyChunked(bc.w, cc.r, true, cc.p.cfg.MaxBodyBytes)
	}
	if res.err == nil {
		res.err = bc.w.Flush()
	}
	return res
}

// answerBodyError answers a request whose body could not be read from
// the client; it reports false when the failure was on the node's side.
func (cc *clientConn) answerBodyError(res bodyResult) bool {
	switch {
	case errors.Is(res.err, errLimit):
		cc.simple(413, "Content Too Large", "request body larger than "+strconv.FormatInt(cc.p.cfg.MaxBodyBytes, 10)+" bytes\n", nil)
	case errors.Is(res.err, ErrMalformed):
		cc.simple(400, "Bad Request", "malformed chunked body\n", nil)
	case res.readErr:
		// The client went away or stalled mid-body: nobody to answer.
	default:
		return false
	}
	return true
}

// bodyStream is a request body being sent on its own goroutine.
type bodyStream struct {
	ch   chan bodyResult
	done bool // the result was received (owned by the connection goroutine)
}

// streamBody is the body goroutine: it sends the body and, on failure,
// closes the node connection so the response read ends too.
func (cc *clientConn) streamBody(bc *bconn, bs *bodyStream) {
	defer func() {
		if v := recover(); v != nil {
			cc.p.hookPanic("request body", v)
			bc.close()
			bs.ch <- bodyResult{err: errHookPanicked}
		}
	}()
	res := cc.sendBody(bc)
	if res.err != nil {
		bc.close()
	}
	bs.ch <- res
}

// finishBody waits for a streaming body once the response is done: it
// gives the body a moment to end, then cuts it (the node answered without
// reading it all). It reports whether the body ended well.
func (cc *clientConn) finishBody(bc *bconn, bs *bodyStream) bool {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	var res bodyResult
	select {
	case res = <-bs.ch:
	case <-t.C:
		_ = cc.c.SetReadDeadline(time.Unix(1, 0))
		bc.close()
		res = <-bs.ch
		res.err = errors.New("request body cut: the node answered first")
	}
	bs.done = true
	return res.err == nil
}

// bodyFailed waits for a streaming body after the node connection was
// closed, and answers for it if the client side failed.
func (cc *clientConn) bodyFailed(bs *bodyStream) bool {
	if bs.done {
		return false
	}
	res := <-bs.ch
	bs.done = true
	return res.err != nil && cc.answerBodyError(res)
}

// exchange sends the request to one node and forwards its response.
func (cc *clientConn) exchange(bc *bconn, node Node, keepAlive, mayMiss bool) (result outcome) {
	p := cc.p
	req := &cc.req
	be := bc.be
	cc.writeRequestHead(bc.w)
	hasBody := req.Chunked || req.ContentLength > 0
	// A body already in the buffer (the common small POST) is sent with
	// the head; otherwise it streams on its own goroutine while the
	// response is read, so that both directions flow at once.
	var bs *bodyStream
	// The response head deadline runs from before the request is sent.
	bc.r.lazyDeadline(time.Now(), p.cfg.ResponseHeaderTimeout)
	if !hasBody || !req.Chunked && int64(cc.r.buffered()) >= req.ContentLength {
		res, ok := bc.sendThenRead(cc)
		if !ok {
			res = cc.sendBody(bc)
		}
		if res.err != nil {
			bc.close()
			if !hasBody {
				if bc.reused {
					return exStale
				}
				return exNodeFail
			}
			if !cc.answerBodyError(res) {
				cc.simple(502, "Bad Gateway", "node failed while receiving the request\n", nil)
			}
			return exClose
		}
	} else {
		bs = &bodyStream{ch: make(chan bodyResult, 1)}
		go cc.streamBody(bc, bs)
		defer func() {
			if !bs.done && !cc.finishBody(bc, bs) {
				bc.close()
				result = exClose
			}
		}()
	}
	bodyFailed := func() bool { return bs != nil && cc.bodyFailed(bs) }

	upgrade := req.ConnUpgrade
	resp := &bc.resp
	for first := true; ; first = false {
		if !first {
			bc.r.lazyDeadline(time.Now(), p.cfg.ResponseHeaderTimeout)
		}
		raw, err := bc.r.readHead(nil)
		if err != nil {
			bc.close()
			if bodyFailed() {
				return exClose
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				cc.simple(504, "Gateway Timeout", "node did not answer in time\n", nil)
				return exClose
			}
			if bc.r.buffered() == 0 && !errors.Is(err, errHeadTooLarge) && !errors.Is(err, io.ErrUnexpectedEOF) {
				if bc.reused {
					return exStale
				}
				return exNodeFail
			}
			cc.simple(502, "Bad Gateway", "node sent a broken response\n", nil)
			return exClose
		}
		if err := parseResponseHead(raw, resp, p.cfg.MaxHeaderFields, p.missLower); err != nil {
			bc.close()
			if bodyFailed() {
				return exClose
			}
			p.log.Warn("balancer: malformed response from node", "node", node.ID, "err", err)
			cc.simple(502, "Bad Gateway", "node sent a malformed response\n", nil)
			return exClose
		}
		if resp.Status >= 200 || resp.Status == 101 {
			break
		}
		if resp.Status == 100 {
			continue
		}
		// Other 1xx (103 Early Hints): pass on.
		cc.writeResponseHead(resp, false, -2)
		if err := cc.w.Flush(); err != nil {
			bc.close()
			return exClose
		}
	}
	// The head deadline stays until a body read needs the connection
	// (setBodyDeadline clears it): most bodies are already buffered.
	if be.markOK() {
		p.log.Info("balancer: node is back", "node", be.id, "addr", be.addr)
	}

	if resp.Status == 101 {
		if !upgrade {
			bc.close()
			cc.simple(502, "Bad Gateway", "node switched protocols unasked\n", nil)
			return exClose
		}
		if bs != nil && !bs.done && !cc.finishBody(bc, bs) {
			bc.close()
			return exClose
		}
		cc.writeResponseHead(resp, false, -2)
		cc.tunnel(bc)
		return exClose
	}

	if mayMiss && resp.MissMark && resp.Status == 404 && p.cfg.OnMiss != nil {
		if cc.drainResponse(bc) {
			be.put(bc, p.cfg.MaxIdlePerNode)
		} else {
			bc.close()
		}
		return exMiss
	}

	noBody := cc.isHead || resp.Status == 204 || resp.Status == 304
	reuseBackend := !resp.ConnClose && (resp.Minor == 1 || resp.ConnKeepAlive)
	clientClose := !keepAlive
	var length int64 = -1 // -1: chunked to client, -2: none, -3: until EOF
	switch {
	case noBody:
		length = -2
	case resp.Chunked:
		if req.Minor == 0 {
			length = -3
			clientClose = true
		} else {
			length = -1
		}
	case resp.ContentLength >= 0:
		length = resp.ContentLength
	default:
		length = -3
		reuseBackend = false
		clientClose = true
	}
	if resp.Chunked && !noBody {
		// A body already broken in what came with the head is answered
		// with 502, not relayed until it breaks.
		if err := http1.CheckChunkedPrefix(bc.r.buf[bc.r.r:bc.r.w], http1.ChunkedLimits{}); err != nil {
			bc.close()
			if bodyFailed() {
				return exClose
			}
			p.log.Warn("balancer: malformed chunked response from node", "node", node.ID, "err", err)
			cc.simple(502, "Bad Gateway", "node sent a malformed response body\n", nil)
			return exClose
		}
	}
	cc.writeResponseHeadFramed(resp, clientClose, length, noBody, keepAlive && req.Minor == 0)

	var readErr bool
	var err error
	switch {
	case noBody:
		err = nil
	case resp.Chunked:
		_, readErr, err = copyChunked(cc.w, bc.r, req.Minor == 1, 0)
	case resp.ContentLength >= 0:
		_, readErr, err = copyN(cc.w, bc.r, resp.ContentLength)
	default:
		readErr, err = copyUntilEOF(cc.w, bc.r)
	}
	if err == nil {
		err = cc.w.Flush()
		readErr = false
	}
	if err != nil {
		bc.close()
		if readErr {
			p.log.Warn("balancer: node failed mid-response", "node", node.ID, "host", string(cc.host), "err", err)
		}
		return exClose
	}
	if bs != nil && !bs.done && !cc.finishBody(bc, bs) {
		bc.close()
		return exClose
	}
	if reuseBackend {
		be.put(bc, p.cfg.MaxIdlePerNode)
	} else {
		bc.close()
	}
	if clientClose {
		return exClose
	}
	return exDone
}

// drainResponse reads and drops a small framed response body so the
// connection can be reused. It reports whether it could.
func (cc *clientConn) drainResponse(bc *bconn) bool {
	resp := &bc.resp
	if resp.ConnClose {
		return false
	}
	discard := bufio.NewWriterSize(io.Discard, 512)
	switch {
	case resp.Chunked:
		_, _, err := copyChunked(discard, bc.r, false, 1<<20)
		return err == nil
	case resp.ContentLength >= 0 && resp.ContentLength <= 1<<20:
		_, _, err := copyN(discard, bc.r, resp.ContentLength)
		return err == nil
	case resp.ContentLength < 0:
		return false
	}
	return false
}

// writeResponseHead writes a 1xx or 101 head as received (minus hop-by-hop
// fields; Upgrade is put back for 101).
func (cc *clientConn) writeResponseHead(resp *head, _ bool, _ int64) {
	w := cc.w
	writeStatusLine(w, resp)
	writeFields(w, resp.Fields)
	if resp.Status == 101 {
		_, _ = w.WriteString("Connection: Upgrade\r\n")
		if resp.Upgrade != nil {
			_, _ = w.WriteString("Upgrade: ")
			_, _ = w.Write(resp.Upgrade)
			_, _ = w.WriteString("\r\n")
		}
	}
	_, _ = w.WriteString("\r\n")
}

func (cc *clientConn) writeResponseHeadFramed(resp *head, clientClose bool, length int64, noBody, keepAlive10 bool) {
	w := cc.w
	writeStatusLine(w, resp)
	writeFields(w, resp.Fields)
	switch {
	case noBody:
		if resp.ContentLength >= 0 {
			_, _ = w.WriteString("Content-Length: ")
			writeInt(w, resp.ContentLength)
			_, _ = w.WriteString("\r\n")
		} else if resp.Chunked {
			_, _ = w.WriteString("Transfer-Encoding: chunked\r\n")
		}
	case length >= 0:
		_, _ = w.WriteString("Content-Length: ")
		writeInt(w, length)
		_, _ = w.WriteString("\r\n")
	case length == -1:
		_, _ = w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if clientClose {
		_, _ = w.WriteString("Connection: close\r\n")
	} else if keepAlive10 {
		_, _ = w.WriteString("Connection: keep-alive\r\n")
	}
	_, _ = w.WriteString("\r\n")
}

var statusPrefix = "HTTP/1.1 "

func writeStatusLine(w *bufio.Writer, resp *head) {
	_, _ = w.WriteString(statusPrefix)
	writeInt(w, int64(resp.Status))
	_ = w.WriteByte(' ')
	_, _ = w.Write(resp.Reason)
	_, _ = w.WriteString("\r\n")
}

func writeFields(w *bufio.Writer, fields []field) {
	for i := range fields {
		f := &fields[i]
		if f.Drop {
			continue
		}
		_, _ = w.Write(f.Name)
		_, _ = w.WriteString(": ")
		_, _ = w.Write(f.Value)
		_, _ = w.WriteString("\r\n")
	}
}

// tunnel copies bytes both ways between the client and the node after a
// 101 answer, until both directions end.
func (cc *clientConn) tunnel(bc *bconn) {
	defer func() { _ = bc.c.Close() }()
	if cc.closed.Load() {
		return
	}
	if err := cc.w.Flush(); err != nil {
		return
	}
	_ = cc.c.SetDeadline(time.Time{})
	_ = bc.c.SetDeadline(time.Time{})
	cc.r.deadline, cc.r.dl = 0, time.Time{}
	bc.r.deadline, bc.r.dl = 0, time.Time{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// node -> client: buffered bytes first.
		if n := bc.r.buffered(); n > 0 {
			if _, err := cc.c.Write(bc.r.buf[bc.r.r:bc.r.w]); err != nil {
				_ = bc.c.Close()
				return
			}
			bc.r.r = bc.r.w
		}
		_, _ = io.Copy(cc.c, bc.c)
		closeWrite(cc.c)
	}()
	if n := cc.r.buffered(); n > 0 {
		if _, err := bc.c.Write(cc.r.buf[cc.r.r:cc.r.w]); err == nil {
			cc.r.r = cc.r.w
			_, _ = io.Copy(bc.c, cc.c)
		}
	} else {
		_, _ = io.Copy(bc.c, cc.c)
	}
	closeWrite(bc.c)
	select {
	case <-done:
	case <-time.After(cc.p.cfg.IdleTimeout):
		_ = bc.c.Close()
		cc.forceClose()
		<-done
	}
}

func closeWrite(c net.Conn) {
	type cw interface{ CloseWrite() error }
	if x, ok := c.(cw); ok {
		_ = x.CloseWrite()
		return
	}
	_ = c.Close()
}
