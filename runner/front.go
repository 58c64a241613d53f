package runner

import (
	"github.com/paaskit/paaskit/internal/http1"

	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MissHeader is set to "1" on the front's 404 for a host no app serves:
// the balancer's miss hook recognises a node that does not know the site.
const MissHeader = "X-Paaskit-Miss"

// ServeHTTP is the node front: it routes the request's Host
// (case-insensitive, port ignored) to the app's running instance over its
// unix socket, reusing keep-alive connections, and starts an instance when
// none runs. Concurrent requests for a stopped app share one start and are
// all served once it is ready. A start that fails answers 503 with a plain
// message that includes the tail of the app's stderr; an unknown host
// answers 404 with MissHeader set.
// An app response whose body breaks after its head was relayed (a
// malformed chunk, a cut) aborts the client connection with
// panic(http.ErrAbortHandler), which net/http's server handles quietly,
// so the client never takes a cut body for a whole one.
func (r *Runner) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if !r.limitBody(w, req) {
		return
	}
	arrival := r.cfg.Clock.Now()
	a := r.lookup(req.Host)
	if a == nil {
		w.Header().Set(MissHeader, "1")
		http.Error(w, fmt.Sprintf("runner: no app for host %q", normHost(req.Host)), http.StatusNotFound)
		return
	}
	inst, err := a.acquire(req.Context(), arrival)
	if err != nil {
		var se *StartError
		switch {
		case errors.As(err, &se):
			msg := se.Error()
			if !se.RetryAt.IsZero() {
				msg += "\nnext start not before " + se.RetryAt.UTC().Format("15:04:05.000Z")
			}
			if se.Stderr != "" {
				msg += "\n\nlast lines of the app's stderr:\n" + se.Stderr
			}
			http.Error(w, msg, http.StatusServiceUnavailable)
		case errors.Is(err, ErrUnknownApp):
			w.Header().Set(MissHeader, "1")
			http.Error(w, err.Error(), http.StatusNotFound)
		case req.Context().Err() != nil:
			// The client went away while waiting; nobody to answer.
		default:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
		return
	}
	a.requests.Add(1)
	defer a.release(inst)
	inst.forward(w, req)
}

// connPool keeps idle connections to one instance, most recent first out.
type connPool struct {
	dial    func(context.Context) (net.Conn, error)
	timeout time.Duration // see Config.ResponseTimeout
	mu      sync.Mutex
	idle    []*backendConn
	closed  bool
}

const maxIdlePerInstance = 1024

// maxReplayBody bounds the request body ServeHTTP reads ahead so that it
// can send it again after a stale connection.
const maxReplayBody = 64 << 10

func newConnPool(dial func(context.Context) (net.Conn, error), timeout time.Duration) *connPool {
	return &connPool{dial: dial, timeout: timeout}
}

// get returns an idle connection (reused true) or, when there is none or
// fresh is set, a new one. A retry after a stale idle connection asks
// for a fresh one: when the app closed its idle connections (gunicorn
// does after its keep-alive timeout), the next ones in the pool are
// likely stale too.
func (p *connPool) get(ctx context.Context, fresh bool) (*backendConn, bool, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 && !fresh {
		bc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return bc, true, nil
	}
	p.mu.Unlock()
	c, err := p.dial(ctx)
	if err != nil {
		return nil, false, err
	}
	return newBackendConn(c, p.timeout), false, nil
}

func (p *connPool) put(bc *backendConn) {
	p.mu.Lock()
	if p.closed || len(p.idle) >= maxIdlePerInstance {
		p.mu.Unlock()
		bc.c.Close()
		return
	}
	p.idle = append(p.idle, bc)
	p.mu.Unlock()
}

func (p *connPool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, bc := range idle {
		bc.c.Close()
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// hopHeaders are connection-level headers a proxy must not forward.
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

func connectionTokens(h http.Header) map[string]bool {
	var m map[string]bool
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				if m == nil {
					m = map[string]bool{}
				}
				m[http.CanonicalHeaderKey(f)] = true
			}
		}
	}
	return m
}

func upgradeType(h http.Header) string {
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), "upgrade") {
				return h.Get("Upgrade")
			}
		}
	}
	return ""
}

