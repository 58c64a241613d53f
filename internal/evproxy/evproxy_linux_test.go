package evproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/http1/http1test"
	"github.com/paaskit/paaskit/internal/proxytest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// testHandler routes every request to targets[0], then (after a
// connection failure) to the next target.
type testHandler struct {
	mu       sync.Mutex
	targets  []Target
	outcomes []Outcome
	routes   atomic.Int64
	decide   func(r *Request) *Decision

	// Forward decisions, Done and End calls, and End calls that came
	// without their Done first or twice.
	forwards, dones, ends, badEnds atomic.Int64
}

// endTag marks a Forward decision's Request from Route to End.
type endTag struct{ done, ended bool }

func (h *testHandler) Route(r *Request) Decision {
	d := h.route(r)
	if d.Action == Forward {
		h.forwards.Add(1)
		r.Tag = &endTag{}
	}
	return d
}

func (h *testHandler) route(r *Request) Decision {
	h.routes.Add(1)
	if h.decide != nil {
		if d := h.decide(r); d != nil {
			return *d
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(r.Tried) >= len(h.targets) {
		return Decision{Action: Reply, Status: 502, Reason: "Bad Gateway", Body: "no target left\n"}
	}
	i := len(r.Tried)
	return Decision{Action: Forward, Target: h.targets[i], ID: int32(i), Replayable: len(r.Head.Method) == 3 && string(r.Head.Method) == "GET"}
}

func (h *testHandler) Done(r *Request, o Outcome) {
	h.dones.Add(1)
	if et, ok := r.Tag.(*endTag); ok {
		et.done = true
	}
	h.mu.Lock()
	h.outcomes = append(h.outcomes, o)
	h.mu.Unlock()
}

func (h *testHandler) End(r *Request) {
	h.ends.Add(1)
	et, ok := r.Tag.(*endTag)
	if !ok || !et.done || et.ended {
		h.badEnds.Add(1)
		return
	}
	et.ended = true
}

func (h *testHandler) seen() []Outcome {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Outcome(nil), h.outcomes...)
}

type handedOff struct {
	c        net.Conn
	buffered []byte
}

type harness struct {
	addr    string
	h       *testHandler
	p       *Proxy
	handoff chan handedOff
}

func start(t *testing.T, h *testHandler, mod func(*Config)) *harness {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	hs := &harness{addr: ln.Addr().String(), h: h, handoff: make(chan handedOff, 16)}
	cfg := Config{
		Listener: ln,
		Handler:  h,
		Handoff: func(c net.Conn, b []byte) {
			hs.handoff <- handedOff{c, b}
		},
		Loops:      2,
		MissHeader: "x-miss",
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	require.NoError(t, err)
	hs.p = p
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
			// Every Forward decision got one Done and then one End,
			// whatever path its exchange took.
			require.Equal(t, h.forwards.Load(), h.dones.Load(), "Done once per Forward decision")
			require.Equal(t, h.forwards.Load(), h.ends.Load(), "End once per Forward decision")
			require.Zero(t, h.badEnds.Load(), "End after its Done, once")
		case <-time.After(15 * time.Second):
			t.Error("Run did not return")
		}
		_ = ln.Close()
		for {
			select {
			case ho := <-hs.handoff:
				_ = ho.c.Close()
				continue
			default:
			}
			break
		}
	})
	return hs
}

// backend serves each connection with fn on a real TCP socket.
var backend = proxytest.Backend

// echoBackend answers each request with its method, path, body size and
// the X-Forwarded-For it saw.
func echoBackend(t *testing.T) string {
	return backend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, _ := io.ReadAll(r.Body)
			body := fmt.Sprintf("%s %s %d %s %s", r.Method, r.URL.Path, len(b), r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"))
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
				return
			}
		}
	})
}

func tcp(addr string) Target { return Target{Network: "tcp", Addr: addr} }

var (
	dial      = proxytest.Dial
	readBody  = proxytest.ReadBody
	roundTrip = proxytest.RoundTrip
)

// handedOff waits for the next connection handed off.
func (hs *harness) handedOff(t *testing.T) handedOff {
	t.Helper()
	select {
	case ho := <-hs.handoff:
		return ho
	case <-time.After(10 * time.Second):
		t.Fatal("no hand-off")
		return handedOff{}
	}
}

func TestForwardsAndKeepsAlive(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // after the others
	h := &testHandler{targets: []Target{tcp(echoBackend(t))}}
	hs := start(t, h, nil)
	cl := &http.Client{}
	for i := 0; i < 20; i++ {
		resp, err := cl.Post("http://"+hs.addr+"/p"+strconv.Itoa(i), "text/plain", strings.NewReader("hello"))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, fmt.Sprintf("POST /p%d 5 127.0.0.1 %s", i, hs.addr), string(b))
	}
	cl.CloseIdleConnections()
	require.EqualValues(t, 20, hs.p.Stats().Requests)
	require.Zero(t, hs.p.Stats().Handoffs)
	// The client can have the last byte a moment before the loop pools
	// the target connection.
	require.Eventually(t, func() bool { return hs.p.Stats().IdleConns >= 1 }, 5*time.Second, time.Millisecond, "the target connection is pooled")
}

