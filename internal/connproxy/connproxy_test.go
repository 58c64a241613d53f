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

// start serves a listener with a Proxy whose handler forwards to the
// backend at target.
func start(t *testing.T, target string, mod func(*Config, *testHandler)) *harness {
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
			p.Serve(c, nil, false, true)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		p.Shutdown(time.Now().Add(5 * time.Second))
		h.pool.Close()
		require.Zero(t, h.bad.Load(), "a Done or End out of order")
		require.Equal(t, h.forwards.Load(), h.ends.Load(), "every Forward ends once")
	})
	return &harness{p: p, addr: ln.Addr().String(), h: h, log: lb}
}

func backend(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// rawBackend answers every connection with fn.
func rawBackend(t *testing.T, fn func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fn(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Method", r.Method)
	w.Header().Set("X-Fwd", r.Header.Get("X-Forwarded-For")+"|"+r.Header.Get("X-Forwarded-Proto")+"|"+r.Header.Get("X-Forwarded-Host"))
	_, _ = fmt.Fprintf(w, "%s %s %d:%s", r.Method, r.URL.Path, len(b), b)
}

func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, req string) (*http.Response, string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_, err := io.WriteString(c, req)
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c, bufio.NewReader(c)
}

func TestForwardsWhatTheLoopsHandOff(t *testing.T) {
	h := start(t, backend(t, echo), nil)
	c, br := dial(t, h.addr)
	resp, body := roundTrip(t, c, br, "GET /a HTTP/1.1\r\nHost: Example.COM:80\r\n\r\n")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "GET /a 0:", body)
	require.Equal(t, "127.0.0.1|http|Example.COM:80", resp.Header.Get("X-Fwd"))

	// Chunked upload, then Expect: 100-continue, on the same connection.
	resp, body = roundTrip(t, c, br, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
	require.Equal(t, "POST /up 11:hello world", body)
	_, err := io.WriteString(c, "PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
	require.NoError(t, err)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 100 Continue\r\n", line)
	_, _ = br.ReadString('\n')
	resp, body = roundTrip(t, c, br, "abc")
	require.Equal(t, "PUT /e 3:abc", body)

	// HTTP/1.0 with keep-alive.
	resp, body = roundTrip(t, c, br, "GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	require.Equal(t, "GET /old 0:", body)
	require.Equal(t, "keep-alive", resp.Header.Get("Connection"))
	require.Equal(t, int64(4), h.p.Stats().Requests)
}

func TestUpgradeTunnels(t *testing.T) {
	addr := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil || req.Header.Get("Upgrade") != "echo" {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		_, _ = io.Copy(c, br)
	})
	h := start(t, addr, nil)
	c, br := dial(t, h.addr)
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
			c, br := dial(t, h.addr)
			resp, _ := roundTrip(t, c, br, raw)
			require.Equal(t, 400, resp.StatusCode)
			require.True(t, resp.Close, "the connection is closed after a 400")
			if !strings.Contains(name, "chunk") {
				require.Equal(t, before, reached.Load(), "nothing reached the backend")
			}
		})
	}
}

func TestBadChunkedResponses(t *testing.T) {
	for name, bad := range http1test.BadChunkedResponses {
		t.Run(name, func(t *testing.T) {
			var n atomic.Int64
			addr := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					if n.Add(1) == 1 {
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+bad)
						return
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
			h := start(t, addr, nil)
			c, br := dial(t, h.addr)
			resp, _ := roundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			require.Equal(t, 502, resp.StatusCode)
			// The next client, on a new connection, is served whole.
			c2, br2 := dial(t, h.addr)
			resp, body := roundTrip(t, c2, br2, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			require.Equal(t, 200, resp.StatusCode)
			require.Equal(t, "ok", body)
		})
	}
}

func TestBadChunkLaterCutsTheClient(t *testing.T) {
	addr := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		time.Sleep(50 * time.Millisecond) // the head is relayed before the rest comes
		_, _ = io.WriteString(c, "zz\r\n")
	})
	h := start(t, addr, nil)
	c, br := dial(t, h.addr)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	_, err = io.ReadAll(resp.Body)
	require.Error(t, err, "a cut body is never taken for a whole one")
}

func TestPanickingRouteAnswers502AndServesOn(t *testing.T) {
	var once atomic.Bool
	h := start(t, backend(t, echo), func(_ *Config, h *testHandler) {
		h.route = func(r *Request) *Decision {
			if once.CompareAndSwap(false, true) {
				panic("route boom")
			}
			return nil
		}
	})
	c, br := dial(t, h.addr)
	resp, _ := roundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	require.Equal(t, 502, resp.StatusCode)
	require.Contains(t, h.log.String(), "route boom")
	require.Contains(t, h.log.String(), "stack=")
	require.Equal(t, int64(1), h.p.Stats().Panics)
	c2, br2 := dial(t, h.addr)
	resp, _ = roundTrip(t, c2, br2, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
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
	c, br := dial(t, h.addr)
	resp, body := roundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
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
	c, br := dial(t, h.addr)
	resp, body := roundTrip(t, c, br, "POST /gone HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	require.Equal(t, 404, resp.StatusCode)
	require.Equal(t, "none\n", body)
	require.Equal(t, "1", resp.Header.Get("X-Miss"))
	require.False(t, resp.Close)
	resp, body = roundTrip(t, c, br, "GET /here HTTP/1.1\r\nHost: x\r\n\r\n")
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
	c, br := dial(t, h.addr)
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
	c, br := dial(t, h.addr)
	for i := 0; i < 3; i++ {
		roundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
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

// A request with a wholly buffered body that meets a pooled connection
// the target had reset is sent again on a fresh one, though it is not
// replayable: the send failed, or the reset came before any answer.
func TestStalePooledConnectionResendsABufferedBody(t *testing.T) {
	addr := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
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
	c, br := dial(t, h.addr)
	for k := 0; k < 5; k++ {
		resp, body := roundTrip(t, c, br, "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
		require.Equal(t, 200, resp.StatusCode, "request %d: %s", k, body)
		require.Equal(t, "hello", body)
		time.Sleep(50 * time.Millisecond) // the backend has closed by now
	}
}
