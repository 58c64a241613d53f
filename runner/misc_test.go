package runner_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paaskit/paaskit/runner"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// liveHeap is the heap in use by live objects after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func TestThousandConfiguredAppsCostNoProcessAndLittleMemory(t *testing.T) {
	e := newEnv(t, nil)
	before := liveHeap()
	for k := 0; k < 1000; k++ {
		s := spec(fmt.Sprintf("idle%d", k))
		s.Env = map[string]string{"DJANGO_SETTINGS_MODULE": "site.settings", "SECRET": strings.Repeat("s", 64)}
		e.put(s)
	}
	after := liveHeap()
	grown := int64(after) - int64(before)
	t.Logf("1000 configured apps: live heap %d KiB before, %d KiB after: %d KiB, %d bytes per app", before>>10, after>>10, grown>>10, grown/1000)
	require.Less(t, grown, int64(50<<20))
	require.Len(t, e.r.Status().Apps, 1000)
	// The runner's only children are its parked init helpers, a fixed
	// few per runner (initpool_linux.go), not one per app.
	parked := parkedHelpers(t)
	require.LessOrEqual(t, len(parked), runner.DefaultInitPool)
	require.Subset(t, parked, childrenOf(os.Getpid()), "no app process runs")
	// Each is still startable.
	require.Equal(t, "hello idle999\n", e.mustGet("idle999.example", "/"))
}

func TestRunLeaksNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, loops := range []int{-1, 0, 2} {
		t.Run(fmt.Sprintf("EventLoops=%d", loops), func(t *testing.T) {
			testRunLeaksNoGoroutines(t, loops)
		})
	}
}

func testRunLeaksNoGoroutines(t *testing.T, loops int) {
	state, err := os.MkdirTemp("", "rt")
	require.NoError(t, err)
	defer os.RemoveAll(state)
	specs := t.TempDir()
	writeSpec(t, specs, "leak.json", specJSON("leak", ""))
	r, err := runner.New(runner.Config{StateDir: state, SpecDir: specs, CgroupRoot: fmt.Sprintf("paaskit-test-%d-%d", os.Getpid(), cgroupSeq.Add(1)), Sink: &memSink{},
		EventLoops: loops})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	require.Eventually(t, func() bool { _, ok := r.App("leak"); return ok }, 10*time.Second, 10*time.Millisecond)
	srv := &http.Server{Handler: r}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(l)
	fl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	frontCtx, frontCancel := context.WithCancel(context.Background())
	frontDone := make(chan error)
	go func() { frontDone <- r.Serve(frontCtx, fl) }()
	tr := &http.Transport{}
	c := &http.Client{Transport: tr}
	for _, addr := range []string{l.Addr().String(), fl.Addr().String()} {
		for _, path := range []string{"/stream?n=3", "/"} {
			req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
			req.Host = "leak.example"
			resp, err := c.Do(req)
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	// A connection handed to net/http by Serve's fast path, left open.
	hc, err := net.Dial("tcp", fl.Addr().String())
	require.NoError(t, err)
	defer hc.Close()
	_, err = io.WriteString(hc, "GET / HTTP/1.0\r\nHost: leak.example\r\nConnection: keep-alive\r\n\r\n")
	require.NoError(t, err)
	_, err = http.ReadResponse(bufio.NewReader(hc), nil)
	require.NoError(t, err)
	tr.CloseIdleConnections()
	require.NoError(t, srv.Close())
	frontCancel()
	require.NoError(t, <-frontDone)
	cancel()
	require.NoError(t, <-done)
	_, err = r.AppStatus("leak")
	require.NoError(t, err)
	require.ErrorIs(t, r.Start(context.Background(), "leak"), runner.ErrNotRunning)
}

func TestRequestBodiesAreForwarded(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("echo"))
	for _, chunked := range []bool{false, true} {
		body := strings.Repeat("0123456789", 10000)
		var rd io.Reader = strings.NewReader(body)
		if chunked {
			rd = io.MultiReader(rd) // unknown length: sent chunked
		}
		req, err := http.NewRequest("POST", "http://"+e.front+"/echo", rd)
		require.NoError(t, err)
		req.Host = "echo.example"
		resp, err := client.Do(req)
		require.NoError(t, err)
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, fmt.Sprintf("%d %s", len(body), body[:20]), string(got), "chunked=%v", chunked)
	}
}

