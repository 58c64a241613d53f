package pyindex

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ServerConfig configures a Server. The zero value serves immediately,
// without PEP 658 metadata files and without faults.
type ServerConfig struct {
	// Latency is added to every request before it is answered, to model
	// a remote index.
	Latency time.Duration
	// Metadata serves PEP 658/714 core-metadata files for wheels and
	// announces them on the project pages.
	Metadata bool
	// MaxAge, when positive, is sent as Cache-Control: max-age on index
	// pages (PyPI sends 600 s); files are always sent as immutable for a
	// year, as PyPI does. Every page carries an ETag, and a request whose
	// If-None-Match matches gets 304 Not Modified.
	MaxAge time.Duration
	// JSON serves PEP 691 JSON project pages to a client whose Accept
	// header prefers application/vnd.pypi.simple.v1+json; otherwise only
	// PEP 503 HTML is served, whatever the client asks.
	JSON bool
	// Addr is the address to listen on; "" means "127.0.0.1:0". With an
	// unspecified host ("0.0.0.0:0") the index is reachable from network
	// namespaces too (a sandboxed build allowed to reach it), and URL
	// still names 127.0.0.1.
	Addr string
	// Drop maps a filename to how many of its downloads are cut off: the
	// server sends the headers and half the body, then closes the
	// connection. A negative count drops every download.
	Drop map[string]int
}

// Server serves an Index over HTTP on a loopback port.
type Server struct {
	ix   *Index
	cfg  ServerConfig
	ln   net.Listener
	srv  *http.Server
	done chan error

	mu    sync.Mutex
	drops map[string]int

	requests, notModified, jsonPages atomic.Int64
}

// Serve starts serving ix on cfg.Addr (by default 127.0.0.1 on a free
// port). Close stops it.
func Serve(ix *Index, cfg ServerConfig) (*Server, error) {
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pyindex: listen: %w", err)
	}
	s := &Server{ix: ix, cfg: cfg, ln: ln, done: make(chan error, 1), drops: map[string]int{}}
	for k, v := range cfg.Drop {
		s.drops[k] = v
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s, nil
}

// URL is the index's simple URL, ending in "/simple/".
func (s *Server) URL() string { return "http://" + s.hostPort() + "/simple/" }

// Port is the port the index listens on.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// hostPort is the listening address, with 127.0.0.1 for an unspecified
// host.
func (s *Server) hostPort() string {
	a := s.ln.Addr().(*net.TCPAddr)
	if a.IP.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", fmt.Sprint(a.Port))
	}
	return a.String()
}

// FileURL is the download URL of one file.
func (s *Server) FileURL(filename string) string {
	return "http://" + s.hostPort() + "/files/" + filename
}

// Requests is how many requests the server has received.
func (s *Server) Requests() int64 { return s.requests.Load() }

// JSONPages is how many PEP 691 JSON project pages it has served.
func (s *Server) JSONPages() int64 { return s.jsonPages.Load() }

// NotModified is how many of them were answered 304 Not Modified.
func (s *Server) NotModified() int64 { return s.notModified.Load() }

