package evproxy

import (
	"fmt"
	"strconv"
	"syscall"

	"github.com/paaskit/paaskit/internal/http1"
	"golang.org/x/sys/unix"
)

// Response body modes.
const (
	bodyNone = iota
	bodyLength
	bodyChunked
	bodyEOF
)

// route asks the handler and starts the exchange.
func (l *loop) route(c *cconn) {
	c.req.Tag = nil
	c.req.Tried = c.req.Tried[:0]
	c.staleRetry = false
	l.routeAgain(c)
}

func (l *loop) routeAgain(c *cconn) {
	if len(c.req.Tried) >= 8 {
		l.reply(c, 502, "Bad Gateway", "cannot reach a node\n", nil)
		return
	}
	dec, ok := l.callRoute(c)
	if !ok {
		l.reply(c, 502, "Bad Gateway", "the proxy's route hook failed\n", nil)
		return
	}
	c.dec = dec
	switch c.dec.Action {
	case Reply:
		l.reply(c, c.dec.Status, c.dec.Reason, c.dec.Body, c.dec.Extra)
		return
	case Handoff:
		l.handoff(c)
		return
	}
	c.routed = true
	tp := l.pool(c.dec.Target)
	if tp == nil {
		// Not a literal address: the goroutine path can resolve it.
		l.done(c, Aborted)
		l.handoff(c)
		return
	}
	l.nreq.Add(1)
	l.buildRequest(c)
	l.startExchange(c, tp, false)
}

func (l *loop) startExchange(c *cconn, tp *tpool, fresh bool) {
	var b *bconn
	if !fresh && len(tp.idle) > 0 {
		b = tp.idle[len(tp.idle)-1]
		tp.idle[len(tp.idle)-1] = nil
		tp.idle = tp.idle[:len(tp.idle)-1]
		tp.nidle.Add(-1)
		b.reused = true
	} else {
		var err error
		b, err = l.dial(tp)
		if err != nil {
			l.connectFailed(c, ConnectFailed)
			return
		}
	}
	b.owner = c
	tp.active++
	tp.lastUse = l.now
	c.be = b
	c.so = 0
	if b.connecting {
		c.state = stConnect
		c.deadline = l.now + int64(l.p.cfg.DialTimeout)
	} else {
		c.state = stSend
		c.deadline = l.now + int64(l.p.cfg.ResponseHeaderTimeout)
	}
}

// connectFailed: nothing was sent; ask the handler for another target.
func (l *loop) connectFailed(c *cconn, o Outcome) {
	if c.be != nil {
		l.closeTarget(c.be)
		c.be = nil
	}
	l.done(c, o)
	c.req.Tried = append(c.req.Tried, c.dec.ID)
	l.routeAgain(c)
}

// targetFailed: the connection broke before any response byte (e is
// the error, 0 for an orderly close).
func (l *loop) targetFailed(c *cconn, e syscall.Errno) {
	b := c.be
	reused := b.reused
	tp := b.pool
	l.closeTarget(b)
	c.be = nil
	// The target never took a request it did not read: a write that
	// failed (EPIPE) or a reset (ECONNRESET) on a pooled connection
	// means it had dropped the connection before the request came, so
	// even a request with a body (wholly buffered here) can be sent
	// again. An orderly close after the send may mean the request was
	// read, so only a replayable request is sent again then.
	unread := e == unix.EPIPE || e == unix.ECONNRESET
	switch {
	case reused && (c.dec.Replayable || unread) && !c.staleRetry:
		// A pooled connection the target had closed: the others
		// probably are too. Retry once on a fresh one.
		c.staleRetry = true
		l.closeIdle(tp)
		l.startExchange(c, tp, true)
	case reused:
		l.done(c, Stale)
		l.reply(c, 502, "Bad Gateway", "node closed the connection\n", nil)
	case c.dec.Replayable:
		l.done(c, Failed)
		c.req.Tried = append(c.req.Tried, c.dec.ID)
		c.staleRetry = false
		l.routeAgain(c)
	default:
		l.done(c, Failed)
		l.reply(c, 502, "Bad Gateway", "node failed before answering\n", nil)
	}
}

