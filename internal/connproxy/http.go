package connproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/paaskit/paaskit/internal/http1"
)

// ServeHTTP forwards one request that a net/http server read (HTTP/1.x
// or HTTP/2, behind the embedder's own TLS, next to its other handlers)
// the way Serve's connections are forwarded: the request is written out
// in HTTP/1.1 form and parsed again by the strict internal/http1 parser
// (anything it refuses is answered 400 or 431), routed by the same
// Handler, sent over the target's Pool, and the target's response is
// read with the strict codec and written to w. The headers added and
// dropped, X-Forwarded-For, DropFieldPrefix, MaxBodyBytes (413), misses,
// retries, the 502 for a broken response and the Handler's Done and End
// are the same as on Serve's path; Request.Ctx is r's context.
//
// What net/http owns stays with it: the client connection's framing
// and keep-alive (no Connection field of ours is sent; a failed request
// does not close the client connection), Expect: 100-continue (net/http
// answers it when the body is first read), and the client's timeouts (no
// per-read deadline of Config.IdleTimeout is set on r's body). A
// response whose body breaks after its head was written aborts the
// client's connection with panic(http.ErrAbortHandler), which net/http
// handles quietly, so the client never takes a cut body for a whole
// one. An Upgrade (WebSocket) the target accepts hijacks w's connection
// and tunnels it; where w cannot be hijacked (HTTP/2) the answer is 502.
// Response trailers are passed on as net/http trailers. A panic on the
// way is recovered and logged like one on a connection's goroutine.
// ServeHTTP does not count in Stats.Conns, and Drain and Shutdown do not
// end it: the embedder's server owns its connections.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rs := &rwState{w: w, rc: http.NewResponseController(w)}
	src := newRequestSource(r, rs.rc)
	rs.src = src
	cc := p.newClientConn(src, r.TLS != nil)
	cc.ctx = r.Context()
	cc.rw = rs
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		cc.ip = h
	} else {
		cc.ip = r.RemoteAddr
	}
	cc.r = newConnReader(src, p.cfg.MaxHeaderBytes)
	if src.body != nil && !src.chunked && r.ContentLength <= maxReadAhead {
		// A small body is read first, with the head, so that it can be
		// sent again when a pooled connection turns out stale (as on
		// Serve's path, where it comes with the head).
		b := append(src.head, make([]byte, r.ContentLength)...)
		if _, err := io.ReadFull(r.Body, b[len(src.head):]); err != nil {
			rs.answer(400, "reading the request body: "+http1.Printable(err.Error())+"\n", nil, false, false)
			return
		}
		src.head, src.body = b, nil
		cc.r.buf = make([]byte, max(len(b), initialReadBuf))
	}
	cc.w = clientWriterPool.Get().(*bufio.Writer)
	cc.w.Reset(rwBody{rs})
	cc.host = make([]byte, 0, 64)
	defer func() {
		v := recover()
		if rs.duplex && rs.hijacked == nil {
			// Closed here (after the answer went out: Close may wait
			// for the rest of the body), not by net/http after the
			// handler: in full duplex, a body that its Close reads to
			// its end there starts a read of the connection net/http
			// does not wait for, and its next request read panics
			// ("invalid concurrent Body.Read call", golang/go#68560).
			_ = rs.rc.Flush()
			_ = r.Body.Close()
		}
		if cc.forwarding {
			cc.end()
		}
		cc.w.Reset(nil)
		clientWriterPool.Put(cc.w)
		if rs.hijacked != nil {
			_ = rs.hijacked.Close()
		}
		switch {
		case v == http.ErrAbortHandler:
			panic(v)
		case v != nil:
			p.hookPanic("ServeHTTP", v)
			if rs.headSent {
				panic(http.ErrAbortHandler)
			}
			cc.simple(502, "Bad Gateway", "the proxy failed on this request\n", nil)
		case rs.headSent && !rs.relayed && rs.hijacked == nil:
			// The body broke (or the client went away) after the
			// head was written.
			panic(http.ErrAbortHandler)
		case !rs.headSent && rs.hijacked == nil:
			// Nothing was answered (net/http would send an empty 200).
			rs.answer(502, "the proxy could not answer this request\n", nil, r.Method == "HEAD", false)
		}
	}()
	raw, err := cc.r.readHead(nil)
	if !cc.afterHead(raw, err) {
		return
	}
	cc.handle()
}

