package connproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/paaskit/paaskit/internal/http1"
)

// outcome of one exchange with a target.
type outcome int

const (
	exDone     outcome = iota // response forwarded; client may continue
	exClose                   // response forwarded or answered; close the client
	exStale                   // reused connection died before any response byte; retry fresh
	exNodeFail                // the target failed before answering, nothing answered; try the next
	exMiss                    // the target answered a miss (already drained)
	exUnread                  // a pooled connection was dropped with the request (and its buffered body) unread: send again
)

// maxTried bounds the targets one request tries.
const maxTried = 8

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
		cc.host, ok = http1.NormalizeHost(cc.host[:0], req.Host)
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
	p.requests.Add(1)
	r := &cc.rq
	*r = Request{Head: req, ClientIP: cc.ip, Tried: r.Tried[:0], Scratch: r.Scratch, Ctx: cc.ctx}
	missed := false
	staleRetries := 0
	continueSent := false
	for {
		r.Tag = nil
		d, ok := cc.route()
		if !ok {
			cc.simple(502, "Bad Gateway", "the proxy failed on this request\n", nil)
			return false
		}
		if d.Action != Forward {
			return cc.reply(&d, keepAlive)
		}
		if d.Pool == nil {
			cc.end()
			p.log.Error("connproxy: a Forward decision without a Pool", "host", string(cc.host))
			cc.simple(502, "Bad Gateway", "no route for "+string(cc.host)+"\n", nil)
			return false
		}
		bc, err := d.Pool.get(cc.ctx, p.cfg.DialTimeout, p.cfg.MaxHeaderBytes, staleRetries > 0)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
				cc.done(TimedOut)
			} else {
				cc.done(ConnectFailed)
			}
			cc.end()
			if len(r.Tried) < maxTried && !continueSent {
				r.Tried = append(r.Tried, d.ID)
				continue
			}
			cc.simple(502, "Bad Gateway", "cannot reach a node for "+string(cc.host)+"\n", nil)
			return false
		}
		if req.Expect100 && hasBody && !continueSent {
			continueSent = true
			_, _ = cc.w.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if err := cc.w.Flush(); err != nil {
				bc.pool.put(bc)
				cc.end()
				return false
			}
		}
		// exchange returns once the response is wholly relayed or cut
		// (a tunnel closed), which is when the exchange ends.
		cc.node.Store(&bc.c)
		if cc.closed.Load() {
			// forceClose came first and did not see this connection.
			cc.node.Store(nil)
			bc.close()
			cc.end()
			return false
		}
		m, _ := p.cfg.Handler.(Misser)
		out := cc.exchange(bc, keepAlive, d.MayMiss && d.Replayable && m != nil && !missed)
		cc.node.Store(nil)
		switch out {
		case exStale, exUnread:
			cc.done(Stale)
		case exNodeFail:
			cc.done(Failed)
		}
		cc.end()
		if cc.closed.Load() {
			// Cut by the shutdown (or a stalled tunnel): whatever the
			// target did, nothing is to be retried.
			return false
		}
		switch out {
		case exDone:
			return keepAlive
		case exClose:
			return false
		case exStale:
			d.Pool.CloseIdle()
			if staleRetries == 0 && d.Replayable {
				staleRetries++
				continue
			}
			cc.simple(502, "Bad Gateway", "node closed the connection\n", nil)
			return false
		case exUnread:
			d.Pool.CloseIdle()
			if staleRetries == 0 {
				staleRetries++
				continue
			}
			cc.simple(502, "Bad Gateway", "node closed the connection\n", nil)
			return false
		case exNodeFail:
			if d.Replayable && len(r.Tried) < maxTried {
				r.Tried = append(r.Tried, d.ID)
				continue
			}
			cc.simple(502, "Bad Gateway", "node failed before answering\n", nil)
			return false
		case exMiss:
			missed = true
			if err := cc.miss(m, d.ID); err != nil {
				p.log.Warn("connproxy: miss hook failed", "host", string(cc.host), "err", err)
				cc.simple(502, "Bad Gateway", "app not running for "+string(cc.host)+"\n", nil)
				return false
			}
			r.Tried = r.Tried[:0]
			staleRetries = 0
			continue
		}
	}
}

