package balancer

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testLogger writes the proxy's logs to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startProxy runs a proxy on a loopback port until the test ends, and
// checks that Run returns cleanly.
func startProxy(t testing.TB, cfg Config) *Proxy {
	t.Helper()
	if cfg.Listener == nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		cfg.Listener = ln
	}
	testForwarder(&cfg)
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 2 * time.Second
	}
	p, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-p.Ready()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return p
}

// backendServer is a real net/http server on loopback.
func backendServer(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// missOnPath is a node that answers /miss with a miss (404, the miss
// header set, body "missed") and anything else with "fine"; it returns
// its address.
func missOnPath(t testing.TB) string {
	return addrOf(backendServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/miss" {
			w.Header().Set("X-Paaskit-Miss", "1")
			w.WriteHeader(404)
			_, _ = io.WriteString(w, "missed")
			return
		}
		_, _ = io.WriteString(w, "fine")
	})))
}

func addrOf(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// table builds a table from "id=addr" nodes and "host=id,id" sites.
func table(t testing.TB, nodes map[string]string, sites map[string]string) *Table {
	t.Helper()
	var cfg TableConfig
	for id, addr := range nodes {
		cfg.Nodes = append(cfg.Nodes, Node{ID: id, Addr: addr})
	}
	for host, ids := range sites {
		s := Site{Host: host}
		if ids != "" {
			s.Nodes = strings.Split(ids, ",")
		}
		cfg.Sites = append(cfg.Sites, s)
	}
	tb, err := NewTable(cfg)
	require.NoError(t, err)
	return tb
}

// rawConn is a client speaking raw bytes to the proxy.
type rawConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, p *Proxy) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	_, err := io.WriteString(r.c, s)
	require.NoError(r.t, err)
}

// response reads one response and its whole body.
func (r *rawConn) response(method string) (*http.Response, string) {
	r.t.Helper()
	resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
	require.NoError(r.t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(r.t, err)
	_ = resp.Body.Close()
	return resp, string(body)
}

// closedByPeer reports whether the connection ends (EOF or reset) without
// more bytes.
func (r *rawConn) closedByPeer() bool {
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := r.br.ReadByte()
	if err == nil {
		r.t.Logf("unexpected byte %q", b)
		return false
	}
	return true
}

func get(t testing.TB, c *http.Client, url, host string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	require.NoError(t, err)
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	_ = resp.Body.Close()
	return resp, string(body)
}

func proxyURL(p *Proxy) string { return "http://" + p.Addr().String() }