func TestWebSocketUpgradeIsRelayedAndKeepsInstanceAlive(t *testing.T) {
	clk := newFakeClock()
	e := newEnv(t, func(c *runner.Config) { c.Clock = clk })
	s := spec("ws")
	s.IdleTimeout = runner.Duration(100 * time.Millisecond)
	e.put(s)
	c, err := net.Dial("tcp", e.front)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "GET /upgrade HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, 101, resp.StatusCode)
	require.Equal(t, "echo", resp.Header.Get("Upgrade"))
	// Echo across several idle timeouts: the open connection counts as
	// activity, so the instance stays.
	for k := 0; k < 3; k++ {
		msg := "ping " + strconv.Itoa(k) + "\n"
		_, err = io.WriteString(c, msg)
		require.NoError(t, err)
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, msg, line)
		st := e.status("ws")
		require.EqualValues(t, 1, st.Instance.Active)
		require.Zero(t, st.Instance.IdleFor)
		// Two idle timeouts pass and the reaper looks.
		clk.Advance(2 * time.Duration(s.IdleTimeout))
		clk.reapRound(t)
	}
	require.EqualValues(t, 1, e.status("ws").Starts)
	require.Nil(t, e.status("ws").LastExit)
	c.Close()
	e.waitIdle("ws") // the closed WebSocket is no longer in flight
	clk.Advance(time.Duration(s.IdleTimeout))
	clk.reapRound(t)
	require.Eventually(t, func() bool {
		st := e.status("ws")
		return st.LastExit != nil && st.LastExit.Reason == "reaped"
	}, 10*time.Second, 10*time.Millisecond, "reaped once the WebSocket closed")
}

func TestFileSink(t *testing.T) {
	dir := t.TempDir()
	fs, err := runner.NewFileSink(dir)
	require.NoError(t, err)
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	require.NoError(t, fs.WriteLine(&runner.Line{App: "a", Instance: 7, Stream: runner.Stdout, Time: at, Text: []byte("hello")}))
	require.NoError(t, fs.WriteLine(&runner.Line{App: "a", Instance: 7, Stream: runner.Stderr, Time: at, Text: []byte("part"), Truncated: true}))
	require.NoError(t, fs.WriteLine(&runner.Line{App: "b", Instance: 1, Stream: runner.Stdout, Time: at, Text: []byte("other")}))
	require.NoError(t, fs.Close())
	b, err := os.ReadFile(filepath.Join(dir, "a.log"))
	require.NoError(t, err)
	require.Equal(t, "2026-01-02T03:04:05.000000006Z 7 stdout |hello\n2026-01-02T03:04:05.000000006Z 7 stderr+ |part\n", string(b))
	b, err = os.ReadFile(filepath.Join(dir, "b.log"))
	require.NoError(t, err)
	require.Contains(t, string(b), "|other\n")
	require.Error(t, fs.WriteLine(&runner.Line{App: "a"}), "closed sink refuses lines")
}

func TestDefaultFileSinkGetsAppOutput(t *testing.T) {
	state, err := os.MkdirTemp("", "rt")
	require.NoError(t, err)
	defer os.RemoveAll(state)
	r, err := runner.New(runner.Config{StateDir: state, CgroupRoot: fmt.Sprintf("paaskit-test-%d-%d", os.Getpid(), cgroupSeq.Add(1))})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	<-r.Ready()
	require.NoError(t, r.Put(spec("logged", "exit")))
	require.Error(t, r.Start(ctx, "logged"))
	cancel()
	require.NoError(t, <-done)
	b, err := os.ReadFile(filepath.Join(state, "logs", "logged.log"))
	require.NoError(t, err)
	require.Contains(t, string(b), "stderr |testapp: exiting at once as asked")
}

func TestNewValidatesConfig(t *testing.T) {
	for _, c := range []runner.Config{
		{},
		{StateDir: "relative"},
		{StateDir: "/tmp/x", UIDMin: 10, UIDMax: 5},
		{StateDir: "/tmp/x", StopGrace: -time.Second},
		{StateDir: "/tmp/x", MaxLineBytes: 10},
		{StateDir: "/tmp/x", DefaultLimits: runner.Limits{CPUWeight: 20000}},
	} {
		_, err := runner.New(c)
		require.Error(t, err, "%+v", c)
	}
}

// rawExchange writes raw bytes to the front and reads one response.
func rawExchange(t *testing.T, e *env, c net.Conn, br *bufio.Reader, raw string, method string) (*http.Response, string) {
	t.Helper()
	_, err := io.WriteString(c, raw)
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	return resp, string(b)
}