// maxReadAhead bounds the request body ServeHTTP reads before routing.
const maxReadAhead = 64 << 10

// rwState is ServeHTTP's side of a clientConn: where the response goes.
type rwState struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	// headSent: a final response head was written to w; relayed: its
	// body too, wholly.
	headSent, relayed bool
	// hijacked is w's connection once a 101 took it over.
	hijacked net.Conn
	// duplex: the body streams while the response is written.
	duplex bool
	src    *requestSource
}

// fullDuplex lets the request body stream to the target while the
// response is written (see exchange), which net/http's HTTP/1 server
// allows only when asked.
func (rs *rwState) fullDuplex() {
	rs.duplex = true
	_ = rs.rc.EnableFullDuplex()
}

// rwBody is the writer under a ServeHTTP clientConn's w: body bytes go
// to the ResponseWriter, flushed through at every flush of w (which the
// copy loops do whenever the target has nothing more buffered, so
// streams stream).
type rwBody struct{ rs *rwState }

func (b rwBody) Write(p []byte) (int, error) {
	n, err := b.rs.w.Write(p)
	if err != nil {
		return n, err
	}
	if err := b.rs.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return n, err
	}
	return n, nil
}

// answer writes a plain-text answer of the proxy's own to the
// ResponseWriter (the Handler's Reply, or an error). Unless keep, a
// request body not read ahead closes the client connection after it, as
// on Serve's path (net/http would otherwise wait to read the rest of it
// before answering).
func (rs *rwState) answer(status int, body string, extra []string, isHead, keep bool) {
	if rs.headSent {
		return
	}
	rs.headSent, rs.relayed = true, true
	h := rs.w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if !keep && rs.src != nil && rs.src.body != nil {
		h.Set("Connection", "close")
	}
	for _, e := range extra {
		if name, value, ok := strings.Cut(e, ":"); ok {
			h.Add(strings.TrimSpace(name), strings.TrimSpace(value))
		}
	}
	rs.w.WriteHeader(status)
	if !isHead {
		_, _ = io.WriteString(rs.w, body)
	}
}

// head writes a response head to the ResponseWriter: its fields but
// those marked Drop (hop-by-hop, framing, DropFieldPrefix), and the
// Content-Length when the target sent one; net/http frames the rest. A
// 1xx head is sent at once and its fields are not kept for the next.
func (rs *rwState) head(resp *http1.Head) {
	h := rs.w.Header()
	for i := range resp.Fields {
		if f := &resp.Fields[i]; !f.Drop {
			k := http.CanonicalHeaderKey(string(f.Name))
			h[k] = append(h[k], string(f.Value))
		}
	}
	if resp.Status < 200 {
		rs.w.WriteHeader(resp.Status)
		clear(h)
		return
	}
	if resp.ContentLength >= 0 && !resp.Chunked {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	if _, ok := h["Content-Type"]; !ok {
		h["Content-Type"] = nil // relayed as sent: no type sniffed
	}
	rs.headSent = true
	rs.w.WriteHeader(resp.Status)
}

// trailers passes a chunked response's trailer section (field lines
// with their CRLF, checked by the decoder) on as net/http trailers.
func (rs *rwState) trailers(raw []byte) {
	h := rs.w.Header()
	for len(raw) > 0 {
		line, rest, _ := strings.Cut(string(raw), "\r\n")
		raw = raw[len(raw)-len(rest):]
		if name, value, ok := strings.Cut(line, ":"); ok {
			h.Add(http.TrailerPrefix+name, strings.TrimSpace(value))
		}
	}
}

// hijack takes over w's connection for a tunnel (a 101 answer): cc
// reads and writes it from now on as Serve's connections, starting with
// what net/http had read of it.
func (cc *clientConn) hijack() bool {
	rs := cc.rw
	c, brw, err := rs.rc.Hijack()
	if err != nil {
		return false
	}
	rs.hijacked = c
	rs.headSent, rs.relayed = true, true
	cc.rw = nil
	cc.c = c
	cc.raw, cc.step = nil, nil
	_ = brw.Writer.Flush()
	cc.w.Reset(c)
	r := newConnReader(c, cc.p.cfg.MaxHeaderBytes)
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if n > len(r.buf) {
			r.buf = make([]byte, n)
		}
		r.w = copy(r.buf, b)
	}
	cc.r = r
	return true
}