// buildRequest writes the forwarded request (head and body) into c.send.
func (l *loop) buildRequest(c *cconn) {
	h := &c.head
	s := http1.AppendRequestHead(c.send[:0], h, nil, c.ip, l.p.cfg.Proto, l.p.cfg.KeepForwarded)
	if h.ContentLength > 0 {
		end := c.ir + c.reqLen
		s = append(s, c.in[end-int(h.ContentLength):end]...)
	} else if h.Chunked {
		s = append(s, c.rqBody...) // checked and re-encoded by readChunkedBody
	}
	c.send = s
}

// readResponseHead reads and handles the response head; it reports
// whether c's state changed.
func (l *loop) readResponseHead(c *cconn) bool {
	cfg := &l.p.cfg
	b := c.be
	for {
		hl := http1.HeadEnd(b.buf[b.r:b.w])
		if hl >= 0 {
			if hl > cfg.MaxHeaderBytes {
				l.brokenResponse(c, "node sent a broken response\n")
				return true
			}
			if l.gotHead(c, hl) {
				return true
			}
			continue // 1xx
		}
		if b.w-b.r >= cfg.MaxHeaderBytes {
			l.brokenResponse(c, "node sent a broken response\n")
			return true
		}
		if !b.canRead {
			return false
		}
		if b.w == len(b.buf) {
			if b.r > 0 {
				b.w = copy(b.buf, b.buf[b.r:b.w])
				b.r = 0
			} else {
				nb := make([]byte, min(2*len(b.buf), cfg.MaxHeaderBytes+1))
				copy(nb, b.buf[:b.w])
				b.buf = nb
			}
		}
		space := len(b.buf) - b.w
		n, e := rawRead(b.fd, b.buf[b.w:])
		if e == unix.EAGAIN {
			b.canRead = false
			return false
		}
		if e == unix.EINTR {
			continue
		}
		if e != 0 || n == 0 {
			if b.w > b.r {
				l.brokenResponse(c, "node sent a broken response\n")
				return true
			}
			l.targetFailed(c, e)
			return true
		}
		b.w += n
		if n < space && !b.hup {
			b.canRead = false
		}
	}
}

func (l *loop) brokenResponse(c *cconn, msg string) {
	l.closeTarget(c.be)
	c.be = nil
	l.done(c, Broken)
	l.reply(c, 502, "Bad Gateway", msg, nil)
}

