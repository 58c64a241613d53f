package runner

import (
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"

	"github.com/paaskit/paaskit/internal/admit"
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
