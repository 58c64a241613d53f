package connproxy

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/http1"
	"github.com/paaskit/paaskit/internal/http1/http1test"
	"github.com/paaskit/paaskit/internal/proxytest"
	"github.com/stretchr/testify/require"
)

// startHTTP serves a Proxy's ServeHTTP from a net/http server, its
// handler forwarding to the backend at target.
func startHTTP(t *testing.T, target string, mod func(*Config, *testHandler)) *harness {
	t.Helper()
	hs := newHarness(t, target, mod)
	h := hs.h
	srv := httptest.NewUnstartedServer(hs.p)
	// net/http's own panics (a handler's are recovered and logged
	// through p's Logger) fail the test.
	srvLog := &logBuf{}
	srv.Config.ErrorLog = log.New(srvLog, "", 0)
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		h.pool.Close()
		require.NotContains(t, srvLog.String(), "panic", "net/http's server log")
		require.Zero(t, h.bad.Load(), "a Done or End out of order")
		// A tunnel's ServeHTTP outlives srv.Close (its connection was
		// hijacked) until both its ends closed.
		require.Eventually(t, func() bool { return h.forwards.Load() == h.ends.Load() }, 10*time.Second, time.Millisecond,
			"every Forward ends once")
	})
	hs.addr = srv.Listener.Addr().String()
	return hs
}