// gotHead handles a whole response head of length hl in the target
// buffer; it reports false for a 1xx that was passed on (read the next).
func (l *loop) gotHead(c *cconn, hl int) bool {
	cfg := &l.p.cfg
	b := c.be
	resp := &c.resp
	if err := http1.ParseResponseHead(b.buf[b.r:b.r+hl], resp, cfg.MaxHeaderFields, cfg.MissHeader); err != nil {
		cfg.Logger.Warn("evproxy: malformed response", "target", b.pool.t.Addr, "err", err)
		l.brokenResponse(c, "node sent a malformed response\n")
		return true
	}
	if p := cfg.DropFieldPrefix; p != "" {
		http1.DropPrefixed(resp.Fields, p)
	}
	if resp.Status < 200 {
		if resp.Status == 101 {
			l.brokenResponse(c, "node switched protocols unasked\n")
			return true
		}
		if resp.Status != 100 {
			l.writeHead(c, resp, -2, false)
		}
		b.r += hl
		return false
	}
	if resp.MissMark && resp.Status == 404 && c.dec.HandoffOnMiss {
		l.closeTarget(b)
		c.be = nil
		l.done(c, Missed)
		c.out, c.oo = c.out[:0], 0
		l.handoff(c)
		return true
	}
	b.r += hl
	if resp.Chunked && !isHeadReq(&c.head) && resp.Status != 204 && resp.Status != 304 {
		// A body already broken in what came with the head is answered
		// with 502, not relayed until it breaks.
		if err := http1.CheckChunkedPrefix(b.buf[b.r:b.w], http1.ChunkedLimits{}); err != nil {
			cfg.Logger.Warn("evproxy: malformed chunked response", "target", b.pool.t.Addr, "err", err)
			l.brokenResponse(c, "node sent a malformed response body\n")
			return true
		}
	}
	l.done(c, Answered)
	isHead := isHeadReq(&c.head)
	c.reuse = !resp.ConnClose && (resp.Minor == 1 || resp.ConnKeepAlive)
	c.clientClose = c.head.ConnClose || l.draining
	length := int64(-2)
	switch {
	case isHead || resp.Status == 204 || resp.Status == 304:
		c.mode = bodyNone
	case resp.Chunked:
		c.mode = bodyChunked
		c.chunks.Reset()
		length = -1
	case resp.ContentLength >= 0:
		c.mode = bodyLength
		c.remain = resp.ContentLength
		length = resp.ContentLength
	default:
		c.mode = bodyEOF
		c.reuse = false
		c.clientClose = true
		length = -3
	}
	l.writeHead(c, resp, length, c.clientClose)
	// A target that writes its head and its body apart (gunicorn does,
	// in two sends) would otherwise cost the client two segments, so
	// two wake-ups and reads, and the loop two writes: the head waits
	// for the body's first bytes and goes out with them, as nginx's
	// postpone_output does. Only a head with a Content-Length body
	// waits, and only for bytes the target is sending now; a chunked or
	// close-delimited body (a stream, perhaps a long poll) is not held.
	c.holdHead = c.mode == bodyLength && c.remain > 0 && b.r == b.w
	c.state = stBody
	c.deadline = l.now + int64(cfg.IdleTimeout)
	return true
}

// writeHead appends a response head to c.out. length: >= 0 a
// Content-Length, -1 chunked, -2 as received (no body), -3 none.
func (l *loop) writeHead(c *cconn, resp *http1.Head, length int64, closeConn bool) {
	o := c.out
	o = append(o, "HTTP/1.1 "...)
	o = strconv.AppendInt(o, int64(resp.Status), 10)
	o = append(o, ' ')
	o = append(o, resp.Reason...)
	o = append(o, "\r\n"...)
	o = http1.AppendFields(o, resp.Fields)
	switch {
	case length >= 0:
		o = append(o, "Content-Length: "...)
		o = strconv.AppendInt(o, length, 10)
		o = append(o, "\r\n"...)
	case length == -1:
		o = append(o, "Transfer-Encoding: chunked\r\n"...)
	case length == -2 && resp.Status >= 200:
		if resp.ContentLength >= 0 {
			o = append(o, "Content-Length: "...)
			o = strconv.AppendInt(o, resp.ContentLength, 10)
			o = append(o, "\r\n"...)
		} else if resp.Chunked {
			o = append(o, "Transfer-Encoding: chunked\r\n"...)
		}
	}
	if closeConn {
		o = append(o, "Connection: close\r\n"...)
	}
	o = append(o, "\r\n"...)
	c.out = o
}