// A loop kept busy yields its P now and then (so that the runtime's
// sysmon has no reason to preempt it), and serves on across the yields.
func TestBusyLoopYields(t *testing.T) {
	h := &testHandler{targets: []Target{tcp(echoBackend(t))}}
	hs := start(t, h, func(c *Config) { c.Loops = 1 })
	yields := func() int64 {
		if ls := hs.p.loopsP.Load(); ls != nil {
			return (*ls)[0].nyield.Load()
		}
		return 0
	}
	cl := &http.Client{}
	defer cl.CloseIdleConnections()
	n := 0
	// Back-to-back requests keep the loop handling events; a few
	// multiples of yieldEvery of them must show yields, however slow
	// the machine: the loop counts its own time.
	for ; yields() < 3 && n < 200000; n++ {
		resp, err := cl.Get("http://" + hs.addr + "/y")
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, "GET /y 0 127.0.0.1 "+hs.addr, string(b))
	}
	require.GreaterOrEqual(t, yields(), int64(3), "the busy loop yielded (after %d requests)", n)
	require.EqualValues(t, n, hs.p.Stats().Requests)
}

func TestPipelinedRequests(t *testing.T) {
	h := &testHandler{targets: []Target{tcp(echoBackend(t))}}
	hs := start(t, h, nil)
	c, br := dial(t, hs.addr)
	var all strings.Builder
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&all, "GET /r%d HTTP/1.1\r\nHost: h\r\n\r\n", i)
	}
	all.WriteString("POST /last HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
	_, err := io.WriteString(c, all.String())
	require.NoError(t, err)
	for i := 0; i < 50; i++ {
		_, body := readBody(t, br)
		require.Equal(t, fmt.Sprintf("GET /r%d 0 127.0.0.1 h", i), body)
	}
	_, body := readBody(t, br)
	require.Equal(t, "POST /last 3 127.0.0.1 h", body)
}

func TestChunkedResponseIsReframed(t *testing.T) {
	addr := backend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n")
			time.Sleep(10 * time.Millisecond) // split across reads
			_, _ = io.WriteString(c, "6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
		}
	})
	hs := start(t, &testHandler{targets: []Target{tcp(addr)}}, nil)
	c, br := dial(t, hs.addr)
	for i := 0; i < 3; i++ {
		resp, body := roundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		require.Equal(t, "hello world", body)
		require.Equal(t, []string{"chunked"}, resp.TransferEncoding)
		require.Equal(t, "t", resp.Trailer.Get("X-Trailer"))
	}
}

// TestMalformedChunkedResponseAnswers502: a chunked body that is broken
// in what came with the head is answered with 502 and a close, the
// target connection is not reused, and a fresh client connection is
// served (by a fresh target connection).
func TestMalformedChunkedResponseAnswers502(t *testing.T) {
	for name, body := range http1test.BadChunkedResponses {
		t.Run(name, func(t *testing.T) {
			addr := proxytest.BadChunked(t, body, nil, false)
			hs := start(t, &testHandler{targets: []Target{tcp(addr)}}, nil)
			c, br := dial(t, hs.addr)
			_, err := io.WriteString(c, "GET /bad HTTP/1.1\r\nHost: h\r\n\r\n")
			require.NoError(t, err)
			resp, err := http.ReadResponse(br, nil)
			require.NoError(t, err)
			require.Equal(t, 502, resp.StatusCode)
			require.True(t, resp.Close)
			_, _ = io.ReadAll(resp.Body)
			_, err = br.ReadByte()
			require.ErrorIs(t, err, io.EOF, "the client connection is closed after the 502")
			c2, br2 := dial(t, hs.addr)
			resp, got := roundTrip(t, c2, br2, "GET /ok HTTP/1.1\r\nHost: h\r\n\r\n")
			require.Equal(t, 200, resp.StatusCode)
			require.Equal(t, "2", got, "served on a fresh target connection: the broken one was not pooled")
			require.Contains(t, hs.h.seen(), Broken)
		})
	}
}

// TestMalformedChunkedResponseLaterCutsTheClient: a body that breaks
// after part of it was relayed cannot be answered with 502 any more; the
// client sees the cut, not a short success.
func TestMalformedChunkedResponseLaterCutsTheClient(t *testing.T) {
	hs := start(t, &testHandler{targets: []Target{tcp(proxytest.CutChunked(t, "zz\r\n"))}}, nil)
	c, br := dial(t, hs.addr)
	proxytest.CutBody(t, c, br, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
}

func TestBackendClosesMidResponse(t *testing.T) {
	addr := backend(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
	})
	h := &testHandler{targets: []Target{tcp(addr)}}
	hs := start(t, h, nil)
	c, br := dial(t, hs.addr)
	_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.Equal(t, "0123456789", string(b))
	require.Equal(t, []Outcome{Answered}, h.seen())
}

func TestBackendNeverAnswers(t *testing.T) {
	addr := backend(t, func(c net.Conn, br *bufio.Reader) { _, _ = io.Copy(io.Discard, br) })
	h := &testHandler{targets: []Target{tcp(addr)}}
	hs := start(t, h, func(c *Config) { c.ResponseHeaderTimeout = 300 * time.Millisecond })
	c, br := dial(t, hs.addr)
	resp, _ := roundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	require.Equal(t, 504, resp.StatusCode)
	require.Equal(t, []Outcome{TimedOut}, h.seen())
}

func TestBackendBreaksBeforeAnsweringIsRetriedWhenReplayable(t *testing.T) {
	var broken atomic.Int64
	bad := backend(t, func(c net.Conn, br *bufio.Reader) {
		_, _ = http.ReadRequest(br)
		broken.Add(1) // close without a byte
	})
	h := &testHandler{targets: []Target{tcp(bad), tcp(echoBackend(t))}}
	hs := start(t, h, nil)
	c, br := dial(t, hs.addr)
	resp, body := roundTrip(t, c, br, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "GET /x 0 127.0.0.1 h", body)
	require.Equal(t, []Outcome{Failed, Answered}, h.seen())

	// A POST is not replayed: 502.
	c2, br2 := dial(t, hs.addr)
	resp, _ = roundTrip(t, c2, br2, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nz")
	require.Equal(t, 502, resp.StatusCode)
}

// deadAddr returns a loopback address that refuses connections: a port
// bound but never listening, held until the test ends, so that no
// listener (the proxy's own included) can take it meanwhile. A port
// freed at once could become the proxy's, and the "dead" target the
// proxy itself.
func deadAddr(t *testing.T) string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = unix.Close(fd) })
	require.NoError(t, unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := unix.Getsockname(fd)
	require.NoError(t, err)
	return fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
}

func TestConnectFailureRoutesAgain(t *testing.T) {
	h := &testHandler{targets: []Target{tcp(deadAddr(t)), tcp(echoBackend(t))}}
	hs := start(t, h, nil)
	c, br := dial(t, hs.addr)
	// Even a POST: nothing was sent to the dead target.
	resp, body := roundTrip(t, c, br, "POST /y HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "POST /y 2 127.0.0.1 h", body)
	require.Equal(t, []Outcome{ConnectFailed, Answered}, h.seen())
}

// Requests routed again after a failed connection, pipelined on one
// keep-alive connection with bodies between them: each is answered in
// order with its own bytes (the input buffer is consumed exactly once
// per request, however many routes it took), and the connection stays
// usable afterwards.
func TestRoutedAgainPipelinedKeepsTheInputBuffer(t *testing.T) {
	h := &testHandler{targets: []Target{tcp(deadAddr(t)), tcp(echoBackend(t))}}
	hs := start(t, h, nil)
	c, br := dial(t, hs.addr)
	var reqs strings.Builder
	var want []string
	for i := 0; i < 20; i++ {
		if i%2 == 0 {
			fmt.Fprintf(&reqs, "GET /g%d HTTP/1.1\r\nHost: h\r\n\r\n", i)
			want = append(want, fmt.Sprintf("GET /g%d 0 127.0.0.1 h", i))
		} else {
			b := strings.Repeat("b", i*100)
			fmt.Fprintf(&reqs, "POST /p%d HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", i, len(b), b)
			want = append(want, fmt.Sprintf("POST /p%d %d 127.0.0.1 h", i, len(b)))
		}
	}
	_, err := io.WriteString(c, reqs.String())
	require.NoError(t, err)
	for _, w := range want {
		resp, body := readBody(t, br)
		require.Equal(t, 200, resp.StatusCode, w)
		require.Equal(t, w, body)
	}
	resp, body := roundTrip(t, c, br, "GET /last HTTP/1.1\r\nHost: h\r\n\r\n")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "GET /last 0 127.0.0.1 h", body)
}

func TestStalePooledConnectionIsRetriedFresh(t *testing.T) {
	var n atomic.Int64
	addr := backend(t, func(c net.Conn, br *bufio.Reader) {
		// Answer one request, keep-alive, then close the connection
		// after a moment (a restart).
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		n.Add(1)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		_ = c.(*net.TCPConn).CloseRead()
	})
	h := &testHandler{targets: []Target{tcp(addr)}}
	hs := start(t, h, func(c *Config) { c.Loops = 1 })
	c, br := dial(t, hs.addr)
	for i := 0; i < 3; i++ {
		resp, body := roundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, "ok", body)
	}
	require.EqualValues(t, 3, n.Load())
}

