package evproxy

import (
	"errors"
	"strconv"

	"github.com/paaskit/paaskit/internal/http1"
	"golang.org/x/sys/unix"
)

// Client connection states.
const (
	stRead    = iota // reading a request (idle, or part of one buffered)
	stConnect        // waiting for the target connection
	stSend           // writing the request to the target
	stResp           // waiting for the response head
	stBody           // forwarding the response body
	stClose          // flushing a last answer, then closing
	stDead           // closed or handed off
)

// cconn is a client connection.
type cconn struct {
	fd        int
	idx       int // in loop.conns
	ip        string
	in        []byte
	ir, iw    int // unconsumed request bytes: in[ir:iw]
	reqLen    int // bytes of the request being served, from ir
	headStart bool
	canRead   bool
	canWrite  bool
	rdhup     bool
	state     int
	deadline  int64

	out []byte // pending answer bytes: out[oo:]
	oo  int

	send []byte // the request as sent to the target
	so   int

	req        Request
	head       http1.Head
	resp       http1.Head
	be         *bconn
	dec        Decision
	routed     bool // Done is owed
	ending     bool // End is owed (Done said Answered; the body is under way)
	staleRetry bool

	mode        int
	remain      int64
	holdHead    bool                 // the response head waits in out for the body's first bytes
	chunks      http1.ChunkedDecoder // a chunked response body
	reuse       bool
	clientClose bool

	adm admission // Config.Gate slot and PROXY header state (limits_linux.go)

	// A chunked request body being buffered (readChunkedBody): the
	// decoder, how many body bytes after the head it consumed, and the
	// body re-encoded as it will be sent.
	rq       http1.ChunkedDecoder
	rqActive bool
	rqFed    int
	rqBody   []byte
}

// done reports o for the current Forward decision (once). Any outcome
// but Answered also ends the exchange; an answered one ends in end, when
// the body was relayed or cut.
func (l *loop) done(c *cconn, o Outcome) {
	if !c.routed {
		return
	}
	c.routed = false
	l.callDone(c, o)
	if o == Answered {
		c.ending = true
		return
	}
	c.ending = true
	l.end(c)
}

// end tells the handler the exchange is wholly over (once per Forward
// decision).
func (l *loop) end(c *cconn) {
	if !c.ending {
		return
	}
	c.ending = false
	if l.p.ender != nil {
		l.callEnd(c)
	}
}

// drive advances c as far as it can go without waiting.
func (l *loop) drive(c *cconn) {
	for {
		switch c.state {
		case stRead:
			if !l.readRequest(c) {
				return
			}
		case stConnect:
			b := c.be
			if !b.canWrite {
				return
			}
			soerr, err := unix.GetsockoptInt(b.fd, unix.SOL_SOCKET, unix.SO_ERROR)
			if err != nil || soerr != 0 {
				l.connectFailed(c, ConnectFailed)
				continue
			}
			b.connecting = false
			c.state = stSend
			c.deadline = l.now + int64(l.p.cfg.ResponseHeaderTimeout)
		case stSend:
			if c.rdhup {
				l.abort(c)
				return
			}
			b := c.be
			if !b.canWrite {
				return
			}
			n, e := rawWrite(b.fd, c.send[c.so:])
			if e == unix.EINTR {
				continue // (n is -1: nothing was written)
			}
			if e != 0 && e != unix.EAGAIN {
				l.targetFailed(c, e)
				continue
			}
			if e == 0 {
				c.so += n
			}
			if c.so < len(c.send) {
				// No room for all of it: wait for EPOLLOUT.
				b.canWrite = false
				if !b.outArmed && !l.armWrite(b, true) {
					l.targetFailed(c, 0)
					continue
				}
				return
			}
			if b.outArmed && b.pool.fam == unix.AF_UNIX {
				_ = l.armWrite(b, false)
			}
			c.state = stResp
		case stResp:
			if c.rdhup {
				l.abort(c)
				return
			}
			if !l.readResponseHead(c) {
				return
			}
		case stBody:
			if !l.pump(c) {
				return
			}
		case stClose:
			if !l.flush(c) {
				return
			}
			_ = unix.Shutdown(c.fd, unix.SHUT_WR)
			l.closeClient(c)
			return
		default:
			return
		}
	}
}

// flush writes pending answer bytes; it reports whether none are left. A
// write error closes the client.
func (l *loop) flush(c *cconn) bool {
	for c.oo < len(c.out) {
		if !c.canWrite {
			return false
		}
		n, e := rawWrite(c.fd, c.out[c.oo:])
		if e == unix.EAGAIN {
			c.canWrite = false
			return false
		}
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			l.closeClient(c)
			return false
		}
		c.oo += n
		if c.oo < len(c.out) {
			c.canWrite = false
			return false
		}
	}
	c.out = c.out[:0]
	c.oo = 0
	return true
}