// pump forwards the response body; it reports whether c's state changed.
func (l *loop) pump(c *cconn) bool {
	b := c.be
	for {
		fin, err := l.moveBody(c)
		if err != nil {
			l.p.cfg.Logger.Warn("evproxy: node failed mid-response", "target", b.pool.t.Addr, "err", err)
			if l.flush(c) { // best effort: what was valid, then the cut
				l.closeClient(c)
			} else if c.state != stDead {
				l.closeClient(c)
			}
			return false
		}
		if c.holdHead && !fin && c.remain == c.resp.ContentLength {
			// Nothing of the body yet: read the target before writing.
		} else if c.holdHead = false; !l.flush(c) {
			if c.state == stDead {
				return false
			}
			if c.rdhup {
				l.abort(c)
			}
			return false
		}
		if fin {
			l.finish(c)
			return true
		}
		if c.rdhup {
			l.abort(c)
			return false
		}
		if !b.canRead {
			return false
		}
		if b.r == b.w {
			b.r, b.w = 0, 0
		} else if b.r > 0 {
			b.w = copy(b.buf, b.buf[b.r:b.w])
			b.r = 0
		}
		space := len(b.buf) - b.w
		n, e := rawRead(b.fd, b.buf[b.w:])
		if e == unix.EAGAIN {
			b.canRead = false
			return false
		}
		if e == unix.EINTR {
			continue
		}
		if e != 0 || n == 0 {
			if e == 0 && c.mode == bodyEOF {
				l.finish(c)
				return true
			}
			l.p.cfg.Logger.Warn("evproxy: node failed mid-response", "target", b.pool.t.Addr, "err", errnoOrEOF(e))
			l.closeClient(c)
			return false
		}
		b.w += n
		if n < space && !b.hup {
			b.canRead = false
		}
		c.deadline = l.now + int64(l.p.cfg.IdleTimeout)
	}
}

func errnoOrEOF(e syscall.Errno) error {
	if e == 0 {
		return fmt.Errorf("connection closed mid-body")
	}
	return e
}

// moveBody moves buffered body bytes from the target buffer to c.out,
// decoding and re-encoding chunked framing; it reports whether the body
// is complete.
func (l *loop) moveBody(c *cconn) (bool, error) {
	b := c.be
	switch c.mode {
	case bodyNone:
		return true, nil
	case bodyLength:
		k := min(c.remain, int64(b.w-b.r))
		c.out = append(c.out, b.buf[b.r:b.r+int(k)]...)
		b.r += int(k)
		c.remain -= k
		return c.remain == 0, nil
	case bodyEOF:
		c.out = append(c.out, b.buf[b.r:b.w]...)
		b.r = b.w
		return false, nil
	}
	// Chunked: decoded by the shared codec and re-encoded, one chunk
	// per run of data, so that nothing the target framed passes on
	// unchecked.
	for b.r < b.w && !c.chunks.Done() {
		n, data, err := c.chunks.Decode(b.buf[b.r:b.w])
		b.r += n
		if err != nil {
			return false, err
		}
		if len(data) > 0 {
			c.out = http1.AppendChunkHeader(c.out, int64(len(data)))
			c.out = append(c.out, data...)
			c.out = append(c.out, http1.CRLF...)
		}
	}
	if !c.chunks.Done() {
		return false, nil
	}
	c.out = http1.AppendLastChunk(c.out, c.chunks.Trailers())
	c.mode = bodyNone // the end is written once, whatever flush does
	return true, nil
}

func isHeadReq(h *http1.Head) bool { return string(h.Method) == "HEAD" }

// finish ends an exchange whose response was wholly forwarded.
func (l *loop) finish(c *cconn) {
	b := c.be
	c.be = nil
	tp := b.pool
	l.end(c)
	if c.reuse && b.r == b.w && !b.hup && !l.draining && !tp.retired && len(tp.idle) < l.p.cfg.MaxIdlePerTarget {
		b.owner = nil
		tp.active--
		tp.lastUse = l.now
		b.r, b.w = 0, 0
		tp.idle = append(tp.idle, b)
		tp.nidle.Add(1)
	} else {
		l.closeTarget(b)
	}
	c.ir += c.reqLen
	c.reqLen = 0
	c.req.Tag = nil
	c.head.Method = nil // its bytes are consumed
	if c.clientClose {
		c.state = stClose
		c.deadline = l.now + int64(l.p.cfg.IdleTimeout)
		return
	}
	c.state = stRead
	if c.ir == c.iw {
		c.deadline = l.now + int64(l.p.cfg.IdleTimeout)
	} else {
		c.deadline = l.now + int64(l.p.cfg.ReadHeaderTimeout)
	}
}