func TestClientDisconnectsMidResponse(t *testing.T) {
	gone := make(chan struct{})
	addr := backend(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				close(gone) // the proxy closed the target connection
				return
			}
		}
	})
	h := &testHandler{targets: []Target{tcp(addr)}}
	hs := start(t, h, nil)
	c, br := dial(t, hs.addr)
	_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	_, err = io.ReadFull(resp.Body, make([]byte, 1<<20))
	require.NoError(t, err)
	require.NoError(t, c.Close())
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the target connection was not closed after the client left")
	}
	require.Eventually(t, func() bool { return hs.p.Stats().Conns == 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestBackPressureSlowClient(t *testing.T) {
	const size = 32 << 20
	var sent atomic.Int64
	sum := make(chan [32]byte, 1)
	addr := backend(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		// Small kernel buffers on the target's side too, so what is in
		// flight is the proxy's doing, not loopback autotuning's (which
		// let 17 MiB through once on a busy machine).
		_ = c.(*net.TCPConn).SetWriteBuffer(64 << 10)
		_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
		hsh := sha256.New()
		buf := make([]byte, 32<<10)
		for i := 0; i < size/len(buf); i++ {
			for j := range buf {
				buf[j] = byte(i + j)
			}
			hsh.Write(buf)
			if _, err := c.Write(buf); err != nil {
				return
			}
			sent.Add(int64(len(buf)))
		}
		var s [32]byte
		copy(s[:], hsh.Sum(nil))
		sum <- s
	})
	hs := start(t, &testHandler{targets: []Target{tcp(addr)}}, nil)
	c, br := dial(t, hs.addr)
	_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
	_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	// The client does not read: the target must stall well before the
	// whole body is sent (only socket buffers and the loop's bounded
	// buffers hold it).
	var last int64 = -1
	require.Eventually(t, func() bool {
		s := sent.Load()
		stalled := s == last && s > 0
		last = s
		return stalled
	}, 10*time.Second, 200*time.Millisecond)
	require.Less(t, sent.Load(), int64(size/2), "the proxy must not buffer the body")
	hsh := sha256.New()
	n, err := io.Copy(hsh, resp.Body)
	require.NoError(t, err)
	require.EqualValues(t, size, n)
	var got [32]byte
	copy(got[:], hsh.Sum(nil))
	require.Equal(t, <-sum, got)
}

func TestSlowlorisOnTheLoop(t *testing.T) {
	h := &testHandler{targets: []Target{tcp(echoBackend(t))}}
	hs := start(t, h, func(c *Config) { c.ReadHeaderTimeout = 300 * time.Millisecond })
	c, br := dial(t, hs.addr)
	_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHo")
	require.NoError(t, err)
	start := time.Now()
	// Trickle one byte at a time; others are served meanwhile.
	go func() {
		for _, b := range []byte("st: h\r\nX: y") {
			time.Sleep(100 * time.Millisecond)
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
		}
	}()
	resp, err := http.Get("http://" + hs.addr + "/other")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	resp, err = http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, 408, resp.StatusCode)
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestIdleClientIsClosed(t *testing.T) {
	hs := start(t, &testHandler{targets: []Target{tcp(echoBackend(t))}}, func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
	c, _ := dial(t, hs.addr)
	_, err := c.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF)
}

func TestBadRequests(t *testing.T) {
	hs := start(t, &testHandler{targets: []Target{tcp(echoBackend(t))}}, func(c *Config) {
		c.MaxHeaderBytes = 1024
		c.MaxBodyBytes = 10
	})
	for _, tc := range []struct {
		req    string
		status int
	}{
		{"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: h\r\nX: " + strings.Repeat("a", 2000) + "\r\n\r\n", 431},
		{"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", 413},
	} {
		c, br := dial(t, hs.addr)
		resp, _ := roundTrip(t, c, br, tc.req)
		require.Equal(t, tc.status, resp.StatusCode, "%q", tc.req)
		require.True(t, resp.Close)
	}
}

func TestHandoffUpgradeLosesNoByte(t *testing.T) {
	hs := start(t, &testHandler{targets: []Target{tcp(echoBackend(t))}}, nil)
	c, _ := dial(t, hs.addr)
	first := "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nframe-1"
	_, err := io.WriteString(c, first)
	require.NoError(t, err)
	ho := hs.handedOff(t)
	defer ho.c.Close()
	_, err = io.WriteString(c, "frame-2")
	require.NoError(t, err)
	got := make([]byte, len(first)+len("frame-2")-len(ho.buffered))
	_ = ho.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadFull(ho.c, got)
	require.NoError(t, err)
	require.Equal(t, first+"frame-2", string(ho.buffered)+string(got))
	// The handed-off connection works both ways.
	_, err = io.WriteString(ho.c, "pong")
	require.NoError(t, err)
	b := make([]byte, 4)
	_, err = io.ReadFull(c, b)
	require.NoError(t, err)
	require.Equal(t, "pong", string(b))
	require.EqualValues(t, 1, hs.p.Stats().Handoffs)
}

func TestHandoffBigStreamedBodyLosesNoByte(t *testing.T) {
	hs := start(t, &testHandler{targets: []Target{tcp(echoBackend(t))}}, nil)
	c, _ := dial(t, hs.addr)
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, more than a buffer
	head := fmt.Sprintf("PUT /big HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n", len(body))
	want := append([]byte(head), body...)
	go func() { _, _ = c.Write(want) }()
	ho := hs.handedOff(t)
	defer ho.c.Close()
	rest := make([]byte, len(want)-len(ho.buffered))
	_ = ho.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadFull(ho.c, rest)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, append(ho.buffered, rest...)))
}

func TestHandoffPipelinedAfterServedRequest(t *testing.T) {
	hs := start(t, &testHandler{targets: []Target{tcp(echoBackend(t))}}, nil)
	c, br := dial(t, hs.addr)
	second := "GET /c HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nxyz"
	_, body := roundTrip(t, c, br, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"+second)
	require.Equal(t, "GET /a 0 127.0.0.1 h", body)
	ho := hs.handedOff(t)
	defer ho.c.Close()
	require.Equal(t, second, string(ho.buffered))
}

func TestMissIsHandedOff(t *testing.T) {
	addr := backend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 404 Not Found\r\nX-Miss: 1\r\nContent-Length: 0\r\n\r\n")
		}
	})
	h := &testHandler{targets: []Target{tcp(addr)}}
	h.decide = func(r *Request) *Decision {
		return &Decision{Action: Forward, Target: tcp(addr), Replayable: true, HandoffOnMiss: true}
	}
	hs := start(t, h, nil)
	c, _ := dial(t, hs.addr)
	req := "GET /m HTTP/1.1\r\nHost: h\r\n\r\n"
	_, err := io.WriteString(c, req)
	require.NoError(t, err)
	ho := hs.handedOff(t)
	defer ho.c.Close()
	require.Equal(t, req, string(ho.buffered))
	require.Equal(t, []Outcome{Missed}, h.seen())
}

// unixServer serves h on a unix socket at path until the test ends or
// the returned stop is called.
func unixServer(t *testing.T, path string, h http.HandlerFunc) (stop func()) {
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	stop = func() { _ = srv.Close() }
	t.Cleanup(stop)
	return stop
}

func TestUnixSocketTarget(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	unixServer(t, path, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "unix "+r.URL.Path)
	})
	hs := start(t, &testHandler{targets: []Target{{Network: "unix", Addr: path}}}, nil)
	resp, err := http.Get("http://" + hs.addr + "/u")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, "unix /u", string(b))
}

