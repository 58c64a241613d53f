package balancer

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/http1/http1test"
	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/internal/proxyproto"
)

// raiseNofile makes the soft RLIMIT_NOFILE at least n (up to the hard
// limit, which must allow it).
func raiseNofile(t *testing.T, n uint64) {
	t.Helper()
	var rl syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl))
	if rl.Cur >= n {
		return
	}
	require.GreaterOrEqual(t, rl.Max, n, "the test needs %d descriptors: raise the hard RLIMIT_NOFILE (ulimit -Hn)", n)
	old := rl
	rl.Cur = n
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl))
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// dialFrom connects to the proxy from a loopback source address.
func dialFrom(t testing.TB, p *Proxy, src string) *rawConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", p.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

// echoXFF answers with the X-Forwarded-For it saw.
func echoXFF(t testing.TB) string {
	return addrOf(backendServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, r.Header.Get("X-Forwarded-For"))
	})))
}

// Ten thousand idle connections from one address hold its 1,024 slots
// (the default cap) and no more: the rest are closed as they come, and a
// client from another address, and the held ones, are served.
func TestTenThousandIdleConnsFromOneAddressAreCapped(t *testing.T) {
	raiseNofile(t, 12500)
	p := startProxy(t, Config{Table: table(t, map[string]string{"a": echoXFF(t)}, map[string]string{"*": ""})})
	const n = 10000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
	for i := 0; i < n; i++ {
		c, err := d.Dial("tcp", p.Addr().String())
		require.NoError(t, err, "dial %d", i)
		conns = append(conns, c)
	}
	one := netip.MustParseAddr("127.0.0.1")
	require.Eventually(t, func() bool { return p.ForwarderStats().Refused == n-1024 }, 30*time.Second, 20*time.Millisecond,
		"refused %d of %d", p.ForwarderStats().Refused, n)
	total, fromOne := p.gate.Held(one)
	require.Equal(t, 1024, fromOne)
	require.Equal(t, 1024, total)

	// Another address is served at once.
	rc := dialFrom(t, p, "127.0.0.2")
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := rc.response("GET")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "127.0.0.2", body)
	_ = rc.c.Close()

	// The held connections are served; the refused ones are closed.
	served, closed := http1test.ServedAndClosed(t, conns, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	require.Equal(t, 1024, served)
	require.Equal(t, n-1024, closed)
	for _, c := range conns {
		_ = c.Close()
	}
	require.Eventually(t, func() bool { total, _ := p.gate.Held(one); return total == 0 }, 10*time.Second, 10*time.Millisecond)
}

func TestProcessWideConnCap(t *testing.T) {
	p := startProxy(t, Config{MaxConns: 3, Table: table(t, map[string]string{"a": echoXFF(t)}, map[string]string{"*": ""})})
	for _, src := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		dialFrom(t, p, src)
	}
	require.Eventually(t, func() bool { total, _ := p.gate.Held(netip.Addr{}); return total == 3 }, 5*time.Second, 5*time.Millisecond)
	rc := dialFrom(t, p, "127.0.0.4")
	require.True(t, rc.closedByPeer(), "a connection over the process cap is closed")
}

// The default body limit is 100 MB: a Content-Length over it is
// answered 413 before a byte of body is read, and a chunked body that
// grows past it mid-stream is cut and answered 413; both close the
// connection.
func TestDefaultBodyLimit(t *testing.T) {
	var complete atomic.Int32
	a := addrOf(backendServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err == nil {
			complete.Add(1)
		}
	})))
	p := startProxy(t, Config{Table: table(t, map[string]string{"a": a}, map[string]string{"*": ""})})
	require.EqualValues(t, 100<<20, p.cfg.MaxBodyBytes)

	rc := dialRaw(t, p)
	rc.send(fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 100<<20+1))
	resp, _ := rc.response("POST")
	require.Equal(t, 413, resp.StatusCode)
	require.True(t, resp.Close, "Connection: close")
	require.True(t, rc.closedByPeer())

	rc = dialRaw(t, p)
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
	werr := make(chan error, 1)
	go func() {
		chunk := fmt.Sprintf("100000\r\n%s\r\n", strings.Repeat("z", 1<<20))
		for i := 0; i < 101; i++ { // 101 MiB: past the limit in the last chunk
			if _, err := io.WriteString(rc.c, chunk); err != nil {
				werr <- err
				return
			}
		}
		_, err := io.WriteString(rc.c, "0\r\n\r\n")
		werr <- err
	}()
	resp, _ = rc.response("POST")
	require.Equal(t, 413, resp.StatusCode)
	require.True(t, resp.Close, "Connection: close")
	require.True(t, rc.closedByPeer())
	<-werr
	require.Zero(t, complete.Load(), "the node never got a whole body")
}