// requestSource is the client "connection" of a ServeHTTP clientConn:
// reading it yields the net/http request in HTTP/1.1 form, its head
// then its body (framed by Content-Length, or chunked when net/http did
// not know its length), for the strict parser and the body copies.
// It is never written to.
type requestSource struct {
	head    []byte
	body    io.Reader // nil: no body
	chunked bool
	pending []byte // framed body bytes not read yet
	out     []byte // pending's buffer
	buf     []byte
	eof     bool
	err     error // the body's read error, returned once pending is read
	rc      *http.ResponseController
	remote  string
}

func newRequestSource(r *http.Request, rc *http.ResponseController) *requestSource {
	s := &requestSource{rc: rc, remote: r.RemoteAddr}
	b := make([]byte, 0, 512)
	b = append(b, r.Method...)
	b = append(b, ' ')
	target := r.RequestURI
	if target == "" || target[0] != '/' && target != "*" {
		target = r.URL.RequestURI()
	}
	b = append(b, target...)
	if r.ProtoMajor == 1 && r.ProtoMinor == 0 {
		b = append(b, " HTTP/1.0\r\n"...)
	} else {
		b = append(b, " HTTP/1.1\r\n"...)
	}
	if r.Host != "" {
		b = append(b, "Host: "...)
		b = append(b, r.Host...)
		b = append(b, "\r\n"...)
	}
	for k, vv := range r.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Expect", "Trailer":
			// Framing and Expect are net/http's, done already.
			continue
		case "X-Forwarded-For":
			// One field: the parser takes the first as the chain.
			vv = []string{strings.Join(vv, ", ")}
		}
		for _, v := range vv {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	switch {
	case !hasBody:
		if r.Method == "POST" || r.Method == "PUT" || r.Method == "PATCH" {
			b = append(b, "Content-Length: 0\r\n"...)
		}
	case r.ContentLength > 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, r.ContentLength, 10)
		b = append(b, "\r\n"...)
		s.body = r.Body
	default:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
		s.body, s.chunked = r.Body, true
	}
	s.head = append(b, "\r\n"...)
	return s
}

func (s *requestSource) Read(p []byte) (int, error) {
	if len(s.head) > 0 {
		n := copy(p, s.head)
		s.head = s.head[n:]
		return n, nil
	}
	if s.body == nil {
		return 0, io.EOF
	}
	if !s.chunked {
		return s.body.Read(p)
	}
	for len(s.pending) == 0 {
		if s.eof {
			return 0, io.EOF
		}
		if s.err != nil {
			return 0, s.err
		}
		if s.buf == nil {
			s.buf = make([]byte, 16<<10)
		}
		n, err := s.body.Read(s.buf)
		s.pending = s.out[:0]
		if n > 0 {
			s.pending = http1.AppendChunk(s.pending, s.buf[:n])
		}
		if err == io.EOF {
			s.eof = true
			s.pending = http1.AppendLastChunk(s.pending, nil)
		} else if err != nil {
			s.err = err
		}
		s.out = s.pending[:0]
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

func (s *requestSource) Write([]byte) (int, error) {
	return 0, errors.New("connproxy: the request source is not written to")
}

func (s *requestSource) Close() error { return nil }

func (s *requestSource) LocalAddr() net.Addr  { return stringAddr("") }
func (s *requestSource) RemoteAddr() net.Addr { return stringAddr(s.remote) }

// SetReadDeadline reaches the client's connection through net/http (it
// cuts a body read that must end); SetDeadline and SetWriteDeadline
// are not used on this path.
func (s *requestSource) SetReadDeadline(t time.Time) error { return s.rc.SetReadDeadline(t) }
func (s *requestSource) SetDeadline(t time.Time) error     { return s.rc.SetReadDeadline(t) }
func (s *requestSource) SetWriteDeadline(time.Time) error  { return nil }

// stringAddr is the client's address as net/http gave it.
type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }
