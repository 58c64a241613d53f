package runner

import (
	"github.com/paaskit/paaskit/internal/http1"

	"github.com/paaskit/paaskit/internal/evproxy"

	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Serve runs the node front on l until ctx ends, then closes l and every
// connection it accepted and returns once their goroutines are gone.
//
// It is ServeHTTP's fast path: plain HTTP/1.1 requests (no
// Transfer-Encoding, Upgrade or Expect; one Host; at most one
// Content-Length) are forwarded by a purpose-built relay, one goroutine per
// client connection, the request head passed on as received (plus
// X-Forwarded-For) and the response head re-framed, over a pooled
// keep-alive connection to the instance. Anything else, from HTTP/1.0 to a
// WebSocket upgrade to a malformed head, hands the connection to net/http
// and ServeHTTP, which answer it properly (a 400 for what net/http
// refuses). Both paths route, start on demand and answer misses and failed
// starts the same way.
func (r *Runner) Serve(ctx context.Context, l net.Listener) error {
	f := &front{r: r, ctx: ctx, conns: map[net.Conn]struct{}{}}
	f.handoff = &handoffListener{ch: make(chan net.Conn), done: make(chan struct{}), addr: l.Addr()}
	f.slow = &http.Server{Handler: recoverHandler{r}, ReadHeaderTimeout: time.Minute, IdleTimeout: frontIdleTimeout,
		ErrorLog: log.New(io.Discard, "", 0)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = f.slow.Serve(f.handoff)
	}()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var err error
	loops := false
	if tl, ok := l.(*net.TCPListener); ok && r.cfg.EventLoops > 0 {
		err = f.serveLoops(ctx, tl, &wg)
		loops = !errors.Is(err, evproxy.ErrUnsupported)
		if !loops {
			err = nil
		}
	}
	if !loops {
		err = f.acceptLoop(ctx, l, &wg)
	}
	l.Close()
	f.closeAll()
	close(f.handoff.done)
	_ = f.slow.Close()
	wg.Wait()
	return err
}

// acceptLoop serves l with a goroutine per connection until l fails or
// is closed.
//
// Running out of descriptors (EMFILE, ENFILE) or memory for a socket is
// not the listener failing: the loop backs off (5 ms, doubling up to 1 s,
// logged once per episode) and goes on serving the connections it has,
// as net/http and the balancer do, instead of stopping the node's front.
func (f *front) acceptLoop(ctx context.Context, l net.Listener, wg *sync.WaitGroup) error {
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if retryableAccept(err) {
				if delay == 0 {
					delay = 5 * time.Millisecond
					f.r.log.Warn("runner: front cannot accept for now; backing off", "listener", l.Addr().String(), "err", err)
				} else if delay *= 2; delay > time.Second {
					delay = time.Second
				}
				t := time.NewTimer(delay)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil
				case <-t.C:
				}
				continue
			}
			return fmt.Errorf("runner: front accept on %s: %w", l.Addr(), err)
		}
		if delay != 0 {
			f.r.log.Info("runner: front accepting again", "listener", l.Addr().String())
			delay = 0
		}
		ac := f.r.gate.Accept(c, time.Minute) // nil: over a cap, closed
		if ac == nil {
			continue
		}
		c = ac
		if !f.track(c) {
			c.Close()
			return nil
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.serveConn(c)
		}()
	}
}

// retryableAccept reports whether an Accept error is a passing shortage
// (descriptors, kernel memory, an aborted handshake, a timeout) rather
// than a listener that is gone.
func retryableAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

const (
	frontIdleTimeout = 2 * time.Minute
	maxHead          = 16 << 10
	maxHeaders       = 100
	maxDiscardBody   = 1 << 20
)

type front struct {
	r       *Runner
	ctx     context.Context // Serve's: bounds waits for starts
	handoff *handoffListener
	slow    *http.Server

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (f *front) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *front) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
}

// closeAll cuts every tracked connection; each one's goroutine closes it.
func (f *front) closeAll() {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		shutdownConn(c)
	}
	f.mu.Unlock()
}

// handoffListener feeds connections the fast path gave up on to net/http.
type handoffListener struct {
	ch   chan net.Conn
	done chan struct{}
	addr net.Addr
}

func (h *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.ch:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoffListener) Close() error   { return nil }
func (h *handoffListener) Addr() net.Addr { return h.addr }

// bufferedConn replays what the fast path had read but not consumed.
type bufferedConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.br.Read(p) }

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, maxHead) }}
var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// clientConn is one client connection of the fast path, served by one
// goroutine.
type clientConn struct {
	f        *front
	c        net.Conn
	src      *srcReader
	br       *bufio.Reader
	bw       *bufio.Writer
	clientIP string
	rq       reqHead
	scratch  []byte
	// The read deadline bounds how long an idle client may hold its
	// connection; it is pushed forward only when less than idle/2 is
	// left, keeping timer updates off the per-request path. A request
	// that takes longer (a slow start, a long download) does not read
	// from the client meanwhile, and a request body gets at least
	// idle/2.
	deadline time.Time
	// raw and step serve requests inside the poller wait (rawStep);
	// raw is nil when c is not a plain socket. next says what serveConn
	// does once the wait ends.
	raw  syscall.RawConn
	step func(fd uintptr) bool
	next int
}

// What serveConn does after a poller wait (rawStep) ends.
const (
	nextClose = iota // close the connection
	nextRead         // bytes are buffered: go on reading outside the wait
)

func (f *front) serveConn(c net.Conn) { f.serveConnWith(c, nil) }

// serveConnWith serves c, whose first bytes (read by an event loop) are
// pre.
func (f *front) serveConnWith(c net.Conn, pre []byte) {
	defer f.recoverConn("front connection")
	cc := &clientConn{f: f, c: c, src: newSrcReader(c, 0), scratch: make([]byte, 0, 1024)}
	cc.src.pre = pre
	cc.br = readerPool.Get().(*bufio.Reader)
	cc.br.Reset(cc.src)
	cc.bw = writerPool.Get().(*bufio.Writer)
	cc.bw.Reset(c)
	if cc.raw = rawConnOf(c); cc.raw != nil {
		cc.step = cc.rawStep
	}
	handedOff := false
	defer func() {
		cc.bw.Reset(nil)
		writerPool.Put(cc.bw)
		if !handedOff {
			cc.br.Reset(nil)
			readerPool.Put(cc.br)
			c.Close()
		}
		f.untrack(c)
	}()
	if host, _, err := net.SplitHostPort(c.RemoteAddr().String()); err == nil {
		cc.clientIP = host
	}
	for {
		cc.idleDeadline()
		if cc.raw != nil && cc.br.Buffered() == 0 && len(cc.src.pre) == 0 {
			cc.next = nextClose
			_ = cc.raw.Read(cc.step) // its error (idle deadline, closed) ends the connection
			if cc.next == nextClose {
				return
			}
		}
		head, err := peekHead(cc.br)
		if err != nil {
			if errors.Is(err, errNeedSlowPath) {
				if cc.untrustedProxyHeader() {
					return
				}
				_ = c.SetReadDeadline(time.Time{})
				handedOff = f.handOff(c, cc.br)
			}
			return
		}
		if !parseRequestHead(head, &cc.rq) {
			if cc.untrustedProxyHeader() {
				return
			}
			if cc.rq.err != nil {
				// The strict parser refuses it: net/http, which is
				// laxer (it reads Content-Length with chunked as
				// chunked, unfolds obs-fold), never sees it.
				cc.refuse(cc.rq.err)
				return
			}
			_ = c.SetReadDeadline(time.Time{})
			handedOff = f.handOff(c, cc.br)
			return
		}
		if !cc.serveOne(head) {
			return
		}
	}
}

func (cc *clientConn) idleDeadline() {
	if now := time.Now(); cc.deadline.Sub(now) < frontIdleTimeout/2 {
		cc.deadline = now.Add(frontIdleTimeout)
		_ = cc.c.SetReadDeadline(cc.deadline)
	}
}

// rawStep is the RawConn read callback of the warm path. It is called
// first when the wait begins, then each time the poller finds the client
// socket readable; it reads what is there and serves every whole request
// whose body is wholly buffered right here, so that after an answer the
// goroutine waits for the next request without a read that would fail
// with EAGAIN first. The wait is never left between the last read and
// the next, so a request arriving meanwhile leaves the socket readable.
// Anything else (a partial head, a body still to come, a head for the
// slow path) ends the wait with nextRead, and serveConn goes on outside
// it. Inside, nothing may read the client socket through c (see
// srcReader.fd): the requests served here need no more bytes from it.
func (cc *clientConn) rawStep(fd uintptr) bool {
	cc.src.fd = int(fd)
	for {
		head, err := peekHead(cc.br)
		if err != nil {
			switch {
			case err == errAgain && cc.br.Buffered() == 0:
				cc.src.fd = -1
				return false
			case err == errAgain, errors.Is(err, errNeedSlowPath):
				cc.next = nextRead
			default:
				cc.next = nextClose
			}
			cc.src.fd = -1
			return true
		}
		if !parseRequestHead(head, &cc.rq) || int64(len(head))+cc.rq.contentLength > int64(cc.br.Buffered()) {
			cc.next = nextRead // serveConn parses it again, then hands it off or reads the body
			cc.src.fd = -1
			return true
		}
		if !cc.serveOne(head) {
			cc.next = nextClose
			cc.src.fd = -1
			return true
		}
		if cc.br.Buffered() > 0 || cc.src.full {
			continue // pipelined, or more may be waiting in the socket
		}
		cc.idleDeadline()
		return false
	}
}

// refuse answers a request head the strict parser refused (431 for too
// many fields, else 400) and asks for the connection to be closed.
func (cc *clientConn) refuse(err error) {
	status, body := "400 Bad Request", "malformed request: "+http1.Printable(err.Error())+"\n"
	if errors.Is(err, http1.ErrTooManyFields) {
		status, body = "431 Request Header Fields Too Large", "too many header fields\n"
	}
	fmt.Fprintf(cc.bw, "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", status, len(body), body)
	_ = cc.bw.Flush()
}

// handOff gives the connection, with its unread bytes, to net/http.
func (f *front) handOff(c net.Conn, br *bufio.Reader) bool {
	select {
	case f.handoff.ch <- &bufferedConn{Conn: c, br: br}:
		return true
	case <-f.handoff.done:
		return false
	}
}

// serveOne answers one request, whose head is at the start of cc.br and
// parsed into cc.rq; it reports whether the client connection can carry
// another.
func (cc *clientConn) serveOne(head []byte) bool {
	f, rq := cc.f, &cc.rq
	if limit := f.r.cfg.MaxBodyBytes; limit > 0 && rq.contentLength > limit {
		return f.tooLarge(rq, cc.bw)
	}
	arrival := f.r.cfg.Clock.Now()
	var hb [256]byte
	host, ok := http1.NormalizeHost(hb[:0], rq.host)
	if !ok {
		cc.refuse(http1.Malformed("invalid Host %q", rq.host))
		return false
	}
	a := f.r.lookupBytes(host)
	if a == nil {
		return f.answer(head, rq, cc.br, cc.bw, http.StatusNotFound, fmt.Sprintf("runner: no app for host %q\n", host), true)
	}
	inst, err := a.acquire(f.ctx, arrival)
	if err != nil {
		var se *StartError
		switch {
		case errors.As(err, &se):
			return f.answer(head, rq, cc.br, cc.bw, http.StatusServiceUnavailable, startErrorText(se), false)
		case errors.Is(err, ErrUnknownApp):
			return f.answer(head, rq, cc.br, cc.bw, http.StatusNotFound, err.Error()+"\n", true)
		default:
			return f.answer(head, rq, cc.br, cc.bw, http.StatusServiceUnavailable, err.Error()+"\n", false)
		}
	}
	a.requests.Add(1)
	keep := inst.relay(head, rq, cc.br, cc.bw, cc.clientIP, &cc.scratch)
	a.release(inst)
	return keep
}