// A request larger than a unix socket holds is written in parts, the
// loop waiting for room (a unix target connection listens for EPOLLOUT
// only then), and the connection serves the next request once pooled.
func TestUnixTargetLargeRequestWaitsForRoom(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	unixServer(t, path, func(w http.ResponseWriter, r *http.Request) {
		sum := sha256.New()
		n, _ := io.Copy(sum, r.Body)
		fmt.Fprintf(w, "%s %d %x", r.URL.Path, n, sum.Sum(nil))
	})
	const size = 4 << 20
	hs := start(t, &testHandler{targets: []Target{{Network: "unix", Addr: path}}}, func(c *Config) {
		c.Loops = 1
		c.MaxBufferedBody = size
	})
	body := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	want := sha256.Sum256(body)
	cl := &http.Client{}
	defer cl.CloseIdleConnections()
	for i := 0; i < 3; i++ {
		resp, err := cl.Post("http://"+hs.addr+"/big", "application/octet-stream", bytes.NewReader(body))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, fmt.Sprintf("/big %d %x", size, want), string(b))
		resp, err = cl.Get("http://" + hs.addr + "/small")
		require.NoError(t, err)
		b, _ = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, fmt.Sprintf("/small 0 %x", sha256.Sum256(nil)), string(b))
	}
	require.EqualValues(t, 6, hs.p.Stats().Requests)
	require.Zero(t, hs.p.Stats().Handoffs)
}

func TestNonLiteralTargetIsHandedOff(t *testing.T) {
	h := &testHandler{targets: []Target{tcp("localhost:1")}}
	hs := start(t, h, nil)
	c, _ := dial(t, hs.addr)
	_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	require.NoError(t, err)
	ho := hs.handedOff(t)
	_ = ho.c.Close()
	require.Equal(t, []Outcome{Aborted}, h.seen())
}

func TestConfigValidation(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer ln.Close()
	h := &testHandler{}
	ho := func(net.Conn, []byte) {}
	for _, cfg := range []Config{
		{Handler: h, Handoff: ho},
		{Listener: ln, Handoff: ho},
		{Listener: ln, Handler: h},
		{Listener: ln, Handler: h, Handoff: ho, IdleTimeout: -1},
		{Listener: ln, Handler: h, Handoff: ho, MaxHeaderBytes: 10},
		{Listener: ln, Handler: h, Handoff: ho, Loops: -1},
	} {
		_, err := New(cfg)
		require.Error(t, err)
	}
}

func TestShutdownLetsExchangeFinish(t *testing.T) {
	release := make(chan struct{})
	addr := backend(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		<-release
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
	})
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer ln.Close()
	h := &testHandler{targets: []Target{tcp(addr)}}
	p, err := New(Config{Listener: ln, Handler: h, Handoff: func(c net.Conn, _ []byte) { _ = c.Close() }})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	c, br := dial(t, ln.Addr().String())
	_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.Stats().Requests == 1 }, 5*time.Second, 5*time.Millisecond)
	cancel()
	require.Eventually(t, p.stop.Load, 5*time.Second, time.Millisecond) // Run saw the cancel
	close(release)
	resp, body := readBody(t, br)
	require.Equal(t, "done", body)
	require.True(t, resp.Close, "the last answer says the connection closes")
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	require.Error(t, p.Run(context.Background()), "runs once")
}

// An exchange that never ends (the target never answers) is cut at
// ShutdownTimeout, and Run returns then, not at the loop's next periodic
// sweep after it (250ms apart here, as with the default timeouts).
func TestShutdownIsBoundedByItsTimeout(t *testing.T) {
	addr := backend(t, func(c net.Conn, br *bufio.Reader) { _, _ = io.Copy(io.Discard, br) })
	h := &testHandler{targets: []Target{tcp(addr)}}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer ln.Close()
	const timeout = 300 * time.Millisecond
	p, err := New(Config{Listener: ln, Handler: h, Handoff: func(c net.Conn, _ []byte) { _ = c.Close() }, Loops: 2, ShutdownTimeout: timeout})
	require.NoError(t, err)
	require.EqualValues(t, 250*time.Millisecond, p.sweep)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	c, br := dial(t, ln.Addr().String())
	_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.Stats().Requests == 1 }, 5*time.Second, time.Millisecond)
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		took := time.Since(start)
		require.NoError(t, err)
		require.GreaterOrEqual(t, took, timeout, "the exchange had its time")
		require.Less(t, took, timeout+100*time.Millisecond, "Run returned %v after the cancel", took)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	_, err = br.ReadByte()
	require.Error(t, err, "the client was cut")
	require.Equal(t, []Outcome{Aborted}, h.seen())
	require.EqualValues(t, 1, h.ends.Load())
}

// End comes when the body was wholly relayed or the exchange was cut, not
// when the head arrived: a streaming response keeps its exchange open.
func TestEndWaitsForTheBody(t *testing.T) {
	for _, how := range []string{"relayed", "client leaves", "target closes", "proxy stops"} {
		t.Run(how, func(t *testing.T) {
			rest := make(chan struct{})
			addr := backend(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
				select {
				case <-rest:
					if how == "relayed" {
						_, _ = io.WriteString(c, "-last")
					}
				case <-time.After(10 * time.Second):
				}
			})
			release := sync.OnceFunc(func() { close(rest) })
			h := &testHandler{targets: []Target{tcp(addr)}}
			hs := start(t, h, func(c *Config) { c.ShutdownTimeout = 200 * time.Millisecond })
			t.Cleanup(release) // before the target's cleanup waits for it
			c, br := dial(t, hs.addr)
			_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
			require.NoError(t, err)
			resp, err := http.ReadResponse(br, nil)
			require.NoError(t, err)
			first := make([]byte, 5)
			_, err = io.ReadFull(resp.Body, first)
			require.NoError(t, err)
			require.Equal(t, "first", string(first))
			// The head and half the body are through; the target holds
			// the rest, so the exchange cannot be over.
			require.Equal(t, []Outcome{Answered}, h.seen())
			require.Zero(t, h.ends.Load(), "End before the body was relayed")
			switch how {
			case "relayed":
				release()
				b, err := io.ReadAll(resp.Body)
				require.NoError(t, err)
				require.Equal(t, "-last", string(b))
			case "client leaves":
				require.NoError(t, c.Close())
			case "target closes":
				release()
				_, err := io.ReadAll(resp.Body)
				require.ErrorIs(t, err, io.ErrUnexpectedEOF)
			case "proxy stops":
				// Cleanup stops the proxy (after its shutdown timeout)
				// and checks End came.
				hs.p.stop.Store(true)
				for _, l := range *hs.p.loopsP.Load() {
					l.wake()
				}
				_, err := io.ReadAll(resp.Body)
				require.Error(t, err)
			}
			require.Eventually(t, func() bool { return h.ends.Load() == 1 }, 10*time.Second, 5*time.Millisecond)
			require.Zero(t, h.badEnds.Load())
		})
	}
}

// A pooled connection that the target dropped without reading the
// request on it (ECONNRESET: it closed with the request unread, as an app
// that drops idle keep-alive connections does) gets the request again on
// a fresh connection, even a POST with a body; the target saw it once.
func TestStaleConnectionResendsABufferedBody(t *testing.T) {
	var conns, posts atomic.Int64
	addr := backend(t, func(c net.Conn, br *bufio.Reader) {
		first := conns.Add(1) == 1
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, _ := io.ReadAll(r.Body)
			if r.Method == "POST" {
				posts.Add(1)
			}
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b)+len(r.Method)+1, r.Method+" "+string(b)); err != nil {
				return
			}
			if first {
				// Wait for the next request, then close with it
				// unread: the kernel resets the connection.
				require.Zero(t, br.Buffered())
				rc, err := c.(*net.TCPConn).SyscallConn()
				if err != nil {
					return
				}
				_ = rc.Control(func(fd uintptr) {
					_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 10000)
				})
				return
			}
		}
	})
	h := &testHandler{targets: []Target{tcp(addr)}}
	hs := start(t, h, func(c *Config) { c.Loops = 1 })
	c, br := dial(t, hs.addr)
	// Pipelined: the loop reuses the pooled connection for the POST as
	// soon as the GET's answer is through, before it can see the close.
	resp, body := roundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: h\r\n\r\nPOST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "GET ", body)
	resp, body = readBody(t, br)
	require.Equal(t, 200, resp.StatusCode, body)
	require.Equal(t, "POST hello", body)
	require.EqualValues(t, 1, posts.Load(), "the target saw the POST once")
	require.EqualValues(t, 2, conns.Load())
	require.Equal(t, []Outcome{Answered, Answered}, h.seen())
}

// A loop frees the pool of a target that is gone (a unix socket path that
// no instance serves any more), and closes idle connections to a target
// nobody used for IdleTimeout: a front whose targets change with every
// app restart does not pile up descriptors or pools.
func TestPoolsOfGoneTargetsAreFreed(t *testing.T) {
	var cur atomic.Pointer[Target]
	h := &testHandler{decide: func(r *Request) *Decision {
		return &Decision{Action: Forward, Target: *cur.Load()}
	}}
	hs := start(t, h, func(c *Config) { c.Loops = 2; c.IdleTimeout = 300 * time.Millisecond })
	dir := t.TempDir()
	serve := func(k int) (Target, func()) {
		path := filepath.Join(dir, fmt.Sprintf("app%d.sock", k))
		stop := unixServer(t, path, func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, path)
		})
		return Target{Network: "unix", Addr: path}, stop
	}
	get := func(want string) {
		c, br := dial(t, hs.addr)
		for i := 0; i < 3; i++ {
			resp, body := roundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
			require.Equal(t, 200, resp.StatusCode)
			require.Equal(t, want, body)
		}
		_ = c.Close()
	}
	for k := 0; k < 30; k++ {
		tg, stop := serve(k)
		cur.Store(&tg)
		get(tg.Addr)
		require.GreaterOrEqual(t, hs.p.Stats().Pools, int64(1))
		stop() // the instance goes away, and with it its socket
	}
	require.Eventually(t, func() bool { s := hs.p.Stats(); return s.Pools == 0 && s.IdleConns == 0 },
		10*time.Second, 10*time.Millisecond, "pools of gone targets freed: %+v", hs.p.Stats())
	// A live target nobody uses: its idle connections close after
	// IdleTimeout, and its pool goes.
	tg, stop := serve(99)
	defer stop()
	cur.Store(&tg)
	get(tg.Addr)
	require.Eventually(t, func() bool { return hs.p.Stats().IdleConns >= 1 }, 5*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { s := hs.p.Stats(); return s.Pools == 0 && s.IdleConns == 0 },
		10*time.Second, 10*time.Millisecond, "idle pool closed: %+v", hs.p.Stats())
	get(tg.Addr) // and it serves again
}

// IdleByTarget reports each target's pooled connections summed over the
// loops, from any goroutine; CloseIdle closes a target's idle
// connections and keeps the ones in use from being pooled again.
func TestIdleByTargetAndCloseIdle(t *testing.T) {
	var open, held atomic.Int64 // connections open, requests held
	var hold atomic.Pointer[chan struct{}]
	newHold := func() chan struct{} { ch := make(chan struct{}); hold.Store(&ch); return ch }
	release := newHold()
	addr := backend(t, func(c net.Conn, br *bufio.Reader) {
		open.Add(1)
		defer open.Add(-1)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if r.URL.Path == "/hold" {
				ch := *hold.Load()
				held.Add(1)
				<-ch
				held.Add(-1)
			}
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
		}
	})
	hs := start(t, &testHandler{targets: []Target{tcp(addr)}}, nil)
	// fetch runs on goroutines of its own too: it reports, never fails.
	fetch := func(c net.Conn, br *bufio.Reader, path string) error {
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		if err == nil && (resp.StatusCode != 200 || string(b) != "ok") {
			err = fmt.Errorf("%s %q", resp.Status, b)
		}
		return err
	}
	get := func(c net.Conn, br *bufio.Reader, path string) {
		t.Helper()
		require.NoError(t, fetch(c, br, path))
	}
	idle := func() int64 { return hs.p.IdleByTarget()[tcp(addr)] }

	// Two clients at once: two target connections, both pooled after.
	c1, br1 := dial(t, hs.addr)
	c2, br2 := dial(t, hs.addr)
	errs := make(chan error, 2)
	go func() { errs <- fetch(c1, br1, "/hold") }()
	go func() { errs <- fetch(c2, br2, "/hold") }()
	require.Eventually(t, func() bool { return held.Load() == 2 }, 5*time.Second, time.Millisecond)
	close(release)
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)
	require.Eventually(t, func() bool { return idle() == 2 }, 5*time.Second, time.Millisecond, "idle %d", idle())
	require.EqualValues(t, 2, hs.p.Stats().IdleConns)
	require.Len(t, hs.p.IdleByTarget(), 1)

	hs.p.CloseIdle(tcp(addr))
	require.Eventually(t, func() bool { return open.Load() == 0 }, 5*time.Second, time.Millisecond, "target connections closed")
	require.Eventually(t, func() bool { return idle() == 0 && hs.p.Stats().Pools == 0 }, 5*time.Second, time.Millisecond)
	require.Empty(t, hs.p.IdleByTarget())

	// A connection in use when its target is retired is closed when its
	// exchange ends, not pooled.
	release = newHold()
	go func() { errs <- fetch(c1, br1, "/hold") }()
	require.Eventually(t, func() bool { return held.Load() == 1 }, 5*time.Second, time.Millisecond)
	hs.p.CloseIdle(tcp(addr))
	require.Eventually(t, func() bool { return hs.p.Stats().Pools == 0 }, 5*time.Second, time.Millisecond)
	close(release)
	require.NoError(t, <-errs)
	require.Eventually(t, func() bool { return open.Load() == 0 }, 5*time.Second, time.Millisecond, "retired connection closed after its exchange")
	require.Zero(t, idle())

	// The target serves again, with a new pool.
	get(c1, br1, "/")
	require.Eventually(t, func() bool { return idle() == 1 }, 5*time.Second, time.Millisecond, "idle %d", idle())
}

func TestUnixTargetViaAndPeerCheck(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.sock")
	var accepted atomic.Int64
	unixServer(t, path, func(w http.ResponseWriter, r *http.Request) {
		accepted.Add(1)
		w.Header().Set("X-Paaskit-Miss", "1")
		w.Header().Set("X-Kept", "yes")
		_, _ = io.WriteString(w, "via "+r.URL.Path)
	})
	// Addr names a path with nothing behind it: the loop connects to Via.
	me := uint32(os.Geteuid())
	good := Target{Network: "unix", Addr: filepath.Join(dir, "elsewhere.sock"), Via: path, CheckPeer: true, PeerUID: me}
	hs := start(t, &testHandler{targets: []Target{good}}, func(c *Config) { c.DropFieldPrefix = "x-paaskit-" })
	resp, err := http.Get("http://" + hs.addr + "/v")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, "via /v", string(b))
	require.Empty(t, resp.Header.Get("X-Paaskit-Miss"), "a target's platform fields are dropped")
	require.Equal(t, "yes", resp.Header.Get("X-Kept"))
	// A listener of another UID than the one asked for gets nothing.
	before := accepted.Load()
	h := &testHandler{targets: []Target{{Network: "unix", Addr: path + "-x", Via: path, CheckPeer: true, PeerUID: me + 4242}}}
	hs2 := start(t, h, nil)
	resp, err = http.Get("http://" + hs2.addr + "/w")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, 502, resp.StatusCode)
	require.Equal(t, []Outcome{ConnectFailed}, h.seen())
	require.Equal(t, before, accepted.Load(), "no request reached the listener of another UID")
}

