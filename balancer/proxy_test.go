package balancer

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/http1/http1test"
	"github.com/paaskit/paaskit/internal/proxytest"
	"github.com/stretchr/testify/require"
)

// echoInfo answers with what the node saw.
func echoInfo(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Node", name)
		fmt.Fprintf(w, "node=%s host=%s xff=%s proto=%s xhost=%s foo=%q ka=%q te=%q path=%s",
			name, r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"),
			r.Header.Get("X-Forwarded-Host"), r.Header.Get("Foo"), r.Header.Get("Keep-Alive"), r.Header.Get("Te"), r.URL.RequestURI())
	})
}

func TestForwardsWithKeepAliveAndForwardedHeaders(t *testing.T) {
	var conns atomic.Int32
	be := httptest.NewUnstartedServer(echoInfo("a"))
	be.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	be.Start()
	t.Cleanup(be.Close)
	p := startProxy(t, Config{Table: table(t, map[string]string{"a": addrOf(be)}, map[string]string{"example.com": ""})})
	rc := dialRaw(t, p)
	for i := 0; i < 5; i++ {
		rc.send("GET /x?y=" + fmt.Sprint(i) + " HTTP/1.1\r\nHost: Example.com\r\nConnection: keep-alive, Foo\r\nFoo: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n")
		resp, body := rc.response("GET")
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, "a", resp.Header.Get("X-Node"))
		require.Equal(t, fmt.Sprintf(`node=a host=Example.com xff=203.0.113.9, 127.0.0.1 proto=http xhost=Example.com foo="" ka="" te="" path=/x?y=%d`, i), body)
		require.False(t, resp.Close)
	}
	require.EqualValues(t, 1, conns.Load(), "the node connection is reused")
}

func TestHostWithPortCaseAndTrailingDotRoutes(t *testing.T) {
	a := backendServer(t, echoInfo("a"))
	b := backendServer(t, echoInfo("b"))
	p := startProxy(t, Config{Table: table(t,
		map[string]string{"a": addrOf(a), "b": addrOf(b)},
		map[string]string{"example.com": "a", "*.apps.example.com": "b"})})
	c := &http.Client{}
	for host, want := range map[string]string{
		"example.com": "a", "EXAMPLE.com": "a", "example.com.": "a", "example.com:8080": "a", "Example.COM.:80": "a",
		"x.apps.example.com": "b", "X.Apps.Example.Com.:443": "b",
	} {
		resp, _ := get(t, c, proxyURL(p)+"/", host)
		require.Equal(t, 200, resp.StatusCode, host)
		require.Equal(t, want, resp.Header.Get("X-Node"), host)
	}
}

func TestUnknownHostIs404NamingHost(t *testing.T) {
	a := backendServer(t, echoInfo("a"))
	p := startProxy(t, Config{Table: table(t, map[string]string{"a": addrOf(a)}, map[string]string{"example.com": ""})})
	resp, body := get(t, &http.Client{}, proxyURL(p)+"/", "Nope.Example.ORG")
	require.Equal(t, 404, resp.StatusCode)
	require.Contains(t, body, "nope.example.org")
	require.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"))
}

func TestNoLiveNodeIs503WithRetryAfter(t *testing.T) {
	dead := deadAddr(t)
	clk := newFakeClock()
	p := startProxy(t, Config{
		Table:      table(t, map[string]string{"a": dead}, map[string]string{"example.com": ""}),
		EjectAfter: time.Nanosecond, RetryAfter: 7 * time.Second, Clock: clk,
	})
	c := &http.Client{}
	resp, _ := get(t, c, proxyURL(p)+"/", "example.com")
	require.Equal(t, 502, resp.StatusCode, "first failure: cannot reach")
	require.False(t, p.Nodes()[0].Ejected, "within the grace period")
	clk.Advance(time.Nanosecond)
	resp, _ = get(t, c, proxyURL(p)+"/", "example.com")
	require.Equal(t, 502, resp.StatusCode, "the failure that ejects it")
	require.True(t, p.Nodes()[0].Ejected)
	resp, body := get(t, c, proxyURL(p)+"/", "example.com")
	require.Equal(t, 503, resp.StatusCode, "no node left")
	require.Equal(t, "7", resp.Header.Get("Retry-After"))
	require.Contains(t, body, "example.com")
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t testing.TB) string {
	addr, _ := deadAddrRevivable(t)
	return addr
}

