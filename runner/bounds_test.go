package runner_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/http1/http1test"
	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/internal/proxyproto"
	"github.com/paaskit/paaskit/runner"
)

func dialFrom(t *testing.T, e *env, src string) (net.Conn, *bufio.Reader) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", e.front)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return c, bufio.NewReader(c)
}

func exchange(t *testing.T, c net.Conn, br *bufio.Reader, req string) (*http.Response, string) {
	t.Helper()
	_, err := io.WriteString(c, req)
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

func closedWithoutAnswer(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return n == 0 && err != nil
}

// Ten thousand idle connections from one address are capped at the
// front's MaxConnsPerIP; another address is served, on the loops and on
// the goroutine path (the suite runs on both).
func TestFrontCapsTenThousandIdleConnsFromOneAddress(t *testing.T) {
	var rl syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl))
	require.GreaterOrEqual(t, rl.Max, uint64(12500), "the test needs 12,500 descriptors: raise the hard RLIMIT_NOFILE")
	if rl.Cur < 12500 {
		old := rl
		rl.Cur = 12500
		require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl))
		t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	}
	e := newEnv(t, func(c *runner.Config) { c.MaxConnsPerIP = 1000 })
	e.put(spec("capped"))
	// Started from another address: the suite's shared client keeps an
	// idle connection from 127.0.0.1, which would hold a slot.
	wc, wbr := dialFrom(t, e, "127.0.0.3")
	resp, body := exchange(t, wc, wbr, "GET / HTTP/1.1\r\nHost: capped.example\r\nConnection: close\r\n\r\n")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "hello capped\n", body)
	const n = 10000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
	for i := 0; i < n; i++ {
		c, err := d.Dial("tcp", e.front)
		require.NoError(t, err, "dial %d", i)
		conns = append(conns, c)
	}
	c, br := dialFrom(t, e, "127.0.0.2")
	resp, body = exchange(t, c, br, "GET /xff HTTP/1.1\r\nHost: capped.example\r\n\r\n")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "127.0.0.2", body)
	served, closed := http1test.ServedAndClosed(t, conns, "GET / HTTP/1.1\r\nHost: capped.example\r\nConnection: close\r\n\r\n")
	require.Equal(t, 1000, served)
	require.Equal(t, n-1000, closed)
}

// Config.MaxBodyBytes (default 100 MB) answers 413 on Serve's fronts
// (the suite runs on both) and on Runner.ServeHTTP's.
func TestFrontBodyLimit(t *testing.T) {
	for _, handler := range []bool{false, true} {
		name := "Serve"
		if handler {
			name = "ServeHTTP"
		}
		t.Run(name, func(t *testing.T) { testBodyLimit(t, handler) })
	}
}

func testBodyLimit(t *testing.T, handler bool) {
	e := newEnvFront(t, nil, handler)
	e.put(spec("big"))
	require.Equal(t, "hello big\n", e.mustGet("big.example", "/"))
	// The default, 100 MB, by Content-Length.
	c, br := dialFrom(t, e, "127.0.0.1")
	resp, _ := exchange(t, c, br, fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: big.example\r\nContent-Length: %d\r\n\r\n", 100<<20+1))
	require.Equal(t, 413, resp.StatusCode)
	require.True(t, resp.Close)

	e = newEnvFront(t, func(c *runner.Config) { c.MaxBodyBytes = 1 << 20 }, handler)
	e.put(spec("small"))
	require.Equal(t, "hello small\n", e.mustGet("small.example", "/"))
	c, br = dialFrom(t, e, "127.0.0.1")
	resp, _ = exchange(t, c, br, fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: small.example\r\nContent-Length: %d\r\n\r\n", 1<<20+1))
	require.Equal(t, 413, resp.StatusCode)
	require.True(t, resp.Close)
	require.True(t, closedWithoutAnswer(t, c))
	// Within the limit: served.
	c, br = dialFrom(t, e, "127.0.0.1")
	resp, body := exchange(t, c, br, "POST /echo HTTP/1.1\r\nHost: small.example\r\nContent-Length: 5\r\n\r\nhello")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "5 hello", body)
	// Chunked, past the limit mid-stream.
	c, br = dialFrom(t, e, "127.0.0.1")
	_, err := io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: small.example\r\nTransfer-Encoding: chunked\r\n\r\n")
	require.NoError(t, err)
	go func() {
		chunk := fmt.Sprintf("10000\r\n%s\r\n", strings.Repeat("q", 1<<16))
		for i := 0; i < 20; i++ { // 1.25 MiB
			if _, err := io.WriteString(c, chunk); err != nil {
				return
			}
		}
		_, _ = io.WriteString(c, "0\r\n\r\n")
	}()
	resp, err = http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, 413, resp.StatusCode)
	require.True(t, resp.Close)
}

func TestFrontProxyProtocol(t *testing.T) {
	e := newEnv(t, func(c *runner.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
		c.MaxConnsPerIP = 2
	})
	e.put(spec("pp"))
	require.Equal(t, "hello pp\n", e.mustGet("pp.example", "/"))
	client := netip.MustParseAddrPort("203.0.113.9:4711")
	dst := netip.MustParseAddrPort("127.0.0.1:80")
	req := "GET /xff HTTP/1.1\r\nHost: pp.example\r\n\r\n"
	for name, hdr := range map[string][]byte{
		"v1": proxyproto.AppendV1(nil, client, dst),
		"v2": proxyproto.AppendV2(nil, client, dst, nil),
	} {
		c, br := dialFrom(t, e, "127.0.0.2")
		for i := 0; i < 2; i++ {
			in := req
			if i == 0 {
				in = string(hdr) + req
			}
			resp, body := exchange(t, c, br, in)
			require.Equal(t, 200, resp.StatusCode, name)
			require.Equal(t, "203.0.113.9", body, name)
		}
	}
	for name, tc := range map[string]struct{ src, in string }{
		"untrusted v1":       {"127.0.0.1", string(proxyproto.AppendV1(nil, client, dst)) + req},
		"untrusted v2":       {"127.0.0.1", string(proxyproto.AppendV2(nil, client, dst, nil)) + req},
		"trusted malformed":  {"127.0.0.2", "PROXY TCP4 203.0.113.9 127.0.0.1 4711 99999\r\n" + req},
		"trusted without":    {"127.0.0.2", req},
		"trusted truncated":  {"127.0.0.2", "PROXY TCP4 203.0.113.9 "},
		"trusted v2 trunc":   {"127.0.0.2", string(proxyproto.AppendV2(nil, client, dst, nil)[:19])},
		"trusted v2 bad TLV": {"127.0.0.2", string(proxyproto.AppendV2(nil, client, dst, []byte{4, 0, 9})) + req},
	} {
		c, _ := dialFrom(t, e, tc.src)
		_, err := io.WriteString(c, tc.in)
		require.NoError(t, err)
		if strings.Contains(name, "trunc") {
			require.NoError(t, c.(*net.TCPConn).CloseWrite())
		}
		require.True(t, closedWithoutAnswer(t, c), name)
	}
	c, br := dialFrom(t, e, "127.0.0.1")
	resp, body := exchange(t, c, br, req)
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "127.0.0.1", body)
}

// A Sink that panics loses its lines, not the runner: the app's output
// goes on being read, and the front serves on.
func TestPanickingSinkLeavesTheRunnerServing(t *testing.T) {
	for _, f := range fronts {
		t.Run(f.name, func(t *testing.T) { testPanickingSink(t, f) })
	}
}

func testPanickingSink(t *testing.T, f front) {
	var calls atomic.Int64
	e := newEnvFront(t, func(c *runner.Config) {
		if f.tweak != nil {
			f.tweak(c)
		}
		c.Sink = runner.SinkFunc(func(*runner.Line) error {
			calls.Add(1)
			panic("sink bug")
		})
	}, f.handler)
	e.put(spec("noisy"))
	for i := 0; i < 3; i++ {
		require.Equal(t, "ok\n", e.mustGet("noisy.example", fmt.Sprintf("/stderr?s=line%d", i)))
	}
	require.Eventually(t, func() bool { return calls.Load() >= 3 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "hello noisy\n", e.mustGet("noisy.example", "/"))
}

// The balancer's X-Forwarded-Proto and X-Forwarded-Host reach the app on
// both paths of the front (the suite runs on both; warm requests take the
// event loops in the default run); a request without them gets the
// front's own. Before, the loops replaced the balancer's "https" with
// "http", so an app behind TLS saw a different scheme depending on
// which path served the request.
func TestForwardedSchemeAndHostReachTheApp(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("fwd"))
	c, br := dialFrom(t, e, "127.0.0.4")
	resp, _ := exchange(t, c, br, "GET / HTTP/1.1\r\nHost: fwd.example\r\n\r\n") // starts it
	require.Equal(t, 200, resp.StatusCode)
	before := e.r.FrontStats().LoopRequests
	resp, body := exchange(t, c, br, "GET /forwarded HTTP/1.1\r\nHost: fwd.example\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: www.example.com\r\n\r\n")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "https www.example.com", body)
	resp, body = exchange(t, c, br, "GET /forwarded HTTP/1.1\r\nHost: fwd.example\r\n\r\n")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "http fwd.example", body)
	if os.Getenv(frontEnv) != "goroutines" {
		require.Greater(t, e.r.FrontStats().LoopRequests, before, "the warm requests took the event loops")
	}
}