// A connection handed off for a chunked upload comes back to the loops
// with Resume, with the pipelined request that followed the upload: that
// request and the later ones on the connection are served by a loop.
func TestResumeServesTheRestOnTheLoop(t *testing.T) {
	hs := start(t, &testHandler{targets: []Target{tcp(echoBackend(t))}}, nil)
	c, br := dial(t, hs.addr)
	// Larger than MaxBufferedBody: a small chunked body sent whole
	// stays on the loop.
	upload := "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n8000\r\n" + strings.Repeat("u", 32<<10) + "\r\n0\r\n\r\n"
	next := "GET /after HTTP/1.1\r\nHost: h\r\n\r\n"
	_, err := io.WriteString(c, upload+next)
	require.NoError(t, err)
	ho := hs.handedOff(t)
	// The goroutine side: it answers the upload itself, then gives the
	// connection back with what it read past the upload.
	got := string(ho.buffered)
	for len(got) < len(upload) {
		b := make([]byte, 4096)
		_ = ho.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := ho.c.Read(b)
		require.NoError(t, err)
		got += string(b[:n])
	}
	require.True(t, strings.HasPrefix(got, upload))
	_, err = io.WriteString(ho.c, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
	require.NoError(t, err)
	before := hs.p.Stats().Requests
	require.NoError(t, hs.p.Resume(ho.c, []byte(got[len(upload):])))

	resp, _ := readBody(t, br)
	require.Equal(t, 201, resp.StatusCode)
	resp, body := readBody(t, br)
	require.Equal(t, 200, resp.StatusCode)
	require.Contains(t, body, "/after")
	resp, body = roundTrip(t, c, br, "GET /again HTTP/1.1\r\nHost: h\r\n\r\n")
	require.Equal(t, 200, resp.StatusCode)
	require.Contains(t, body, "/again")
	s := hs.p.Stats()
	require.EqualValues(t, 1, s.Resumed)
	require.EqualValues(t, 1, s.Handoffs)
	require.Equal(t, before+2, s.Requests, "both later requests were served by a loop")
}

func TestResumeRefusesWhatItCannotTake(t *testing.T) {
	hs := start(t, &testHandler{targets: []Target{tcp(echoBackend(t))}}, nil)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	require.Error(t, hs.p.Resume(a, nil), "not a TCP connection")
	p, err := New(Config{Listener: &net.TCPListener{}, Handler: &testHandler{}, Handoff: func(net.Conn, []byte) {}})
	require.NoError(t, err)
	require.ErrorIs(t, p.Resume(a, nil), ErrNotServing)
}

// A target that writes its response head and its body in two sends (as
// gunicorn does) has them reach the client in one write: the first read
// of the client holds the whole response, not the head alone. A head
// whose body is chunked is not held back (a stream may wait long).
func TestHeadWaitsForTheFirstBodyBytes(t *testing.T) {
	addr := backend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if r.URL.Path == "/chunked" {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
				time.Sleep(100 * time.Millisecond)
				_, _ = io.WriteString(c, "5\r\nhello\r\n0\r\n\r\n")
				continue
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
			time.Sleep(50 * time.Millisecond)
			_, _ = io.WriteString(c, "hello")
		}
	})
	h := &testHandler{targets: []Target{tcp(addr)}}
	hs := start(t, h, nil)
	c, br := dial(t, hs.addr)
	for i := 0; i < 3; i++ {
		_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		require.NoError(t, err)
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		require.NoError(t, err)
		require.True(t, strings.HasSuffix(string(buf[:n]), "\r\n\r\nhello"), "request %d: the first read has the body: %q", i, buf[:n])
		require.Contains(t, string(buf[:n]), "Content-Length: 5\r\n")
	}
	// Chunked: the head comes before the body.
	_, err := io.WriteString(c, "GET /chunked HTTP/1.1\r\nHost: h\r\n\r\n")
	require.NoError(t, err)
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(string(buf[:n]), "Transfer-Encoding: chunked\r\n\r\n"), "%q", buf[:n])
	resp, body := readBody(t, bufio.NewReader(io.MultiReader(strings.NewReader(string(buf[:n])), br)))
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "hello", body)
	require.EqualValues(t, 4, hs.p.Stats().Requests)
}

// A small chunked request body is served by the loop: checked whole by
// the strict decoder before anything is sent, forwarded re-chunked with
// its trailers, and the connection stays on the loop for the next
// request (pipelined here). A malformed one is answered 400 without
// reaching the target; one over MaxBodyBytes 413; one longer than
// MaxBufferedBody is handed off with every byte read so far.
func TestChunkedRequestBodyOnTheLoop(t *testing.T) {
	var bodies, tes, trailers []string
	var mu sync.Mutex
	addr := backend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			bodies = append(bodies, string(b))
			tes = append(tes, strings.Join(r.TransferEncoding, ","))
			trailers = append(trailers, r.Trailer.Get("X-Sum"))
			mu.Unlock()
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
		}
	})
	h := &testHandler{targets: []Target{tcp(addr)}}
	hs := start(t, h, func(c *Config) { c.MaxBodyBytes = 100; c.MaxBufferedBody = 64 })
	c, br := dial(t, hs.addr)
	_, err := io.WriteString(c, "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n"+
		"A\r\n0123456789\r\n0\r\nX-Sum: 13\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
	require.NoError(t, err)
	resp, body := readBody(t, br)
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "abc0123456789", body)
	resp, body = readBody(t, br)
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "", body)
	mu.Lock()
	require.Equal(t, []string{"abc0123456789", ""}, bodies)
	require.Equal(t, []string{"chunked", ""}, tes)
	require.Equal(t, []string{"13", ""}, trailers)
	mu.Unlock()
	require.EqualValues(t, 2, hs.p.Stats().Requests)
	require.Zero(t, hs.p.Stats().Handoffs)

	for _, bad := range []string{
		"+3\r\nabc\r\n0\r\n\r\n",           // a sign
		"3\r\nabcX\r\n0\r\n\r\n",           // no CRLF after the data
		"3\r\nabc\r\n0\r\nHost: x\r\n\r\n", // a routing field as trailer
		"3 \r\nabc\r\n0\r\n\r\n",           // whitespace
	} {
		c, br := dial(t, hs.addr)
		resp, body := roundTrip(t, c, br, "POST /bad HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"+bad)
		require.Equal(t, 400, resp.StatusCode, "%q", bad)
		require.Equal(t, "malformed chunked body\n", body)
	}
	// Over MaxBodyBytes (100), within what the loop buffers: 413.
	c, br = dial(t, hs.addr)
	resp, _ = roundTrip(t, c, br, "POST /big HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n")
	require.Equal(t, 413, resp.StatusCode)
	mu.Lock()
	require.Len(t, bodies, 2, "nothing malformed or too large reached the target")
	mu.Unlock()

	// A body the client pauses in (it may stream both ways) is handed
	// off at the pause, with all it read.
	c, _ = dial(t, hs.addr)
	part := "POST /part HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
	_, err = io.WriteString(c, part)
	require.NoError(t, err)
	ho := hs.handedOff(t)
	defer ho.c.Close()
	require.Equal(t, part, string(ho.buffered))

	// Longer than MaxBufferedBody (64): handed off with all it read.
	c, _ = dial(t, hs.addr)
	long := "POST /long HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Repeat("a\r\n0123456789\r\n", 6)
	_, err = io.WriteString(c, long)
	require.NoError(t, err)
	ho = hs.handedOff(t)
	defer ho.c.Close()
	require.Equal(t, long, string(ho.buffered))
}