func TestNegativeBodyLimitIsNone(t *testing.T) {
	got := make(chan int64, 1)
	a := addrOf(backendServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.ContentLength
	})))
	p := startProxy(t, Config{MaxBodyBytes: -1, Table: table(t, map[string]string{"a": a}, map[string]string{"*": ""})})
	rc := dialRaw(t, p)
	rc.send(fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nabc", int64(1)<<40))
	select {
	case n := <-got:
		require.EqualValues(t, int64(1)<<40, n)
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the node")
	}
}

// A panicking OnMiss answers the request 502, is counted, and the proxy
// serves on.
func TestPanickingOnMissIs502(t *testing.T) {
	var calls atomic.Int32
	a := missOnPath(t)
	p := startProxy(t, Config{
		Table: table(t, map[string]string{"a": a}, map[string]string{"*": ""}),
		OnMiss: func(context.Context, Miss) error {
			calls.Add(1)
			var m map[string]int
			m["boom"]++ // a nil map write: a real bug's panic
			return nil
		},
	})
	for i := 0; i < 3; i++ {
		resp, _ := get(t, &http.Client{}, proxyURL(p)+"/miss", "x.example.com")
		require.Equal(t, 502, resp.StatusCode)
	}
	require.EqualValues(t, 3, calls.Load())
	require.EqualValues(t, 3, p.ForwarderStats().HookPanics)
	resp, body := get(t, &http.Client{}, proxyURL(p)+"/", "x.example.com")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "fine", body)
}

func TestProxyProtocol(t *testing.T) {
	p := startProxy(t, Config{
		Table:          table(t, map[string]string{"a": echoXFF(t)}, map[string]string{"*": ""}),
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		MaxConnsPerIP:  2,
	})
	client := netip.MustParseAddrPort("203.0.113.9:4711")
	dst := netip.MustParseAddrPort("127.0.0.1:80")
	req := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	for name, hdr := range map[string][]byte{
		"v1":       proxyproto.AppendV1(nil, client, dst),
		"v2":       proxyproto.AppendV2(nil, client, dst, []byte{4, 0, 1, 'x'}),
		"v2 local": proxyproto.AppendV2Local(nil),
	} {
		rc := dialFrom(t, p, "127.0.0.2")
		rc.send(string(hdr) + req + req)
		want := "203.0.113.9"
		if name == "v2 local" {
			want = "127.0.0.2" // the proxy's own connection
		}
		for i := 0; i < 2; i++ { // keep-alive: the header names the client for the whole connection
			resp, body := rc.response("GET")
			require.Equal(t, 200, resp.StatusCode, name)
			require.Equal(t, want, body, name)
		}
	}

	// The client behind the trusted proxy is capped by its own address.
	for i := 0; i < 2; i++ {
		rc := dialFrom(t, p, "127.0.0.2")
		rc.send(string(proxyproto.AppendV1(nil, netip.MustParseAddrPort("198.51.100.7:1"), dst)) + req)
		resp, _ := rc.response("GET")
		require.Equal(t, 200, resp.StatusCode)
	}
	rc := dialFrom(t, p, "127.0.0.2")
	rc.send(string(proxyproto.AppendV1(nil, netip.MustParseAddrPort("198.51.100.7:2"), dst)) + req)
	require.True(t, rc.closedByPeer(), "third connection of a capped client behind the proxy")

	for name, tc := range map[string]struct{ src, in string }{
		"untrusted v1":         {"127.0.0.1", string(proxyproto.AppendV1(nil, client, dst)) + req},
		"untrusted v2":         {"127.0.0.1", string(proxyproto.AppendV2(nil, client, dst, nil)) + req},
		"trusted malformed v1": {"127.0.0.2", "PROXY TCP4 203.0.113.9 127.0.0.1 4711 99999\r\n" + req},
		"trusted malformed v2": {"127.0.0.2", string(proxyproto.AppendV2(nil, client, dst, []byte{4, 0, 9})) + req},
		"trusted without":      {"127.0.0.2", req},
		"trusted truncated v1": {"127.0.0.2", "PROXY TCP4 203.0.113.9 "},
		"trusted truncated v2": {"127.0.0.2", string(proxyproto.AppendV2(nil, client, dst, nil)[:19])},
	} {
		rc := dialFrom(t, p, tc.src)
		rc.send(tc.in)
		if strings.Contains(name, "truncated") {
			require.NoError(t, rc.c.(*net.TCPConn).CloseWrite())
		}
		require.True(t, rc.closedByPeer(), name)
	}

	// And the proxy serves on.
	rc = dialFrom(t, p, "127.0.0.1")
	rc.send(req)
	resp, body := rc.response("GET")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "127.0.0.1", body)
}

