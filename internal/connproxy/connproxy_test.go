package connproxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/http1/http1test"
	"github.com/paaskit/paaskit/internal/proxytest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testHandler forwards everything to pool, checking that every Forward
// gets one Done, then one End.
type testHandler struct {
	pool  *Pool
	route func(r *Request) *Decision
	miss  func(r *Request) error

	forwards, dones, ends, bad atomic.Int64
	mu                         sync.Mutex
	outcomes                   []Outcome
}

type tag struct{ done, ended bool }

func (h *testHandler) Route(r *Request) Decision {
	if h.route != nil {
		if d := h.route(r); d != nil {
			if d.Action == Forward {
				h.forwards.Add(1)
				r.Tag = &tag{}
			}
			return *d
		}
	}
	h.forwards.Add(1)
	r.Tag = &tag{}
	return Decision{Action: Forward, Pool: h.pool, Replayable: string(r.Head.Method) == "GET", MayMiss: true}
}

func (h *testHandler) Done(r *Request, o Outcome) {
	h.dones.Add(1)
	t, _ := r.Tag.(*tag)
	if t == nil || t.done {
		h.bad.Add(1)
	} else {
		t.done = true
	}
	h.mu.Lock()
	h.outcomes = append(h.outcomes, o)
	h.mu.Unlock()
}

func (h *testHandler) End(r *Request) {
	h.ends.Add(1)
	t, _ := r.Tag.(*tag)
	if t == nil || !t.done || t.ended {
		h.bad.Add(1)
	} else {
		t.ended = true
	}
}

func (h *testHandler) Miss(r *Request, id int32) error {
	if h.miss == nil {
		return nil
	}
	return h.miss(r)
}

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type harness struct {
	p    *Proxy
	addr string
	h    *testHandler
	log  *logBuf
}

// newHarness makes a Proxy whose handler forwards to the backend at
// target, for start or startHTTP to serve.
func newHarness(t *testing.T, target string, mod func(*Config, *testHandler)) *harness {
	t.Helper()
	h := &testHandler{pool: NewPool(PoolConfig{Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", target)
	}})}
	lb := &logBuf{}
	cfg := Config{Handler: h, MissHeader: "X-Miss", Logger: slog.New(slog.NewTextHandler(lb, nil))}
	if mod != nil {
		mod(&cfg, h)
	}
	p, err := New(cfg)
	require.NoError(t, err)
	return &harness{p: p, h: h, log: lb}
}

// start serves a listener with a Proxy whose handler forwards to the
// backend at target.
func start(t *testing.T, target string, mod func(*Config, *testHandler)) *harness {
	t.Helper()
	hs := newHarness(t, target, mod)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hs.p.Serve(c, nil, false, true)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		hs.p.Shutdown(time.Now().Add(5 * time.Second))
		hs.h.pool.Close()
		require.Zero(t, hs.h.bad.Load(), "a Done or End out of order")
		require.Equal(t, hs.h.forwards.Load(), hs.h.ends.Load(), "every Forward ends once")
	})
	hs.addr = ln.Addr().String()
	return hs
}

// starter is start or startHTTP: a test that holds on both paths runs
// with each.
type starter func(t *testing.T, target string, mod func(*Config, *testHandler)) *harness

var paths = map[string]starter{"Serve": start, "ServeHTTP": startHTTP}

func backend(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Method", r.Method)
	w.Header().Set("X-Fwd", r.Header.Get("X-Forwarded-For")+"|"+r.Header.Get("X-Forwarded-Proto")+"|"+r.Header.Get("X-Forwarded-Host"))
	_, _ = fmt.Fprintf(w, "%s %s %d:%s", r.Method, r.URL.Path, len(b), b)
}

// upgradeEcho is a backend that accepts an Upgrade to "echo" and then
// echoes what it reads.
func upgradeEcho(t *testing.T) string {
	return proxytest.Backend(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil || req.Header.Get("Upgrade") != "echo" {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		_, _ = io.Copy(c, br)
	})
}

// panicOnce makes the first Route panic.
func panicOnce(_ *Config, h *testHandler) {
	var once atomic.Bool
	h.route = func(r *Request) *Decision {
		if once.CompareAndSwap(false, true) {
			panic("route boom")
		}
		return nil
	}
}