// writeRequest writes req's head (and body) to bw in HTTP/1.1 form.
func writeRequest(bw *bufio.Writer, req *http.Request, upgrade string) error {
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(req.Host)
	bw.WriteString("\r\n")
	conn := connectionTokens(req.Header)
	for k, vv := range req.Header {
		if hopHeaders[k] || conn[k] || k == "Expect" || k == "X-Forwarded-For" {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if host, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
		bw.WriteString("X-Forwarded-For: ")
		if prior := req.Header["X-Forwarded-For"]; len(prior) > 0 {
			bw.WriteString(strings.Join(prior, ", "))
			bw.WriteString(", ")
		}
		bw.WriteString(host)
		bw.WriteString("\r\n")
	}
	if upgrade != "" {
		bw.WriteString("Connection: Upgrade\r\nUpgrade: ")
		bw.WriteString(upgrade)
		bw.WriteString("\r\n")
	}
	hasBody := req.Body != nil && req.Body != http.NoBody && req.ContentLength != 0
	switch {
	case !hasBody:
		if req.ContentLength == 0 && (req.Method == "POST" || req.Method == "PUT" || req.Method == "PATCH") {
			bw.WriteString("Content-Length: 0\r\n")
		}
		bw.WriteString("\r\n")
	case req.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(req.ContentLength, 10))
		bw.WriteString("\r\n\r\n")
		if _, err := io.CopyN(bw, req.Body, req.ContentLength); err != nil {
			return fmt.Errorf("copy request body: %w", err)
		}
	default:
		bw.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		bp := copyBufs.Get().(*[]byte)
		err := writeChunked(bw, req.Body, *bp)
		copyBufs.Put(bp)
		if err != nil {
			return fmt.Errorf("copy request body: %w", err)
		}
	}
	return bw.Flush()
}

// writeChunked writes what body holds to bw chunked with the shared
// codec (one chunk per read), then the last chunk.
func writeChunked(bw *bufio.Writer, body io.Reader, buf []byte) error {
	for {
		n, err := body.Read(buf)
		if n > 0 {
			bw.Write(http1.AppendChunkHeader(bw.AvailableBuffer(), int64(n)))
			bw.Write(buf[:n])
			if _, werr := bw.WriteString(http1.CRLF); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			_, err = bw.Write(http1.AppendLastChunk(bw.AvailableBuffer(), nil))
			return err
		}
		if err != nil {
			return err
		}
	}
}

// strictBody puts the shared strict codec under a chunked response that
// net/http read the head of (net/http's own chunked reader is laxer: it
// takes whitespace after a size, any bytes after a ";", any trailer
// field), first checking what came with the head: a body already broken
// there is refused before anything is relayed.
func strictBody(resp *http.Response, br *bufio.Reader) error {
	if resp.Body == http.NoBody || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		return nil
	}
	buf, _ := br.Peek(br.Buffered())
	if err := http1.CheckChunkedPrefix(buf, http1.ChunkedLimits{}); err != nil {
		return fmt.Errorf("%w: %w", errBadResponse, err)
	}
	resp.Body = &chunkedBody{br: br}
	return nil
}