// A client that does not read a large response holds only bounded bytes
// in the proxy: the node is stalled by flow control well before it has
// sent the body, and the body arrives whole once the client reads.
func TestSlowReaderStallsTheNode(t *testing.T) {
	t.Run("autotuned", func(t *testing.T) { slowReaderStallsTheNode(t, 0, 64<<20/4) })
	t.Run("SocketBuffer 64 KiB", func(t *testing.T) { slowReaderStallsTheNode(t, 64<<10, 2<<20) })
}

func slowReaderStallsTheNode(t *testing.T, sockBuf int, bound int64) {
	const size = 64 << 20
	var sent atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_ = c.(*net.TCPConn).SetWriteBuffer(64 << 10)
		_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
		buf := make([]byte, 32<<10)
		for sent.Load() < size {
			n, err := c.Write(buf)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	p := startProxy(t, Config{SocketBuffer: sockBuf, Table: table(t, map[string]string{"a": ln.Addr().String()}, map[string]string{"*": ""})})
	rc := dialRaw(t, p)
	_ = rc.c.(*net.TCPConn).SetReadBuffer(64 << 10)
	rc.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	var last int64 = -1
	require.Eventually(t, func() bool {
		s := sent.Load()
		stalled := s == last && s > 0
		last = s
		return stalled
	}, 15*time.Second, 300*time.Millisecond)
	t.Logf("the node stalled after %d of %d bytes", sent.Load(), size)
	require.Less(t, sent.Load(), bound, "the proxy must not buffer the body")
	resp, err := http.ReadResponse(rc.br, nil)
	require.NoError(t, err)
	n, err := io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)
	require.EqualValues(t, size, n)
}

// A node that does not read a large upload stalls the client the same
// way: the proxy holds a bounded part of the body, not the body.
func TestSlowNodeStallsTheUpload(t *testing.T) {
	t.Run("autotuned", func(t *testing.T) { slowNodeStallsTheUpload(t, 0, 64<<20/4) })
	t.Run("SocketBuffer 64 KiB", func(t *testing.T) { slowNodeStallsTheUpload(t, 64<<10, 2<<20) })
}