// uploadThenExpect sends, on c, a chunked upload, then a PUT with
// Expect: 100-continue that waits for the 100 before its body, each to
// the echo backend.
func uploadThenExpect(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	_, body := proxytest.RoundTrip(t, c, br, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
	require.Equal(t, "POST /up 11:hello world", body)
	_, err := io.WriteString(c, "PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
	require.NoError(t, err)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 100 Continue\r\n", line)
	_, _ = br.ReadString('\n')
	_, body = proxytest.RoundTrip(t, c, br, "abc")
	require.Equal(t, "PUT /e 3:abc", body)
}

func TestForwardsWhatTheLoopsHandOff(t *testing.T) {
	h := start(t, backend(t, echo), nil)
	c, br := proxytest.Dial(t, h.addr)
	resp, body := proxytest.RoundTrip(t, c, br, "GET /a HTTP/1.1\r\nHost: Example.COM:80\r\n\r\n")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "GET /a 0:", body)
	require.Equal(t, "127.0.0.1|http|Example.COM:80", resp.Header.Get("X-Fwd"))

	// Chunked upload, then Expect: 100-continue, on the same connection.
	uploadThenExpect(t, c, br)

	// HTTP/1.0 with keep-alive.
	resp, body = proxytest.RoundTrip(t, c, br, "GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	require.Equal(t, "GET /old 0:", body)
	require.Equal(t, "keep-alive", resp.Header.Get("Connection"))
	require.Equal(t, int64(4), h.p.Stats().Requests)
}

func TestUpgradeTunnels(t *testing.T) {
	h := start(t, upgradeEcho(t), nil)
	c, br := proxytest.Dial(t, h.addr)
	_, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly")
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, 101, resp.StatusCode)
	_, err = io.WriteString(c, "-late")
	require.NoError(t, err)
	got := make([]byte, len("early-late"))
	_, err = io.ReadFull(br, got)
	require.NoError(t, err)
	require.Equal(t, "early-late", string(got))
}

func TestSmugglingRequestsAreRefused(t *testing.T) {
	var reached atomic.Int64
	h := start(t, backend(t, func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
	}), nil)
	for name, raw := range http1test.SmugglingRequests {
		t.Run(name, func(t *testing.T) {
			before := reached.Load()
			c, br := proxytest.Dial(t, h.addr)
			resp, _ := proxytest.RoundTrip(t, c, br, raw)
			require.Equal(t, 400, resp.StatusCode)
			require.True(t, resp.Close, "the connection is closed after a 400")
			if !strings.Contains(name, "chunk") {
				require.Equal(t, before, reached.Load(), "nothing reached the backend")
			}
		})
	}
}

// A chunked response broken in what came with its head answers 502, and
// the next request is served whole, on a fresh target connection. On
// Serve's path the client connection closes after the 502 and the next
// client comes on a new one; on ServeHTTP's, net/http keeps the client's
// connection (it is not poisoned) and the next request comes on it.
func TestBadChunkedResponses(t *testing.T) {
	for path, start := range paths {
		for name, bad := range http1test.BadChunkedResponses {
			t.Run(path+"/"+name, func(t *testing.T) {
				h := start(t, proxytest.BadChunked(t, bad, nil, false), nil)
				c, br := proxytest.Dial(t, h.addr)
				resp, _ := proxytest.RoundTrip(t, c, br, "GET /bad HTTP/1.1\r\nHost: x\r\n\r\n")
				require.Equal(t, 502, resp.StatusCode)
				if path == "ServeHTTP" {
					require.False(t, resp.Close)
				} else {
					c, br = proxytest.Dial(t, h.addr)
				}
				resp, body := proxytest.RoundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				require.Equal(t, 200, resp.StatusCode)
				require.Equal(t, "2", body, "served on a fresh target connection")
			})
		}
	}
}

// A chunked response that breaks after its head was relayed cuts the
// client's connection, on both paths: the client never takes the cut
// body for a whole one.
func TestBadChunkLaterCutsTheClient(t *testing.T) {
	cases := map[string]string{"bad size later": "zz\r\n"}
	for name, bad := range http1test.BadChunkedResponses {
		cases[name] = bad
	}
	for path, start := range paths {
		for name, bad := range cases {
			t.Run(path+"/"+name, func(t *testing.T) {
				h := start(t, proxytest.CutChunked(t, bad), nil)
				c, br := proxytest.Dial(t, h.addr)
				proxytest.CutBody(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			})
		}
	}
}

func TestPanickingRouteAnswers502AndServesOn(t *testing.T) {
	h := start(t, backend(t, echo), panicOnce)
	c, br := proxytest.Dial(t, h.addr)
	resp, _ := proxytest.RoundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	require.Equal(t, 502, resp.StatusCode)
	require.Contains(t, h.log.String(), "route boom")
	require.Contains(t, h.log.String(), "stack=")
	require.Equal(t, int64(1), h.p.Stats().Panics)
	c2, br2 := proxytest.Dial(t, h.addr)
	resp, _ = proxytest.RoundTrip(t, c2, br2, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	require.Equal(t, 200, resp.StatusCode)
}

func TestMissRoutesAgain(t *testing.T) {
	var hits atomic.Int64
	addr := backend(t, func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.Header().Set("X-Miss", "1")
			w.WriteHeader(404)
			return
		}
		_, _ = io.WriteString(w, "started")
	})
	var misses atomic.Int64
	h := start(t, addr, func(_ *Config, h *testHandler) {
		h.miss = func(*Request) error { misses.Add(1); return nil }
	})
	c, br := proxytest.Dial(t, h.addr)
	resp, body := proxytest.RoundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "started", body)
	require.Equal(t, int64(1), misses.Load())
	require.Contains(t, h.h.outcomes, Missed)
}

