package runner

import (
	"bufio"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"

	"github.com/paaskit/paaskit/internal/admit"
	"github.com/paaskit/paaskit/internal/proxyproto"
)

// DefaultMaxBodyBytes is the request body limit when Config.MaxBodyBytes
// is 0: 100 MB, as the balancer's.
const DefaultMaxBodyBytes = 100 << 20

// setBoundsDefaults applies the defaults of the front's bounds and
// returns the gate that admits its connections.
func setBoundsDefaults(cfg *Config) (*admit.Gate, error) {
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxConnBuffer == 0 {
		cfg.MaxConnBuffer = 16 << 10
	}
	if cfg.MaxConnBuffer < 0 || cfg.MaxConnBuffer > 16<<20 {
		return nil, fmt.Errorf("runner: MaxConnBuffer %d is outside 0 (default) to 16 MiB", cfg.MaxConnBuffer)
	}
	perIP := cfg.MaxConnsPerIP
	if perIP == 0 {
		perIP = -1 // see Config.MaxConnsPerIP
	}
	g, err := admit.New(admit.Config{MaxConns: cfg.MaxConns, MaxConnsPerIP: perIP, TrustedProxies: cfg.TrustedProxies, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	return g, nil
}

// tooLarge answers 413 for a request whose Content-Length is over
// Config.MaxBodyBytes, without reading the body, and closes the
// connection (false: it carries nothing more).
func (f *front) tooLarge(rq *reqHead, bw *bufio.Writer) bool {
	body := "runner: request body larger than " + strconv.FormatInt(f.r.cfg.MaxBodyBytes, 10) + " bytes\n"
	fmt.Fprintf(bw, "HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(body))
	if !rq.head {
		bw.WriteString(body)
	}
	_ = bw.Flush()
	return false
}

// limitBody applies Config.MaxBodyBytes on ServeHTTP's path: it answers
// 413 (and reports false) for a Content-Length over it, and otherwise
// bounds the body as it is read (a chunked one that grows past it fails
// the read with *http.MaxBytesError, which forward answers 413).
func (r *Runner) limitBody(w http.ResponseWriter, req *http.Request) bool {
	limit := r.cfg.MaxBodyBytes
	if limit <= 0 || bodyless(req) {
		return true
	}
	if req.ContentLength > limit {
		w.Header().Set("Connection", "close")
		http.Error(w, "runner: request body larger than "+strconv.FormatInt(limit, 10)+" bytes", http.StatusRequestEntityTooLarge)
		return false
	}
	req.Body = http.MaxBytesReader(w, req.Body, limit)
	return true
}

// recoverConn ends a front connection goroutine that panicked: the
// panic is logged with its stack, the connection closed by the
// goroutine's other deferred calls, and the front serves on. Deferred
// first, it runs last.
func (f *front) recoverConn(where string) {
	if v := recover(); v != nil {
		f.r.log.Error("runner: panic recovered", "in", where, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	}
}

// recoverHandler wraps the front's net/http handler: a panic in it is
// logged with its stack (the slow server's own log is discarded) and
// answered 502 if nothing was written yet.
type recoverHandler struct {
	r *Runner
}

func (h recoverHandler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			h.r.log.Error("runner: panic recovered", "in", "front handler", "host", req.Host, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			w.Header().Set("Connection", "close")
			http.Error(w, "runner: the front failed on this request", http.StatusBadGateway)
		}
	}()
	h.r.ServeHTTP(w, req)
}

// untrustedProxyHeader reports (and logs) a connection whose buffered
// first bytes are a PROXY header: a trusted source's is read by admit
// before anything else, so this one came from another and is refused
// by closing the connection.
func (cc *clientConn) untrustedProxyHeader() bool {
	b, _ := cc.br.Peek(cc.br.Buffered())
	if isHeader, _ := proxyproto.Sniff(b); !isHeader {
		return false
	}
	cc.f.r.log.Warn("runner: PROXY header from an untrusted source; closing", "client", cc.clientIP)
	return true
}

// writeLineSafe is Sink.WriteLine with a panic in it turned into an
// error that carries its stack (reported like a failed write, once), so
// that a broken sink loses lines instead of taking the runner down.
func writeLineSafe(s Sink, l *Line) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("runner: Sink.WriteLine panicked: %v\n%s", v, debug.Stack())
		}
	}()
	return s.WriteLine(l)
}