// writeRequestHead writes the forwarded request head to the target.
func (cc *clientConn) writeRequestHead(w *bufio.Writer) {
	_, _ = w.Write(http1.AppendRequestHead(w.AvailableBuffer(), &cc.req, cc.host, cc.ip, cc.proto, cc.p.cfg.KeepForwarded))
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
		_, res.readErr, res.err = copyChunked(bc.w, cc.r, true, cc.p.cfg.MaxBodyBytes, nil)
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
	case errors.Is(res.err, http1.ErrMalformed):
		cc.simple(400, "Bad Request", "malformed chunked body\n", nil)
	case res.readErr && cc.rw != nil:
		// net/http could not read the body (a malformed chunk, a cut).
		cc.simple(400, "Bad Request", "reading the request body: "+http1.Printable(res.err.Error())+"\n", nil)
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
func (cc *clientConn) exchange(bc *bconn, keepAlive, mayMiss bool) (result outcome) {
	p := cc.p
	req := &cc.req
	cc.writeRequestHead(bc.w)
	hasBody := req.Chunked || req.ContentLength > 0
	// A body already in the buffer (the common small POST) is sent with
	// the head; otherwise it streams on its own goroutine while the
	// response is read, so that both directions flow at once.
	var bs *bodyStream
	// The response head deadline runs from before the request is sent.
	bc.r.lazyDeadline(time.Now(), p.cfg.ResponseHeaderTimeout)
	// resend, for a body wholly buffered: where it starts in cc.r, so
	// that it can be sent again when a pooled connection turns out to
	// have been dropped unread (see exUnread).
	resend := -1
	if !hasBody || !req.Chunked && int64(cc.r.buffered()) >= req.ContentLength {
		if hasBody {
			resend = cc.r.r
		}
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
			if bc.reused && !res.readErr {
				// The send failed on a pooled connection: the target
				// had dropped it and took none of the request.
				cc.r.r = resend
				return exUnread
			}
			if !cc.answerBodyError(res) {
				cc.simple(502, "Bad Gateway", "node failed while receiving the request\n", nil)
			}
			return exClose
		}
	} else {
		bs = &bodyStream{ch: make(chan bodyResult, 1)}
		if cc.rw != nil {
			cc.rw.fullDuplex()
		}
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
				cc.done(TimedOut)
				cc.simple(504, "Gateway Timeout", "node did not answer in time (response timeout)\n", nil)
				return exClose
			}
			if bc.r.buffered() == 0 && !errors.Is(err, errHeadTooLarge) && !errors.Is(err, io.ErrUnexpectedEOF) {
				if bc.reused && resend >= 0 && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
					// Reset before any response byte: the target
					// closed the pooled connection with the request
					// unread (a socket closed with data in it is reset).
					cc.r.r = resend
					return exUnread
				}
				if bc.reused {
					return exStale
				}
				return exNodeFail
			}
			cc.done(Broken)
			cc.simple(502, "Bad Gateway", "node sent a broken response\n", nil)
			return exClose
		}
		if err := http1.ParseResponseHead(raw, resp, p.cfg.MaxHeaderFields, p.cfg.MissHeader); err != nil {
			bc.close()
			if bodyFailed() {
				return exClose
			}
			cc.done(Broken)
			p.log.Warn("connproxy: malformed response", "host", string(cc.host), "err", err)
			cc.simple(502, "Bad Gateway", "node sent a malformed response\n", nil)
			return exClose
		}
		if pre := p.cfg.DropFieldPrefix; pre != "" {
			http1.DropPrefixed(resp.Fields, pre)
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
	if resp.Status == 101 && !upgrade {
		bc.close()
		cc.done(Broken)
		cc.simple(502, "Bad Gateway", "node switched protocols unasked\n", nil)
		return exClose
	}
	if mayMiss && resp.MissMark && resp.Status == 404 {
		cc.done(Missed)
		if cc.drainResponse(bc) {
			bc.pool.put(bc)
		} else {
			bc.close()
		}
		return exMiss
	}
	cc.done(Answered)

	if resp.Status == 101 {
		if bs != nil && !bs.done && !cc.finishBody(bc, bs) {
			bc.close()
			return exClose
		}
		if cc.rw != nil && !cc.hijack() {
			bc.close()
			cc.simple(502, "Bad Gateway", "cannot switch protocols on this connection\n", nil)
			return exClose
		}
		cc.writeResponseHead(resp, false, -2)
		cc.tunnel(bc)
		return exClose
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
			p.log.Warn("connproxy: malformed chunked response", "host", string(cc.host), "err", err)
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
		if cc.rw != nil {
			_, readErr, err = copyChunked(cc.w, bc.r, false, 0, cc.rw.trailers)
		} else {
			_, readErr, err = copyChunked(cc.w, bc.r, req.Minor == 1, 0, nil)
		}
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
			p.log.Warn("connproxy: target failed mid-response", "host", string(cc.host), "err", err)
		}
		return exClose
	}
	if cc.rw != nil {
		cc.rw.relayed = true
	}
	if bs != nil && !bs.done && !cc.finishBody(bc, bs) {
		bc.close()
		return exClose
	}
	if reuseBackend {
		bc.pool.put(bc)
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
		_, _, err := copyChunked(discard, bc.r, false, 1<<20, nil)
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
func (cc *clientConn) writeResponseHead(resp *http1.Head, _ bool, _ int64) {
	if cc.rw != nil {
		cc.rw.head(resp)
		return
	}
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

func (cc *clientConn) writeResponseHeadFramed(resp *http1.Head, clientClose bool, length int64, noBody, keepAlive10 bool) {
	if cc.rw != nil {
		cc.rw.head(resp)
		return
	}
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

func writeStatusLine(w *bufio.Writer, resp *http1.Head) {
	_, _ = w.WriteString(statusPrefix)
	writeInt(w, int64(resp.Status))
	_ = w.WriteByte(' ')
	_, _ = w.Write(resp.Reason)
	_, _ = w.WriteString("\r\n")
}

func writeFields(w *bufio.Writer, fields []http1.Field) {
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

func discardWriter() *bufio.Writer { return bufio.NewWriterSize(io.Discard, 512) }