func TestReplyKeepAlive(t *testing.T) {
	h := start(t, backend(t, echo), func(_ *Config, h *testHandler) {
		h.route = func(r *Request) *Decision {
			if string(r.Head.Target) == "/gone" {
				return &Decision{Action: Reply, Status: 404, Body: "none\n", Extra: []string{"X-Miss: 1"}, KeepAlive: true}
			}
			return nil
		}
	})
	c, br := proxytest.Dial(t, h.addr)
	resp, body := proxytest.RoundTrip(t, c, br, "POST /gone HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	require.Equal(t, 404, resp.StatusCode)
	require.Equal(t, "none\n", body)
	require.Equal(t, "1", resp.Header.Get("X-Miss"))
	require.False(t, resp.Close)
	resp, body = proxytest.RoundTrip(t, c, br, "GET /here HTTP/1.1\r\nHost: x\r\n\r\n")
	require.Equal(t, "GET /here 0:", body)
}

func TestResumeAfterACleanExchange(t *testing.T) {
	type resumed struct {
		c   net.Conn
		buf []byte
	}
	got := make(chan resumed, 1)
	h := start(t, backend(t, echo), func(cfg *Config, _ *testHandler) {
		cfg.Resume = func(c net.Conn, buffered []byte) bool {
			got <- resumed{c, buffered}
			return true
		}
	})
	c, br := proxytest.Dial(t, h.addr)
	// A chunked upload with the next request pipelined behind it.
	_, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	require.Equal(t, "POST / 3:abc", string(b))
	var r resumed
	select {
	case r = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("the connection was not resumed")
	}
	defer r.c.Close()
	require.Equal(t, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n", string(r.buf))
	require.Eventually(t, func() bool { return h.p.Stats().Resumed == 1 }, 10*time.Second, time.Millisecond)
	// The connection is still open: what is written on it arrives.
	_, err = io.WriteString(r.c, "HTTP/1.1 204 No Content\r\n\r\n")
	require.NoError(t, err)
	resp, err = http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, 204, resp.StatusCode)
}

func TestRefusedResumeIsNotOfferedAgain(t *testing.T) {
	var calls atomic.Int64
	h := start(t, backend(t, echo), func(cfg *Config, _ *testHandler) {
		cfg.Resume = func(net.Conn, []byte) bool { calls.Add(1); return false }
	})
	c, br := proxytest.Dial(t, h.addr)
	for i := 0; i < 3; i++ {
		proxytest.RoundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	// Refused once, never offered again on that connection.
	require.Equal(t, int64(1), calls.Load())
}

func TestConfigValidation(t *testing.T) {
	_, err := New(Config{})
	require.Error(t, err)
	_, err = New(Config{Handler: &testHandler{}, MaxHeaderBytes: 10})
	require.Error(t, err)
	_, err = New(Config{Handler: &testHandler{}, MissHeader: "bad header"})
	require.Error(t, err)
}

// A request with a wholly buffered body (on ServeHTTP's path, a small
// one, read ahead) that meets a pooled connection the target had reset
// is sent again on a fresh one, though it is not replayable: the send
// failed, or the reset came before any answer.
func TestStalePooledConnectionResendsABufferedBody(t *testing.T) {
	for path, start := range paths {
		t.Run(path, func(t *testing.T) {
			addr := proxytest.Backend(t, func(c net.Conn, br *bufio.Reader) {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				b, _ := io.ReadAll(req.Body)
				_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
				// Then drop the connection, which the proxy pooled, with a
				// reset (as a socket closed with data in it is): the next
				// request sent on it fails unread.
				time.Sleep(20 * time.Millisecond)
				_ = c.(*net.TCPConn).SetLinger(0)
			})
			h := start(t, addr, nil)
			c, br := proxytest.Dial(t, h.addr)
			for k := 0; k < 5; k++ {
				resp, body := proxytest.RoundTrip(t, c, br, "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
				require.Equal(t, 200, resp.StatusCode, "request %d: %s", k, body)
				require.Equal(t, "hello", body)
				time.Sleep(50 * time.Millisecond) // the backend has closed by now
			}
		})
	}
}