// strictBackend reads each request head raw and checks it with the
// strict parser (and its body with the strict codec); it answers "ok"
// to a valid one and counts the invalid ones in bad.
func strictBackend(t *testing.T, seen, bad *atomic.Int64) string {
	return proxytest.Backend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			var head []byte
			for {
				line, err := br.ReadBytes('\n')
				if err != nil {
					return
				}
				head = append(head, line...)
				if string(line) == "\r\n" || string(line) == "\n" {
					break
				}
			}
			seen.Add(1)
			var h http1.Head
			if err := http1.ParseRequestHead(head, &h, 100, ""); err != nil {
				bad.Add(1)
				return
			}
			switch {
			case h.Chunked:
				var d http1.ChunkedDecoder
				for !d.Done() {
					b, err := br.Peek(1)
					if err != nil {
						return
					}
					b, _ = br.Peek(br.Buffered())
					n, _, err := d.Decode(b)
					if err != nil {
						bad.Add(1)
						return
					}
					_, _ = br.Discard(n)
				}
			case h.ContentLength > 0:
				if _, err := io.CopyN(io.Discard, br, h.ContentLength); err != nil {
					return
				}
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
}

// On ServeHTTP's path net/http reads the client's bytes: each smuggling
// case is refused by it or by the strict parser (400, 417, 501, 505),
// or, where net/http takes it (it unfolds obs-fold, lets chunked win
// over Content-Length, takes a bare LF or an absolute target), the
// target gets it as one request in strict HTTP/1.1 form, and the client
// connection goes on in step: the next request is answered on it.
func TestServeHTTPSmugglingReachesTheTargetStrictOrNotAtAll(t *testing.T) {
	var seen, bad atomic.Int64
	h := startHTTP(t, strictBackend(t, &seen, &bad), nil)
	// The cases whose body breaks may reach the target after their
	// answer: they come last, so that the counts of the others are exact.
	names := make([]string, 0, len(http1test.SmugglingRequests))
	for name := range http1test.SmugglingRequests {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		ci, cj := strings.Contains(names[i], "chunk"), strings.Contains(names[j], "chunk")
		return !ci && cj || ci == cj && names[i] < names[j]
	})
	for _, name := range names {
		raw := http1test.SmugglingRequests[name]
		t.Run(name, func(t *testing.T) {
			before := seen.Load()
			c, br := proxytest.Dial(t, h.addr)
			resp, body := proxytest.RoundTrip(t, c, br, raw)
			if resp.StatusCode >= 400 {
				if !strings.Contains(name, "chunk") {
					require.Equal(t, before, seen.Load(), "%d %q: a refused request reached the target", resp.StatusCode, body)
				}
				return
			}
			t.Logf("net/http took it: the target got %d request(s)", seen.Load()-before)
			require.Equal(t, 200, resp.StatusCode)
			require.Equal(t, "ok", body)
			require.Equal(t, before+1, seen.Load(), "one request reached the target")
			if !resp.Close {
				resp, body = proxytest.RoundTrip(t, c, br, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
				require.Equal(t, "ok", body)
				require.Equal(t, before+2, seen.Load())
			}
		})
	}
	require.Zero(t, bad.Load(), "a request the strict parser refuses reached the target")
}

// The forwarded request is the one Serve's path sends: X-Forwarded-*
// set, a chunked upload re-framed, Expect answered by net/http; the
// client connection stays open across requests; response trailers are
// passed on.
func TestServeHTTPForwards(t *testing.T) {
	addr := backend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/trailer" {
			w.Header().Set("Trailer", "X-Sum")
			_, _ = io.WriteString(w, "body")
			w.(http.Flusher).Flush()
			w.Header().Set("X-Sum", "42")
			return
		}
		echo(w, r)
	})
	h := startHTTP(t, addr, nil)
	c, br := proxytest.Dial(t, h.addr)
	resp, body := proxytest.RoundTrip(t, c, br, "GET /a HTTP/1.1\r\nHost: Example.COM:80\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "GET /a 0:", body)
	require.Equal(t, "10.0.0.1, 127.0.0.1|http|Example.COM:80", resp.Header.Get("X-Fwd"))
	big := strings.Repeat("b", 200<<10) // streamed, not read ahead
	resp, body = proxytest.RoundTrip(t, c, br, fmt.Sprintf("PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(big), big))
	require.Equal(t, "PUT /big 204800:"+big, body)
	uploadThenExpect(t, c, br)
	resp, body = proxytest.RoundTrip(t, c, br, "GET /trailer HTTP/1.1\r\nHost: x\r\n\r\n")
	require.Equal(t, "body", body)
	require.Equal(t, "42", resp.Trailer.Get("X-Sum"))
	require.Equal(t, int64(5), h.p.Stats().Requests)
}

// MaxBodyBytes on ServeHTTP's path: a Content-Length over it is answered
// 413 before routing, a chunked body that grows past it is cut and
// answered 413, and the target never gets a whole body.
func TestServeHTTPBodyLimit(t *testing.T) {
	var whole atomic.Int64
	addr := backend(t, func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err == nil {
			whole.Add(1)
		}
	})
	h := startHTTP(t, addr, func(cfg *Config, _ *testHandler) { cfg.MaxBodyBytes = 100 << 10 })
	c, br := proxytest.Dial(t, h.addr)
	resp, _ := proxytest.RoundTrip(t, c, br, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 102401\r\n\r\n")
	require.Equal(t, 413, resp.StatusCode)
	c, br = proxytest.Dial(t, h.addr)
	chunk := fmt.Sprintf("8000\r\n%s\r\n", strings.Repeat("z", 32<<10))
	resp, _ = proxytest.RoundTrip(t, c, br, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+strings.Repeat(chunk, 4)+"0\r\n\r\n")
	require.Equal(t, 413, resp.StatusCode)
	require.Zero(t, whole.Load(), "the target never got a whole body")
	require.Equal(t, h.h.forwards.Load(), h.h.ends.Load())
}

// A panicking Route answers 502 on ServeHTTP's path, logged with its
// stack and counted, and the next request is served.
func TestServeHTTPPanickingRouteAnswers502AndServesOn(t *testing.T) {
	h := startHTTP(t, backend(t, echo), panicOnce)
	c, br := proxytest.Dial(t, h.addr)
	resp, _ := proxytest.RoundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	require.Equal(t, 502, resp.StatusCode)
	require.Contains(t, h.log.String(), "route boom")
	require.Contains(t, h.log.String(), "stack=")
	require.Equal(t, int64(1), h.p.Stats().Panics)
	resp, body := proxytest.RoundTrip(t, c, br, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "GET /b 0:", body)
}

// An Upgrade the target accepts hijacks net/http's connection and
// tunnels it, bytes the client sent early included.
func TestServeHTTPUpgradeTunnels(t *testing.T) {
	h := startHTTP(t, upgradeEcho(t), nil)
	c, br := proxytest.Dial(t, h.addr)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, 101, resp.StatusCode)
	_, err = io.WriteString(c, "ping")
	require.NoError(t, err)
	got := make([]byte, 4)
	_, err = io.ReadFull(br, got)
	require.NoError(t, err)
	require.Equal(t, "ping", string(got))
}