// Close stops the server and waits for it.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		// A client may hold a connection it dialed but never used
		// (net/http counts it as active for 5 s): cut it.
		err = s.srv.Close()
	}
	if serr := <-s.done; serr != nil && err == nil {
		err = serr
	}
	return err
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if s.cfg.Latency > 0 {
		t := time.NewTimer(s.cfg.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	p := r.URL.Path
	switch {
	case p == "/simple/" || p == "/simple":
		s.serveRoot(w)
	case strings.HasPrefix(p, "/simple/"):
		name := strings.Trim(strings.TrimPrefix(p, "/simple/"), "/")
		if Normalize(name) != name {
			http.Redirect(w, r, "/simple/"+Normalize(name)+"/", http.StatusMovedPermanently)
			return
		}
		s.serveProject(w, r, name)
	case strings.HasPrefix(p, "/files/"):
		s.serveFile(w, r, strings.TrimPrefix(p, "/files/"))
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) serveRoot(w http.ResponseWriter) {
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.0\"><title>Simple index</title></head><body>\n")
	for _, p := range s.ix.Projects() {
		fmt.Fprintf(&b, "<a href=\"%s/\">%s</a><br/>\n", p, p)
	}
	b.WriteString("</body></html>\n")
	w.Header().Set("Content-Type", "text/html")
	_, _ = w.Write([]byte(b.String()))
}

const jsonType = "application/vnd.pypi.simple.v1+json"

// wantsJSON reports whether an Accept header prefers PEP 691 JSON to HTML:
// it names the JSON type with a quality at least that of any HTML type.
func wantsJSON(accept string) bool {
	best := func(match func(string) bool) float64 {
		q := -1.0
		for _, part := range strings.Split(accept, ",") {
			fields := strings.Split(part, ";")
			if !match(strings.TrimSpace(fields[0])) {
				continue
			}
			v := 1.0
			for _, f := range fields[1:] {
				if x, ok := strings.CutPrefix(strings.TrimSpace(f), "q="); ok {
					if pv, err := strconv.ParseFloat(x, 64); err == nil {
						v = pv
					}
				}
			}
			if v > q {
				q = v
			}
		}
		return q
	}
	j := best(func(t string) bool { return t == jsonType })
	h := best(func(t string) bool { return t == "text/html" || t == "application/vnd.pypi.simple.v1+html" })
	return j > 0 && j >= h
}

// writePage answers with body, or 304 when the client's If-None-Match holds
// the page's ETag.
func (s *Server) writePage(w http.ResponseWriter, r *http.Request, contentType string, body []byte) {
	etag := `"` + sha(body)[:32] + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Vary", "Accept")
	if s.cfg.MaxAge > 0 {
		w.Header().Set("Cache-Control", fmt.Sprintf("max-age=%d, public", int(s.cfg.MaxAge.Seconds())))
	}
	for _, t := range strings.Split(r.Header.Get("If-None-Match"), ",") {
		if strings.TrimSpace(t) == etag {
			s.notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

func (s *Server) serveProject(w http.ResponseWriter, r *http.Request, name string) {
	files, ok := s.ix.projects[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if s.cfg.JSON && wantsJSON(r.Header.Get("Accept")) {
		type jsonFile struct {
			Filename       string            `json:"filename"`
			URL            string            `json:"url"`
			Hashes         map[string]string `json:"hashes"`
			RequiresPython string            `json:"requires-python,omitempty"`
			Yanked         any               `json:"yanked,omitempty"`
			CoreMetadata   any               `json:"core-metadata,omitempty"`
		}
		page := struct {
			Meta  map[string]string `json:"meta"`
			Name  string            `json:"name"`
			Files []jsonFile        `json:"files"`
		}{Meta: map[string]string{"api-version": "1.0"}, Name: name}
		for _, f := range files {
			jf := jsonFile{Filename: f.Filename, URL: "../../files/" + f.Filename, Hashes: map[string]string{"sha256": f.SHA256}, RequiresPython: f.Dist.RequiresPython}
			if f.Dist.Yanked != "" {
				jf.Yanked = f.Dist.Yanked
			}
			if s.cfg.Metadata && len(f.Metadata) > 0 {
				jf.CoreMetadata = map[string]string{"sha256": sha(f.Metadata)}
			}
			page.Files = append(page.Files, jf)
		}
		body, err := json.Marshal(page)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		s.jsonPages.Add(1)
		s.writePage(w, r, jsonType, body)
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.0\"><title>Links for %s</title></head><body>\n<h1>Links for %s</h1>\n", name, name)
	for _, f := range files {
		attrs := ""
		if f.Dist.RequiresPython != "" {
			attrs += fmt.Sprintf(" data-requires-python=\"%s\"", html.EscapeString(f.Dist.RequiresPython))
		}
		if f.Dist.Yanked != "" {
			attrs += fmt.Sprintf(" data-yanked=\"%s\"", html.EscapeString(f.Dist.Yanked))
		}
		if s.cfg.Metadata && len(f.Metadata) > 0 {
			attrs += fmt.Sprintf(" data-dist-info-metadata=\"sha256=%s\" data-core-metadata=\"sha256=%s\"", sha(f.Metadata), sha(f.Metadata))
		}
		fmt.Fprintf(&b, "<a href=\"../../files/%s#sha256=%s\"%s>%s</a><br/>\n", f.Filename, f.SHA256, attrs, f.Filename)
	}
	b.WriteString("</body></html>\n")
	s.writePage(w, r, "text/html", []byte(b.String()))
}

func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, name string) {
	w.Header().Set("Cache-Control", "max-age=31557600, immutable, public")
	if strings.HasSuffix(name, ".metadata") && s.cfg.Metadata {
		f := s.ix.byName[strings.TrimSuffix(name, ".metadata")]
		if f == nil || len(f.Metadata) == 0 {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(f.Metadata)
		return
	}
	f := s.ix.byName[name]
	if f == nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(f.Data)))
	if s.takeDrop(name) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(f.Data[:len(f.Data)/2])
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		// Cut the connection with the body half sent.
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_ = c.Close()
			}
		}
		return
	}
	_, _ = w.Write(f.Data)
}

func (s *Server) takeDrop(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.drops[name]
	if !ok || n == 0 {
		return false
	}
	if n > 0 {
		s.drops[name] = n - 1
	}
	return true
}

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// WriteDir writes every file into dir, for pip's and the installer's
// --find-links.
func (ix *Index) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("pyindex: %w", err)
	}
	for _, f := range ix.Files() {
		if err := os.WriteFile(filepath.Join(dir, f.Filename), f.Data, 0o644); err != nil {
			return fmt.Errorf("pyindex: %w", err)
		}
	}
	return nil
}