// readRequest parses the next request from the buffer or reads more. It
// reports whether c's state changed (or more bytes came in).
func (l *loop) readRequest(c *cconn) bool {
	cfg := &l.p.cfg
	if c.ir < c.iw && (c.adm.preface == prefaceNone || l.preface(c)) {
		avail := c.in[c.ir:c.iw]
		if hl := http1.HeadEnd(avail); hl < 0 {
			if len(avail) >= cfg.MaxHeaderBytes {
				l.reply(c, 431, "Request Header Fields Too Large", "request head larger than the limit\n", nil)
				return true
			}
		} else {
			if hl > cfg.MaxHeaderBytes {
				l.reply(c, 431, "Request Header Fields Too Large", "request head larger than the limit\n", nil)
				return true
			}
			h := &c.head
			if err := http1.ParseRequestHead(avail[:hl], h, cfg.MaxHeaderFields, ""); err != nil {
				if err == http1.ErrTooManyFields {
					l.reply(c, 431, "Request Header Fields Too Large", "too many header fields\n", nil)
				} else {
					l.reply(c, 400, "Bad Request", "malformed request: "+http1.Printable(err.Error())+"\n", nil)
				}
				return true
			}
			if cfg.MaxBodyBytes > 0 && h.ContentLength > cfg.MaxBodyBytes {
				l.reply(c, 413, "Content Too Large", "request body larger than "+strconv.FormatInt(cfg.MaxBodyBytes, 10)+" bytes\n", nil)
				return true
			}
			if h.Minor == 0 || h.ConnUpgrade || h.Expect100 || h.ContentLength > int64(cfg.MaxBufferedBody) || l.draining {
				if l.draining {
					l.closeClient(c)
					return false
				}
				l.handoff(c)
				return false
			}
			need := hl
			if h.ContentLength > 0 {
				need += int(h.ContentLength)
			}
			if h.Chunked {
				switch l.readChunkedBody(c, avail[hl:]) {
				case chunkedDone:
					need += c.rqFed
				case chunkedMore:
					if !c.canRead {
						// The client paused mid-body (it may be
						// streaming, waiting for the answer to go
						// on): the goroutine path streams it.
						l.handoff(c)
						return false
					}
					need = len(avail) + 1 // read on
				case chunkedHandoff:
					l.handoff(c)
					return false
				case chunkedAnswered:
					return true
				}
			}
			if len(avail) >= need {
				c.reqLen = need
				l.route(c)
				return true
			}
		}
	}
	if !c.canRead {
		return false
	}
	// Make room.
	if c.ir == c.iw {
		c.ir, c.iw = 0, 0
	}
	if c.in == nil {
		c.in = make([]byte, initialIn)
	}
	if c.iw == len(c.in) {
		if c.ir > 0 {
			c.iw = copy(c.in, c.in[c.ir:c.iw])
			c.ir = 0
		} else {
			limit := cfg.MaxHeaderBytes + cfg.MaxBufferedBody
			if len(c.in) >= limit {
				// A whole head was parsed (else 431 above) and the
				// body fits: cannot happen; be safe.
				l.reply(c, 431, "Request Header Fields Too Large", "request larger than the buffer\n", nil)
				return true
			}
			nb := make([]byte, min(2*len(c.in), limit))
			copy(nb, c.in[:c.iw])
			c.in = nb
		}
	}
	space := len(c.in) - c.iw
	n, e := rawRead(c.fd, c.in[c.iw:])
	if e == unix.EAGAIN {
		c.canRead = false
		return false
	}
	if e == unix.EINTR {
		return true
	}
	if e != 0 || n == 0 {
		// EOF or error: nothing to answer.
		l.closeClient(c)
		return false
	}
	if c.ir == c.iw {
		c.deadline = l.now + int64(cfg.ReadHeaderTimeout)
	}
	c.iw += n
	if n < space && !c.rdhup {
		c.canRead = false
	}
	return true
}

// Outcomes of readChunkedBody.
const (
	chunkedMore     = iota // the body is not all here: read on
	chunkedDone            // the whole body is buffered and re-encoded in rqBody
	chunkedHandoff         // too large to buffer: the goroutine path streams it
	chunkedAnswered        // malformed or over MaxBodyBytes: answered
)

// readChunkedBody feeds the chunked request body bytes buffered after
// the head (body, from its first byte) to c's decoder, the strict shared
// one, picking up where the last call stopped. A body that ends within
// MaxBufferedBody bytes (framing included) and in what the client has
// sent so far (readRequest hands off a body the client paused in: it
// may stream both ways) is served by the loop like a Content-Length
// one: it is checked whole before anything is sent, and forwarded
// re-chunked (one chunk per run of data, trailers passed on), as the
// goroutine path sends it. A longer one is handed off, to stream.
func (l *loop) readChunkedBody(c *cconn, body []byte) int {
	cfg := &l.p.cfg
	if !c.rqActive {
		c.rq.Reset()
		c.rq.Limits.MaxBody = max(cfg.MaxBodyBytes, 0)
		c.rqActive, c.rqFed, c.rqBody = true, 0, c.rqBody[:0]
	}
	src := body[c.rqFed:]
	for len(src) > 0 && !c.rq.Done() {
		n, data, err := c.rq.Decode(src)
		c.rqFed += n
		src = src[n:]
		if err != nil {
			c.rqActive = false
			if errors.Is(err, http1.ErrBodyTooLarge) {
				l.reply(c, 413, "Content Too Large", "request body larger than "+strconv.FormatInt(cfg.MaxBodyBytes, 10)+" bytes\n", nil)
			} else {
				l.reply(c, 400, "Bad Request", "malformed chunked body\n", nil)
			}
			return chunkedAnswered
		}
		if len(data) > 0 {
			c.rqBody = http1.AppendChunk(c.rqBody, data)
		}
	}
	if c.rq.Done() {
		c.rqActive = false
		c.rqBody = http1.AppendLastChunk(c.rqBody, c.rq.Trailers())
		return chunkedDone
	}
	if c.rqFed >= cfg.MaxBufferedBody {
		c.rqActive = false
		return chunkedHandoff
	}
	return chunkedMore
}

// reply answers with a plain-text page and closes the connection.
func (l *loop) reply(c *cconn, status int, reason, body string, extra []string) {
	if c.be != nil {
		l.closeTarget(c.be)
		c.be = nil
	}
	l.done(c, Aborted)
	l.end(c)
	c.out = http1.AppendReply(c.out, status, reason, body, extra, false, string(c.head.Method) != "HEAD")
	c.state = stClose
	c.deadline = l.now + int64(l.p.cfg.IdleTimeout)
}