func slowNodeStallsTheUpload(t *testing.T, sockBuf int, bound int64) {
	const size = 64 << 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	release := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		<-release // a stalled app
		n, _ := io.Copy(io.Discard, req.Body)
		_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d", len(fmt.Sprint(n)), n)
	}()
	p := startProxy(t, Config{SocketBuffer: sockBuf, Table: table(t, map[string]string{"a": ln.Addr().String()}, map[string]string{"*": ""})})
	rc := dialRaw(t, p)
	_ = rc.c.(*net.TCPConn).SetWriteBuffer(64 << 10)
	rc.send(fmt.Sprintf("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size))
	var written atomic.Int64
	werr := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		for written.Load() < size {
			n, err := rc.c.Write(buf)
			written.Add(int64(n))
			if err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	var last int64 = -1
	require.Eventually(t, func() bool {
		s := written.Load()
		stalled := s == last && s > 0
		last = s
		return stalled
	}, 15*time.Second, 300*time.Millisecond)
	t.Logf("the client stalled after %d of %d bytes", written.Load(), size)
	require.Less(t, written.Load(), bound, "the proxy must not buffer the upload")
	close(release)
	require.NoError(t, <-werr)
	resp, body := rc.response("POST")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, fmt.Sprint(size), body)
}

// On a TLS listener the PROXY header comes before the handshake, on the
// plain socket, and the caps count the client it names.
func TestProxyProtocolBeforeTLS(t *testing.T) {
	dir := t.TempDir()
	pool := x509.NewCertPool()
	pool.AddCert(writeCert(t, dir, "a", "a.test"))
	p := startProxy(t, Config{
		Table:          table(t, map[string]string{"a": echoXFF(t)}, map[string]string{"*": ""}),
		TLSCertDir:     dir,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		MaxConnsPerIP:  1,
	})
	dst := netip.MustParseAddrPort("127.0.0.1:443")
	tlsGet := func(src string, hdr []byte) (string, error) {
		rc := dialFrom(t, p, src)
		if hdr != nil {
			rc.send(string(hdr))
		}
		tc := tls.Client(rc.c, &tls.Config{RootCAs: pool, ServerName: "a.test"})
		if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"); err != nil {
			return "", err
		}
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			return "", err
		}
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	body, err := tlsGet("127.0.0.2", proxyproto.AppendV2(nil, netip.MustParseAddrPort("203.0.113.9:1"), dst, nil))
	require.NoError(t, err)
	require.Equal(t, "203.0.113.9", body)
	body, err = tlsGet("127.0.0.1", nil)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", body)
	// Untrusted PROXY header: the TLS handshake never starts.
	_, err = tlsGet("127.0.0.1", proxyproto.AppendV1(nil, netip.MustParseAddrPort("203.0.113.9:1"), dst))
	require.Error(t, err)
	// The per-address cap holds under TLS: a second connection from
	// 127.0.0.3 while the first is open is closed.
	first := dialFrom(t, p, "127.0.0.3")
	require.Eventually(t, func() bool { _, n := p.gate.Held(netip.MustParseAddr("127.0.0.3")); return n == 1 }, 5*time.Second, 5*time.Millisecond)
	_, err = tlsGet("127.0.0.3", nil)
	require.Error(t, err)
	_ = first.c.Close()
}

// syncBuf is a log sink safe for the proxy's goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The OnMiss panic is logged with its stack (the suite runs on both
// forwarders), and a request after it, on another connection, is served
// whole: nothing of the failed exchange splices into it.
func TestPanickingOnMissIsLoggedWithItsStack(t *testing.T) {
	a := missOnPath(t)
	var logs syncBuf
	p := startProxy(t, Config{
		Table:  table(t, map[string]string{"a": a}, map[string]string{"*": ""}),
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		OnMiss: func(context.Context, Miss) error { panic("miss hook bug") },
	})
	rc := dialRaw(t, p)
	rc.send("GET /miss HTTP/1.1\r\nHost: x.example.com\r\n\r\n")
	resp, _ := rc.response("GET")
	require.Equal(t, 502, resp.StatusCode)
	require.True(t, rc.closedByPeer())
	out := logs.String()
	require.Contains(t, out, "miss hook bug")
	require.Contains(t, out, "stack=")
	require.Contains(t, out, "callOnMiss", "the stack names the hook's caller")
	rc = dialRaw(t, p)
	rc.send("GET / HTTP/1.1\r\nHost: x.example.com\r\n\r\n")
	resp, body := rc.response("GET")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "fine", body)
}