// clientBody records the error reading a request body from the client
// met (io.EOF aside).
type clientBody struct {
	io.ReadCloser
	err error
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

func bodyless(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0
}

// forward sends req to the instance over a pooled connection and copies the
// answer back. A pooled connection the app closed meanwhile is retried once
// on a fresh one when the request has no body.
func (i *instance) forward(w http.ResponseWriter, req *http.Request) {
	if up := upgradeType(req.Header); up != "" {
		i.forwardUpgrade(w, req, up)
		return
	}
	ctx := req.Context()
	// A request body the client breaks (a malformed chunk, a cut) is
	// the client's fault: it is answered 400, not 502.
	var cb *clientBody
	if !bodyless(req) {
		cb = &clientBody{ReadCloser: req.Body}
		req.Body = cb
	}
	// A small body of known length is read first, so that it can be sent
	// again when a pooled connection turns out stale.
	var replay []byte
	if !bodyless(req) && req.ContentLength > 0 && req.ContentLength <= maxReplayBody {
		replay = make([]byte, req.ContentLength)
		if _, err := io.ReadFull(req.Body, replay); err != nil {
			http.Error(w, fmt.Sprintf("runner: reading the request body: %v", err), http.StatusBadRequest)
			return
		}
	}
	var resp *http.Response
	var bc *backendConn
	for attempt := 0; ; attempt++ {
		var reused bool
		var err error
		bc, reused, err = i.pool.get(ctx, attempt > 0)
		if err != nil {
			http.Error(w, fmt.Sprintf("runner: app %q instance %d: connect: %v", i.app.name, i.id, err), http.StatusBadGateway)
			return
		}
		if replay != nil {
			req.Body = io.NopCloser(bytes.NewReader(replay))
		}
		err = writeRequest(bc.bw, req, "")
		sendFailed := err != nil
		if err == nil {
			resp, err = http.ReadResponse(bc.br, req)
		}
		if err == nil {
			if err = strictBody(resp, bc.br); err != nil {
				bc.c.Close()
				http.Error(w, fmt.Sprintf("runner: app %q instance %d: %v", i.app.name, i.id, err), http.StatusBadGateway)
				return
			}
			break
		}
		bc.c.Close()
		if cb != nil && cb.err != nil && ctx.Err() == nil {
			w.Header().Set("Connection", "close")
			code := http.StatusBadRequest
			if tooLarge := (*http.MaxBytesError)(nil); errors.As(cb.err, &tooLarge) {
				code = http.StatusRequestEntityTooLarge // Config.MaxBodyBytes, mid-stream
			}
			http.Error(w, fmt.Sprintf("runner: reading the request body: %v", cb.err), code)
			return
		}
		timedOut := errors.Is(err, os.ErrDeadlineExceeded)
		// As in relay: without a body any failure may be a stale idle
		// connection; with one, only a failed send or a reset before the
		// answer proves the app did not take the request.
		if reused && attempt == 0 && ctx.Err() == nil && !timedOut &&
			(bodyless(req) || replay != nil && (sendFailed || unread(err, bc))) {
			continue
		}
		if ctx.Err() == nil {
			code := http.StatusBadGateway
			var tooLarge *http.MaxBytesError
			if timedOut {
				code = http.StatusGatewayTimeout
			} else if errors.As(err, &tooLarge) {
				code = http.StatusRequestEntityTooLarge // Config.MaxBodyBytes
			}
			http.Error(w, fmt.Sprintf("runner: app %q instance %d: %v", i.app.name, i.id, err), code)
		}
		return
	}
	h := w.Header()
	dropPlatformFields(resp.Header)
	conn := connectionTokens(resp.Header)
	for k, vv := range resp.Header {
		if hopHeaders[k] || conn[k] {
			continue
		}
		h[k] = vv
	}
	if resp.ContentLength >= 0 {
		h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	}
	w.WriteHeader(resp.StatusCode)
	streaming := resp.ContentLength < 0
	fl, _ := w.(http.Flusher)
	bp := copyBufs.Get().(*[]byte)
	buf := *bp
	clean := false
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				break
			}
			if streaming && fl != nil {
				fl.Flush()
			}
		}
		if rerr == io.EOF {
			clean = true
			break
		}
		if rerr != nil {
			break
		}
	}
	copyBufs.Put(bp)
	if !clean {
		// Closed first: resp.Body.Close reads a body it was not read to
		// its end, and an endless one (server-sent events) would hold
		// the instance in flight, and this goroutine, for good after
		// the client left.
		bc.c.Close()
	}
	resp.Body.Close()
	if clean && !resp.Close && !req.Close {
		i.pool.put(bc)
		return
	}
	bc.c.Close()
	if !clean {
		// The app's body broke (or the client went away) after the
		// head was sent: abort the client's connection rather than let
		// net/http end the response as if it were whole.
		panic(http.ErrAbortHandler)
	}
}

// forwardUpgrade relays a connection upgrade (WebSocket): the request goes
// on a fresh connection; on 101 both sides are spliced until either ends.
// The request counts as in flight all that time, so the instance is not
// reaped under an open WebSocket.
func (i *instance) forwardUpgrade(w http.ResponseWriter, req *http.Request, up string) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "runner: connection upgrade not supported here", http.StatusInternalServerError)
		return
	}
	c, err := i.dial(req.Context())
	if err != nil {
		http.Error(w, fmt.Sprintf("runner: app %q: connect: %v", i.app.name, err), http.StatusBadGateway)
		return
	}
	defer c.Close()
	// No read timeout: an open WebSocket may be quiet for long.
	bc := newBackendConn(c, 0)
	if err := writeRequest(bc.bw, req, up); err != nil {
		http.Error(w, fmt.Sprintf("runner: app %q: %v", i.app.name, err), http.StatusBadGateway)
		return
	}
	resp, err := http.ReadResponse(bc.br, req)
	if err == nil {
		err = strictBody(resp, bc.br)
	}
	if err != nil {
		http.Error(w, fmt.Sprintf("runner: app %q: %v", i.app.name, err), http.StatusBadGateway)
		return
	}
	dropPlatformFields(resp.Header)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		for k, vv := range resp.Header {
			if !hopHeaders[k] {
				w.Header()[k] = vv
			}
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		resp.Body.Close()
		return
	}
	cc, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer cc.Close()
	if err := resp.Write(cc); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() {
		// Client to app, including what the server had already buffered.
		_, _ = io.Copy(c, brw.Reader)
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(cc, bc.br)
		if cw, ok := cc.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	<-done
	<-done
}