// deadAddrRevivable is deadAddr with a way to bring the node up on that
// address later: revive frees the port and listens on it at once.
func deadAddrRevivable(t testing.TB) (addr string, revive func() net.Listener) {
	// A port bound but never listening, held until the test ends:
	// connecting to it is refused, and no listener can take it
	// meanwhile. A port freed at once (a listener closed) can be taken
	// by the next listen on port 0 of any process, the proxy's own
	// included; the "dead" node is then the proxy itself, and a request
	// for its sites loops through the proxy until its head is too large
	// (431: TestNodeThatIsTheProxyItselfLoopsTo431).
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	var once sync.Once
	release := func() { once.Do(func() { _ = syscall.Close(fd) }) }
	t.Cleanup(release)
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err)
	addr = fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	return addr, func() net.Listener {
		release()
		ln, err := net.Listen("tcp", addr)
		require.NoError(t, err)
		return ln
	}
}

// TestDeadAddrCannotBeTaken: the port deadAddr returns refuses
// connections and cannot be listened on while the test runs.
func TestDeadAddrCannotBeTaken(t *testing.T) {
	addr := deadAddr(t)
	_, err := net.DialTimeout("tcp", addr, time.Second)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	_, err = net.Listen("tcp", addr)
	require.ErrorIs(t, err, syscall.EADDRINUSE)
}

// TestNodeThatIsTheProxyItselfLoopsTo431 reproduces the flake of
// TestEventLoopPathServesRoutesAndHeals ("got 431 on retry after a dead
// node"): deadAddr used to close its listener at once, and when the
// proxy's own listener then took that port, the dead node b was the
// proxy. A request for b's host went round the proxy, one X-Forwarded-For
// entry longer each time, until the head passed MaxHeaderBytes and the
// innermost hop answered 431, which every hop relayed. No input buffer
// was left in a bad state; deadAddr now holds its port.
// TestNodeThatIsTheProxyItselfLoopsTo431: each hop adds to the head, so
// the loop ends at MaxHeaderBytes. At 1 KiB that is about 80 hops. At 4
// KiB (about 330 nested hops, two descriptors each, held at once) it
// took 0.1-0.2 s, but once in CI the goroutine path answered 504 after
// 60 s instead: not explained; the descriptor limit shared with the
// suite's parallel tests is the likely cause, not confirmed.
func TestNodeThatIsTheProxyItselfLoopsTo431(t *testing.T) {
	a := backendServer(t, echoInfo("a"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	tb := table(t, map[string]string{"a": addrOf(a), "b": ln.Addr().String()}, map[string]string{"*": ""})
	p := startProxy(t, Config{Listener: ln, Table: tb, MaxHeaderBytes: 1024})
	resp, _ := get(t, &http.Client{}, proxyURL(p)+"/", hostOn(t, tb, "b"))
	require.Equal(t, 431, resp.StatusCode)
}

func TestSlowlorisIsCutOffOthersServed(t *testing.T) {
	a := backendServer(t, echoInfo("a"))
	p := startProxy(t, Config{
		Table:             table(t, map[string]string{"a": addrOf(a)}, map[string]string{"*": ""}),
		ReadHeaderTimeout: 300 * time.Millisecond,
	})
	slow := dialRaw(t, p)
	slow.send("GET / HTTP/1.1\r\n")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := fmt.Fprintf(slow.c, "X-%d: y\r\n", i); err != nil {
					return
				}
			}
		}
	}()
	// Others are served meanwhile.
	for i := 0; i < 3; i++ {
		resp, _ := get(t, &http.Client{}, proxyURL(p)+"/", "example.com")
		require.Equal(t, 200, resp.StatusCode)
	}
	// The trickler gets 408 and the connection is closed.
	resp, err := http.ReadResponse(slow.br, nil)
	require.NoError(t, err)
	require.Equal(t, 408, resp.StatusCode)
	_, _ = io.ReadAll(resp.Body)
	require.True(t, slow.closedByPeer())
	close(stop)
	wg.Wait()
}

func TestIdleClientIsClosed(t *testing.T) {
	a := backendServer(t, echoInfo("a"))
	p := startProxy(t, Config{
		Table:       table(t, map[string]string{"a": addrOf(a)}, map[string]string{"*": ""}),
		IdleTimeout: 200 * time.Millisecond,
	})
	rc := dialRaw(t, p)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, _ := rc.response("GET")
	require.Equal(t, 200, resp.StatusCode)
	require.True(t, rc.closedByPeer())
}

func TestClientDisconnectsMidBody(t *testing.T) {
	bodyErr := make(chan error, 1)
	a := backendServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/upload" {
			bodyErr <- err
		}
		_, _ = io.WriteString(w, "ok")
	}))
	p := startProxy(t, Config{Table: table(t, map[string]string{"a": addrOf(a)}, map[string]string{"*": ""})})
	rc := dialRaw(t, p)
	rc.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + strings.Repeat("z", 5000))
	require.NoError(t, rc.c.Close())
	select {
	case err := <-bodyErr:
		require.Error(t, err, "the node sees the body cut short")
	case <-time.After(10 * time.Second):
		t.Fatal("node never saw the aborted body end")
	}
	resp, body := get(t, &http.Client{}, proxyURL(p)+"/after", "x")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "ok", body)
}

// rawBackend runs a TCP server whose connections are handled by fn, each
// with a 30 s deadline.
func rawBackend(t testing.TB, fn func(c net.Conn, br *bufio.Reader)) string {
	return proxytest.Backend(t, func(c net.Conn, br *bufio.Reader) {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		fn(c, br)
	})
}

var readReq = proxytest.ReadRequest

func TestBackendClosesMidResponse(t *testing.T) {
	addr := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		r, err := readReq(br)
		if err != nil {
			return
		}
		if r.URL.Path == "/cut" {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
			return // close mid-body
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	p := startProxy(t, Config{Table: table(t, map[string]string{"a": addr}, map[string]string{"*": ""})})
	rc := dialRaw(t, p)
	rc.send("GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(rc.br, nil)
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF, "the client sees the truncation, not a short success")
	require.Equal(t, "0123456789", string(body))
	resp2, body2 := get(t, &http.Client{}, proxyURL(p)+"/fine", "x")
	require.Equal(t, 200, resp2.StatusCode)
	require.Equal(t, "ok", body2)
}

func TestBackendNeverAnswersIs504(t *testing.T) {
	release := make(chan struct{})
	addr := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readReq(br); err != nil {
			return
		}
		<-release
	})
	t.Cleanup(func() { close(release) })
	p := startProxy(t, Config{
		Table:                 table(t, map[string]string{"a": addr}, map[string]string{"*": ""}),
		ResponseHeaderTimeout: 300 * time.Millisecond,
	})
	resp, body := get(t, &http.Client{}, proxyURL(p)+"/", "x")
	require.Equal(t, 504, resp.StatusCode)
	require.Contains(t, body, "did not answer")
}

// The node must never see a request the proxy refuses.
func TestSmugglingAndMalformedRequestsAre400(t *testing.T) {
	var seen atomic.Int64
	addr := rawBackend(t, proxytest.CountOK(&seen))
	p := startProxy(t, Config{Table: table(t, map[string]string{"a": addr}, map[string]string{"*": ""})})
	cases := http1test.SmugglingRequests
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			before := seen.Load()
			rc := dialRaw(t, p)
			rc.send(raw)
			resp, _ := rc.response("POST")
			require.Equal(t, 400, resp.StatusCode)
			require.True(t, resp.Close)
			require.True(t, rc.closedByPeer())
			if !strings.Contains(name, "chunk") {
				require.Equal(t, before, seen.Load(), "the node saw a refused request")
			}
		})
	}
}

// A chunked response whose body is broken in what came with its head (a
// bad size, a missing CRLF, an oversized trailer) is answered 502 and
// closed; the node connection is not reused, and the next request, on a
// fresh client connection, is served (by a fresh node connection). With
// a GET on the loops' path, with a chunked POST on the goroutine path
// (the loops hand chunked requests off), and the whole suite runs again
// with the loops off.
func TestMalformedChunkedResponseIs502(t *testing.T) {
	for name, bad := range http1test.BadChunkedResponses {
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			broken := map[string]bool{} // the node connections that sent a bad body
			addr := proxytest.BadChunked(t, bad, func(n string) {
				mu.Lock()
				broken[n] = true
				mu.Unlock()
			}, false)
			p := startProxy(t, Config{Table: table(t, map[string]string{"a": addr}, map[string]string{"*": ""})})
			for _, req := range []string{
				"GET /bad HTTP/1.1\r\nHost: x\r\n\r\n",
				"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
			} {
				rc := dialRaw(t, p)
				rc.send(req)
				resp, _ := rc.response("GET")
				require.Equal(t, 502, resp.StatusCode, "%q", req)
				require.True(t, resp.Close)
				require.True(t, rc.closedByPeer())
				rc = dialRaw(t, p)
				rc.send("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, body := rc.response("GET")
				require.Equal(t, 200, resp.StatusCode)
				mu.Lock()
				require.False(t, broken[body], "served on node connection %s, which sent a broken body", body)
				mu.Unlock()
			}
		})
	}
}

// A chunked response that breaks after its head was relayed cuts the
// client (an error reading the body, never a short body read as whole),
// and the next request is served; on both paths (the suite runs twice).
func TestMalformedChunkedResponseLaterCutsTheClient(t *testing.T) {
	for name, bad := range http1test.BadChunkedResponses {
		t.Run(name, func(t *testing.T) {
			addr := proxytest.CutChunked(t, bad)
			p := startProxy(t, Config{Table: table(t, map[string]string{"a": addr}, map[string]string{"*": ""})})
			rc := dialRaw(t, p)
			proxytest.CutBody(t, rc.c, rc.br, "GET /bad HTTP/1.1\r\nHost: x\r\n\r\n")
			rc = dialRaw(t, p)
			rc.send("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, got := rc.response("GET")
			require.Equal(t, 200, resp.StatusCode)
			require.Equal(t, "ok", got)
		})
	}
}

func TestHeadTooLargeIs431(t *testing.T) {
	a := backendServer(t, echoInfo("a"))
	p := startProxy(t, Config{
		Table:          table(t, map[string]string{"a": addrOf(a)}, map[string]string{"*": ""}),
		MaxHeaderBytes: 1024, MaxHeaderFields: 10,
	})
	rc := dialRaw(t, p)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2000) + "\r\n\r\n")
	resp, _ := rc.response("GET")
	require.Equal(t, 431, resp.StatusCode)

	rc = dialRaw(t, p)
	var b strings.Builder
	b.WriteString("GET / HTTP/1.1\r\nHost: x\r\n")
	for i := 0; i < 11; i++ {
		fmt.Fprintf(&b, "X-%d: y\r\n", i)
	}
	b.WriteString("\r\n")
	rc.send(b.String())
	resp, _ = rc.response("GET")
	require.Equal(t, 431, resp.StatusCode)
}

func TestBodyTooLargeIs413(t *testing.T) {
	var seen atomic.Int32
	a := backendServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	p := startProxy(t, Config{
		Table:        table(t, map[string]string{"a": addrOf(a)}, map[string]string{"*": ""}),
		MaxBodyBytes: 100,
	})
	rc := dialRaw(t, p)
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
	resp, _ := rc.response("POST")
	require.Equal(t, 413, resp.StatusCode)
	require.EqualValues(t, 0, seen.Load())

	rc = dialRaw(t, p)
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + strings.Repeat("a", 64) + "\r\n40\r\n" + strings.Repeat("b", 64) + "\r\n0\r\n\r\n")
	resp, _ = rc.response("POST")
	require.Equal(t, 413, resp.StatusCode)
}

// A chunked request body streams to the node and a chunked response
// streams back, piece by piece, with neither side buffered whole.
func TestChunkedStreamingBothWays(t *testing.T) {
	a := backendServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fl := w.(http.Flusher)
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			panic(err)
		}
		w.Header().Set("Trailer", "X-Sum")
		buf := make([]byte, 5)
		n := 0
		for {
			_, err := io.ReadFull(r.Body, buf)
			if err != nil {
				break
			}
			n++
			_, _ = w.Write([]byte(strings.ToUpper(string(buf))))
			fl.Flush()
		}
		w.Header().Set("X-Sum", fmt.Sprint(n))
	}))
	p := startProxy(t, Config{Table: table(t, map[string]string{"a": addrOf(a)}, map[string]string{"*": ""})})
	rc := dialRaw(t, p)
	rc.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: "POST"})
	require.NoError(t, err)
	require.Equal(t, []string{"chunked"}, resp.TransferEncoding)
	got := make([]byte, 5)
	_, err = io.ReadFull(resp.Body, got)
	require.NoError(t, err)
	require.Equal(t, "HELLO", string(got), "first piece arrives before the request body ends")
	rc.send("5\r\nworld\r\n")
	_, err = io.ReadFull(resp.Body, got)
	require.NoError(t, err)
	require.Equal(t, "WORLD", string(got))
	rc.send("0\r\n\r\n")
	rest, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Empty(t, rest)
	require.Equal(t, "2", resp.Trailer.Get("X-Sum"), "trailers pass through")
}