func TestFrontFastPathAndFallback(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("raw"))
	c, err := net.Dial("tcp", e.front)
	require.NoError(t, err)
	defer c.Close()
	br := bufio.NewReader(c)

	// Plain requests on one keep-alive connection, the host in any case.
	resp, body := rawExchange(t, e, c, br, "GET / HTTP/1.1\r\nHost: RAW.example:80\r\n\r\n", "GET")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "hello raw\n", body)
	resp, body = rawExchange(t, e, c, br, "HEAD / HTTP/1.1\r\nHost: raw.example\r\n\r\n", "HEAD")
	require.Equal(t, 200, resp.StatusCode)
	require.Empty(t, body)
	// Pipelined: two requests in one write, answered in order.
	_, err = io.WriteString(c, "GET /whoami HTTP/1.1\r\nHost: raw.example\r\n\r\nPOST /echo HTTP/1.1\r\nHost: raw.example\r\nContent-Length: 5\r\n\r\nhello")
	require.NoError(t, err)
	r1, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	b1, _ := io.ReadAll(r1.Body)
	require.Contains(t, string(b1), `"app":"raw"`)
	r2, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	b2, _ := io.ReadAll(r2.Body)
	require.Equal(t, "5 hello", string(b2))
	// A miss keeps the connection.
	resp, _ = rawExchange(t, e, c, br, "GET / HTTP/1.1\r\nHost: none.example\r\nContent-Length: 3\r\n\r\nabc", "GET")
	require.Equal(t, 404, resp.StatusCode)
	require.Equal(t, "1", resp.Header.Get(runner.MissHeader))
	// A chunked request body goes to net/http, which forwards it.
	resp, body = rawExchange(t, e, c, br, "POST /echo HTTP/1.1\r\nHost: raw.example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "POST")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "3 abc", body)
	// And the connection goes on working on the net/http path.
	resp, body = rawExchange(t, e, c, br, "GET / HTTP/1.1\r\nHost: raw.example\r\n\r\n", "GET")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "hello raw\n", body)

	// HTTP/1.0 is served by the net/http path.
	c2, err := net.Dial("tcp", e.front)
	require.NoError(t, err)
	defer c2.Close()
	resp, body = rawExchange(t, e, c2, bufio.NewReader(c2), "GET / HTTP/1.0\r\nHost: raw.example\r\n\r\n", "GET")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "hello raw\n", body)

	// Request smuggling attempts get a 400 and reach no app. (Content-Length
	// with chunked goes to net/http, which reads it as chunked, as RFC 9112
	// allows, and obs-fold, which net/http unfolds: either way the app gets a
	// freshly framed request.)
	for _, bad := range []string{
		"GET / HTTP/1.1\r\nHost: raw.example\r\nHost: other.example\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: raw.example\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
	} {
		c3, err := net.Dial("tcp", e.front)
		require.NoError(t, err)
		resp, _ := rawExchange(t, e, c3, bufio.NewReader(c3), bad, "GET")
		c3.Close()
		require.Equal(t, 400, resp.StatusCode, "%q", bad)
	}
}

func TestHandlerPath(t *testing.T) {
	e := newEnvFront(t, nil, true)
	e.put(spec("viahandler"))
	e.put(spec("broken", "exit"))
	require.Equal(t, "hello viahandler\n", e.mustGet("viahandler.example", "/"))
	code, _, h := e.get("nothere.example", "/")
	require.Equal(t, 404, code)
	require.Equal(t, "1", h.Get(runner.MissHeader))
	code, body, _ := e.get("broken.example", "/")
	require.Equal(t, 503, code)
	require.Contains(t, body, "exiting at once as asked")
	require.Equal(t, "100000 0123456789012345678", func() string {
		req, _ := http.NewRequest("POST", "http://"+e.front+"/echo", strings.NewReader(strings.Repeat("0123456789", 10000)))
		req.Host = "viahandler.example"
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}()[:26])
	body = e.mustGet("viahandler.example", "/stream?n=3")
	require.Equal(t, "line 0\nline 1\nline 2\n", body)
}

func TestSpecChangeUnderLoadLosesNoRequest(t *testing.T) {
	e := newEnv(t, nil)
	s := spec("busy-change")
	e.put(s)
	e.mustGet("busy-change.example", "/")
	stop := make(chan struct{})
	errs := make(chan string, 100)
	var served atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://"+e.front+"/hold?ms=5", nil)
				req.Host = "busy-change.example"
				resp, err := client.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Sprintf("%d %s", resp.StatusCode, b)
					return
				}
				served.Add(1)
			}
		}()
	}
	for k := 1; k <= 3; k++ {
		s.Env = map[string]string{"GENERATION": strconv.Itoa(k)}
		e.put(s)
		want := int64(k + 1)
		require.Eventually(t, func() bool {
			st := e.status("busy-change")
			return st.Starts == want && st.State == "running" && served.Load() > 0
		}, 20*time.Second, 5*time.Millisecond)
		n := served.Load()
		require.Eventually(t, func() bool { return served.Load() > n+20 }, 20*time.Second, 5*time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error("request failed during a graceful restart:", err)
	}
	st := e.status("busy-change")
	require.EqualValues(t, 4, st.Starts)
	require.Equal(t, "replaced", st.LastExit.Reason)
}

func TestNewChecksInitHelper(t *testing.T) {
	state := t.TempDir()
	_, err := runner.New(runner.Config{StateDir: state, InitPath: "/nonexistent/helper", CgroupRoot: "paaskit-test-init"})
	require.ErrorContains(t, err, "init helper /nonexistent/helper")
}