func startErrorText(se *StartError) string {
	msg := se.Error()
	if !se.RetryAt.IsZero() {
		msg += "\nnext start not before " + se.RetryAt.UTC().Format("15:04:05.000Z")
	}
	if se.Stderr != "" {
		msg += "\n\nlast lines of the app's stderr:\n" + se.Stderr
	}
	return msg + "\n"
}

// answer writes the front's own plain-text response after consuming the
// request; it reports whether the connection stays usable.
func (f *front) answer(head []byte, rq *reqHead, br *bufio.Reader, bw *bufio.Writer, code int, body string, miss bool) bool {
	keep := !rq.close
	if _, err := br.Discard(len(head)); err != nil {
		return false
	}
	if rq.contentLength > maxDiscardBody {
		keep = false
	} else if rq.contentLength > 0 {
		if _, err := io.CopyN(io.Discard, br, rq.contentLength); err != nil {
			return false
		}
	}
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: %d\r\n",
		code, http.StatusText(code), len(body))
	if miss {
		bw.WriteString(MissHeader + ": 1\r\n")
	}
	if !keep {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	if !rq.head {
		bw.WriteString(body)
	}
	return bw.Flush() == nil && keep
}

// relay forwards one request to the instance and its response back.
func (i *instance) relay(head []byte, rq *reqHead, br *bufio.Reader, bw *bufio.Writer, clientIP string, scratch *[]byte) bool {
	bodyless := rq.contentLength == 0
	// A body wholly buffered behind its head is written from the buffer
	// and consumed only once sent, so that it can be sent again.
	var body []byte
	if !bodyless && int64(len(head))+rq.contentLength <= int64(br.Buffered()) {
		all, _ := br.Peek(len(head) + int(rq.contentLength))
		body = all[len(head):]
	}
	consumed := false // head (and body) taken from br
	consume := func() bool {
		if consumed {
			return true
		}
		consumed = true
		_, err := br.Discard(len(head) + len(body))
		return err == nil
	}
	var bc *backendConn
	var rs respHead
	var rhead []byte
	for attempt := 0; ; attempt++ {
		var reused bool
		var err error
		bc, reused, err = i.pool.get(context.Background(), attempt > 0)
		if err != nil {
			if consumed {
				head = nil
			}
			return i.badGateway(head, rq, br, bw, err)
		}
		writeRequestHead(bc.bw, rq, clientIP)
		switch {
		case bodyless:
		case body != nil:
			bc.bw.Write(body)
		default:
			// A body still arriving streams through, once.
			if !consume() {
				bc.c.Close()
				return false
			}
			if _, err := io.CopyN(bc.bw, br, rq.contentLength); err != nil {
				bc.c.Close()
				return false
			}
		}
		err = bc.sendAndWait()
		if err == nil {
			rhead, err = readResponseHead(bc.br, rq.head, &rs, *scratch, &bc.resp)
		}
		if err == nil {
			break
		}
		bc.c.Close()
		timedOut := errors.Is(err, os.ErrDeadlineExceeded)
		retry := reused && attempt == 0 && !errors.Is(err, errBadResponse) && !timedOut &&
			// Without a body any failure may be an idle connection the
			// app closed; with one, only a failed send or a reset
			// before the answer proves the app did not take the
			// request.
			(bodyless || body != nil && (bc.sendFailed || unread(err, bc)))
		if retry {
			continue // the app closed an idle connection: try a fresh one
		}
		if !consumed && !consume() {
			return false
		}
		return i.badGateway(nil, rq, br, bw, err)
	}
	if !consume() {
		bc.c.Close()
		return false
	}
	if rs.chunked && !rs.noBody {
		// A body already broken in what came with the head is answered
		// with 502, not relayed until it breaks.
		buf, _ := bc.br.Peek(bc.br.Buffered())
		if err := http1.CheckChunkedPrefix(buf, http1.ChunkedLimits{}); err != nil {
			bc.c.Close()
			return i.badGateway(nil, rq, br, bw, fmt.Errorf("%w: %w", errBadResponse, err))
		}
	}
	// The response head, re-framed for the client.
	*scratch = rhead[:0]
	keepClient := !rq.close && !rs.untilEOF
	bw.Write(rhead)
	if !keepClient {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	var err error
	switch {
	case rs.noBody:
	case rs.chunked:
		err = copyChunked(bw, bc.br)
	case rs.contentLength >= 0:
		_, err = io.CopyN(bw, bc.br, rs.contentLength)
	default:
		err = copyUntilEOF(bw, bc.br)
	}
	if err != nil {
		bc.c.Close()
		return false
	}
	if ferr := bw.Flush(); ferr != nil {
		keepClient = false
	}
	if rs.close || rs.untilEOF {
		bc.c.Close()
	} else {
		i.pool.put(bc)
	}
	return keepClient
}

// unread reports whether err shows that the app closed its connection
// with the request still unread: a reset before any byte of the answer
// (a socket closed with data in it is reset).
func unread(err error, bc *backendConn) bool {
	return errors.Is(err, syscall.ECONNRESET) && bc.br.Buffered() == 0
}

func (i *instance) badGateway(head []byte, rq *reqHead, br *bufio.Reader, bw *bufio.Writer, cause error) bool {
	if head != nil {
		if _, err := br.Discard(len(head)); err != nil {
			return false
		}
	}
	body := fmt.Sprintf("runner: app %q instance %d: %v\n", i.app.name, i.id, cause)
	status := "502 Bad Gateway"
	if errors.Is(cause, os.ErrDeadlineExceeded) {
		status = "504 Gateway Timeout"
	}
	fmt.Fprintf(bw, "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", status, len(body), body)
	_ = bw.Flush()
	return false // the request body may be half sent: do not reuse
}

var (
	errNeedSlowPath = errors.New("request needs the net/http path")
	errBadResponse  = errors.New("malformed response from app")
)

// peekHead returns the request head (through its blank line) without
// consuming it. A head larger than the buffer goes to the slow path.
func peekHead(br *bufio.Reader) ([]byte, error) {
	if _, err := br.Peek(1); err != nil {
		return nil, err
	}
	for {
		n := br.Buffered()
		buf, _ := br.Peek(n)
		if k := http1.HeadEnd(buf); k >= 0 {
			// Through the empty line, or through a bare LF, which the
			// strict parser then refuses rather than the front waiting
			// for a CRLFCRLF that never comes.
			return buf[:k], nil
		}
		if n >= br.Size() {
			return nil, errNeedSlowPath
		}
		if _, err := br.Peek(n + 1); err != nil {
			if n > 0 && !errors.Is(err, bufio.ErrBufferFull) {
				return nil, err
			}
			return nil, errNeedSlowPath
		}
	}
}

var crlfcrlf = []byte("\r\n\r\n")

// reqHead is a request head parsed by internal/http1, plus what the fast
// path derives from it.
type reqHead struct {
	h             http1.Head
	err           error // the strict parser's refusal, nil when it parsed
	host          []byte
	contentLength int64
	close         bool
	head          bool
}

// parseRequestHead parses h with the shared strict parser and reports
// whether the fast path takes the request: HTTP/1.1, one Host, no
// transfer coding, no Upgrade, no Expect. A head the parser refuses is
// answered 400 (rq.err says why); anything else goes to net/http.
func parseRequestHead(h []byte, rq *reqHead) bool {
	if rq.err = http1.ParseRequestHead(h, &rq.h, maxHeaders, ""); rq.err != nil {
		return false
	}
	x := &rq.h
	if x.Minor != 1 || x.Chunked || x.Upgrade != nil || x.ConnUpgrade || x.Expect100 || len(x.Host) >= 256 {
		return false
	}
	rq.host = x.Host
	rq.contentLength = max(x.ContentLength, 0)
	rq.close = x.ConnClose
	rq.head = string(x.Method) == "HEAD"
	return true
}

// writeRequestHead writes the request head to send to the app: the
// request line and the client's fields but the hop-by-hop ones, its
// Content-Length, and X-Forwarded-For with the client's address appended.
// X-Forwarded-Proto and -Host pass through: they come from the balancer
// in front.
func writeRequestHead(w *bufio.Writer, rq *reqHead, clientIP string) {
	x := &rq.h
	w.Write(x.Method)
	w.WriteByte(' ')
	w.Write(x.Target)
	w.WriteString(" HTTP/1.1\r\n")
	for k := range x.Fields {
		f := &x.Fields[k]
		if f.Drop && !equalFold(f.Name, "x-forwarded-proto") && !equalFold(f.Name, "x-forwarded-host") {
			continue
		}
		w.Write(f.Name)
		w.WriteString(": ")
		w.Write(f.Value)
		w.WriteString("\r\n")
	}
	if rq.contentLength > 0 || x.ContentLength == 0 {
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(w.AvailableBuffer(), rq.contentLength, 10))
		w.WriteString("\r\n")
	}
	if x.XFF != nil || clientIP != "" {
		w.WriteString("X-Forwarded-For: ")
		if x.XFF != nil {
			w.Write(x.XFF)
			if clientIP != "" {
				w.WriteString(", ")
			}
		}
		w.WriteString(clientIP)
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
}

// equalFold compares ASCII b with lower-case s, ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for k := 0; k < len(b); k++ {
		c := b[k]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[k] {
			return false
		}
	}
	return true
}