func TestHTTP10ClientAndPipelining(t *testing.T) {
	a := backendServer(t, echoInfo("a"))
	p := startProxy(t, Config{Table: table(t, map[string]string{"a": addrOf(a)}, map[string]string{"*": ""})})
	rc := dialRaw(t, p)
	rc.send("GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /3 HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, path := range []string{"/1", "/2"} {
		resp, body := rc.response("GET")
		require.Equal(t, 200, resp.StatusCode)
		require.Contains(t, body, "path="+path)
	}
	resp, body := rc.response("HEAD")
	require.Equal(t, 200, resp.StatusCode)
	require.Empty(t, body)

	rc = dialRaw(t, p)
	rc.send("GET /old HTTP/1.0\r\n\r\n")
	resp, body = rc.response("GET")
	require.Equal(t, 200, resp.StatusCode)
	require.Contains(t, body, "path=/old")
	require.True(t, rc.closedByPeer(), "HTTP/1.0 without keep-alive is closed")
}

func TestWebSocketUpgradeTunnel(t *testing.T) {
	a := backendServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" || !strings.EqualFold(r.Header.Get("Connection"), "upgrade") {
			http.Error(w, "want upgrade", 400)
			return
		}
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+wsAccept(r.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n")
		// Echo lines until the client closes.
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, "echo:"+line); err != nil {
				return
			}
		}
	}))
	p := startProxy(t, Config{Table: table(t, map[string]string{"a": addrOf(a)}, map[string]string{"*": ""})})
	rc := dialRaw(t, p)
	rc.send("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	resp, err := http.ReadResponse(rc.br, nil)
	require.NoError(t, err)
	require.Equal(t, 101, resp.StatusCode)
	require.Equal(t, "websocket", resp.Header.Get("Upgrade"))
	require.Equal(t, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", resp.Header.Get("Sec-WebSocket-Accept"))
	for i := 0; i < 3; i++ {
		rc.send(fmt.Sprintf("ping %d\n", i))
		line, err := rc.br.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("echo:ping %d\n", i), line)
	}
	// Closing our side ends the tunnel on the node side too.
	require.NoError(t, rc.c.(*net.TCPConn).CloseWrite())
	require.True(t, rc.closedByPeer())
}

func TestMissHookRetriesOnce(t *testing.T) {
	var started atomic.Bool
	a := backendServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !started.Load() {
			w.Header().Set("X-Paaskit-Miss", "1")
			w.WriteHeader(404)
			_, _ = io.WriteString(w, "no app here")
			return
		}
		_, _ = io.WriteString(w, "app says hi")
	}))
	var calls []Miss
	var mu sync.Mutex
	p := startProxy(t, Config{
		Table: table(t, map[string]string{"a": addrOf(a)}, map[string]string{"*": ""}),
		OnMiss: func(_ context.Context, m Miss) error {
			mu.Lock()
			calls = append(calls, m)
			mu.Unlock()
			started.Store(true)
			return nil
		},
	})
	resp, body := get(t, &http.Client{}, proxyURL(p)+"/", "App.Example.com")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "app says hi", body)
	mu.Lock()
	require.Equal(t, []Miss{{Host: "app.example.com", Node: Node{ID: "a", Addr: addrOf(a)}}}, calls)
	mu.Unlock()

	// A second miss after the retry goes to the client as is.
	started.Store(false)
	calls = nil
	pNoStart := startProxy(t, Config{
		Table:  table(t, map[string]string{"a": addrOf(a)}, map[string]string{"*": ""}),
		OnMiss: func(context.Context, Miss) error { mu.Lock(); calls = append(calls, Miss{}); mu.Unlock(); return nil },
	})
	resp, body = get(t, &http.Client{}, proxyURL(pNoStart)+"/", "x.example.com")
	require.Equal(t, 404, resp.StatusCode)
	require.Equal(t, "no app here", body)
	mu.Lock()
	require.Len(t, calls, 1, "the hook fires once per request")
	mu.Unlock()

	// A failing hook gives 502.
	pFail := startProxy(t, Config{
		Table:  table(t, map[string]string{"a": addrOf(a)}, map[string]string{"*": ""}),
		OnMiss: func(context.Context, Miss) error { return errors.New("cannot start") },
	})
	resp, _ = get(t, &http.Client{}, proxyURL(pFail)+"/", "x.example.com")
	require.Equal(t, 502, resp.StatusCode)
}

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}