// respHead is the framing of a response from an app.
type respHead struct {
	contentLength int64
	chunked       bool
	close         bool
	noBody        bool
	untilEOF      bool
}

// readResponseHead reads the app's response head, skipping interim 1xx
// responses other than 101, and returns it re-framed for the client: the
// status line and end-to-end headers, without the blank line.
func readResponseHead(br *bufio.Reader, headReq bool, rs *respHead, dst []byte, x *http1.Head) ([]byte, error) {
	for {
		head, err := peekHead(br)
		if err != nil {
			if errors.Is(err, errNeedSlowPath) {
				return nil, fmt.Errorf("%w: head over %d bytes", errBadResponse, maxHead)
			}
			return nil, err
		}
		*rs = respHead{contentLength: -1}
		out, interim, err := parseResponseHead(head, headReq, rs, dst, x)
		if err != nil {
			return nil, err
		}
		if _, err := br.Discard(len(head)); err != nil {
			return nil, err
		}
		if !interim {
			return out, nil
		}
	}
}

// parseResponseHead parses the response head h into x (reused across
// responses) and rs, and returns it re-framed for the client in dst.
func parseResponseHead(h []byte, headReq bool, rs *respHead, dst []byte, x *http1.Head) (out []byte, interim bool, err error) {
	if err := http1.ParseResponseHead(h, x, maxHeaders, ""); err != nil {
		return nil, false, fmt.Errorf("%w: %w", errBadResponse, err)
	}
	if x.Status < 200 {
		if x.Status == 101 {
			// The fast path never asks for an upgrade.
			return nil, false, fmt.Errorf("%w: switched protocols unasked", errBadResponse)
		}
		return nil, true, nil
	}
	out = append(dst[:0], "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(x.Status), 10)
	out = append(out, ' ')
	out = append(out, x.Reason...)
	out = append(out, "\r\n"...)
	framed := false
	for k := range x.Fields {
		f := &x.Fields[k]
		if f.Drop {
			// Framing fields are written once, in place, normalised.
			switch {
			case framed:
				continue
			case x.Chunked && equalFold(f.Name, "transfer-encoding"):
				out = append(out, "Transfer-Encoding: chunked\r\n"...)
			case !x.Chunked && equalFold(f.Name, "content-length"):
				out = append(out, "Content-Length: "...)
				out = strconv.AppendInt(out, x.ContentLength, 10)
				out = append(out, "\r\n"...)
			default:
				continue
			}
			framed = true
			continue
		}
		if platformField(f.Name) {
			continue // an app cannot speak for the platform
		}
		out = append(out, f.Name...)
		out = append(out, ": "...)
		out = append(out, f.Value...)
		out = append(out, "\r\n"...)
	}
	rs.chunked = x.Chunked
	if !x.Chunked {
		rs.contentLength = x.ContentLength
	}
	rs.close = x.ConnClose || x.Minor == 0 && !x.ConnKeepAlive
	switch {
	case headReq || x.Status == 204 || x.Status == 304:
		rs.noBody = true
	case !rs.chunked && rs.contentLength < 0:
		rs.untilEOF = true
	}
	return out, false, nil
}

// platformFieldPrefix starts the names of the response fields the
// platform gives a meaning to (MissHeader makes the balancer run its miss
// hook): the front drops them from every app response, on every path.
const platformFieldPrefix = "x-paaskit-"

// platformField reports whether a field name starts with
// platformFieldPrefix, ignoring case.
func platformField(name []byte) bool {
	return len(name) >= len(platformFieldPrefix) && equalFold(name[:len(platformFieldPrefix)], platformFieldPrefix)
}

// dropPlatformFields deletes the platform's fields from an app's header.
func dropPlatformFields(h http.Header) {
	for k := range h {
		if platformField([]byte(k)) {
			delete(h, k)
		}
	}
}

func clip(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// copyChunked relays a chunked body from an app: decoded by the shared
// strict codec (http1.ChunkedDecoder: sizes, CRLFs, extensions and the
// trailer section checked and bounded) and re-encoded, one chunk per run
// of data, trailers passed on. bw is flushed whenever nothing more is
// buffered, so streams stream. A malformed body wraps errBadResponse.
func copyChunked(bw *bufio.Writer, br *bufio.Reader) error {
	var d http1.ChunkedDecoder
	for !d.Done() {
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
			if _, err := br.Peek(1); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
		}
		buf, _ := br.Peek(br.Buffered())
		n, data, err := d.Decode(buf)
		if err != nil {
			return fmt.Errorf("%w: %w", errBadResponse, err)
		}
		if len(data) > 0 {
			bw.Write(http1.AppendChunkHeader(bw.AvailableBuffer(), int64(len(data))))
			if _, err := bw.Write(data); err != nil {
				return err
			}
			bw.WriteString(http1.CRLF)
		}
		_, _ = br.Discard(n)
	}
	_, err := bw.Write(http1.AppendLastChunk(bw.AvailableBuffer(), d.Trailers()))
	return err
}

// chunkedBody reads a chunked body from an app with the shared strict
// codec for the net/http path (its trailers are dropped there, as before).
type chunkedBody struct {
	br *bufio.Reader
	d  http1.ChunkedDecoder
}

func (b *chunkedBody) Read(p []byte) (int, error) {
	for {
		if b.d.Done() {
			return 0, io.EOF
		}
		if len(p) == 0 {
			return 0, nil
		}
		if b.br.Buffered() == 0 {
			if _, err := b.br.Peek(1); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return 0, err
			}
		}
		buf, _ := b.br.Peek(b.br.Buffered())
		// At most len(p) bytes in: the run of data handed out fits p.
		n, data, err := b.d.Decode(buf[:min(len(buf), len(p))])
		if err != nil {
			return 0, fmt.Errorf("%w: %w", errBadResponse, err)
		}
		k := copy(p, data)
		_, _ = b.br.Discard(n)
		if k > 0 {
			return k, nil
		}
	}
}

func (b *chunkedBody) Close() error { return nil }

func copyUntilEOF(bw *bufio.Writer, br *bufio.Reader) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	for {
		n, err := br.Read(*bp)
		if n > 0 {
			if _, werr := bw.Write((*bp)[:n]); werr != nil {
				return werr
			}
			if werr := bw.Flush(); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
