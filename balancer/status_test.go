package balancer

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// streamingNode is a node whose answers to /stream send their head and
// then a line every 20ms until the test releases them: they end the body
// then, or with ?abort=1 cut the connection mid-body. A client that went
// away ends them too (a write fails).
type streamingNode struct {
	mu      sync.Mutex
	release chan struct{}
	started chan struct{} // a stream sent its head
}

func newStreamingNode(t *testing.T) (*streamingNode, string) {
	n := &streamingNode{release: make(chan struct{}), started: make(chan struct{}, 16)}
	s := backendServer(t, http.HandlerFunc(n.serve))
	t.Cleanup(n.releaseAll)
	return n, addrOf(s)
}

func (n *streamingNode) serve(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	if r.URL.Path != "/stream" {
		_, _ = io.WriteString(w, "short")
		return
	}
	n.mu.Lock()
	release := n.release
	n.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(200)
	fl := w.(http.Flusher)
	fl.Flush()
	n.started <- struct{}{}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-release:
			if r.URL.Query().Get("abort") != "" {
				panic(http.ErrAbortHandler) // cuts the connection mid-body
			}
			_, _ = io.WriteString(w, "end\n")
			return
		case <-r.Context().Done():
			return
		case <-tick.C:
			if _, err := io.WriteString(w, "tick\n"); err != nil {
				return
			}
			fl.Flush()
		}
	}
}

// releaseAll ends the streams under way; later ones wait again.
func (n *streamingNode) releaseAll() {
	n.mu.Lock()
	close(n.release)
	n.release = make(chan struct{})
	n.mu.Unlock()
}

func inFlight(p *Proxy) map[string]int64 {
	m := map[string]int64{}
	for _, n := range p.Nodes() {
		m[n.ID] = n.InFlight
	}
	return m
}

// openStream sends req on a fresh connection to the proxy and returns
// once the response head has arrived.
func openStream(t *testing.T, p *Proxy, req string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_, err = io.WriteString(c, req)
	require.NoError(t, err)
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 200 OK\r\n", line)
	for {
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		if line == "\r\n" {
			return c, br
		}
	}
}

// A request counts toward its node (NodeStatus.InFlight, and so bounded
// load) from its pick until the exchange is wholly over, not only until
// the response head: while a response streams it is in flight; once the
// body was relayed, or cut by either side, or after a retry elsewhere,
// every count is back to zero, exactly (a second decrement would show
// as 0 instead of 1 in the next step's check).
func TestInFlightLastsUntilTheResponseBodyEnds(t *testing.T) {
	node, addr := newStreamingNode(t)
	tb := table(t, map[string]string{"a": addr, "dead": deadAddr(t)}, map[string]string{"a.test": "a", "*": ""})
	p := startProxy(t, Config{Table: tb, EjectAfter: time.Hour})
	zero := map[string]int64{"a": 0, "dead": 0}
	wantA := map[string]int64{"a": 1, "dead": 0}
	allZero := func() bool { return fmt.Sprint(inFlight(p)) == fmt.Sprint(zero) }
	reqFor := func(path, host string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
	}

	t.Run("body relayed", func(t *testing.T) {
		_, br := openStream(t, p, reqFor("/stream", "a.test"))
		<-node.started
		require.Equal(t, wantA, inFlight(p), "while the body streams")
		node.releaseAll()
		body := readChunked(t, br)
		require.True(t, strings.HasSuffix(body, "end\n"), "body %q", body)
		require.Eventually(t, allZero, 5*time.Second, 5*time.Millisecond, "after the body: %v", inFlight(p))
	})
	t.Run("client gone mid-body", func(t *testing.T) {
		c, _ := openStream(t, p, reqFor("/stream", "a.test"))
		<-node.started
		require.Equal(t, wantA, inFlight(p), "while the body streams")
		_ = c.Close()
		require.Eventually(t, allZero, 5*time.Second, 5*time.Millisecond, "after the client left: %v", inFlight(p))
	})
	t.Run("node cut mid-body", func(t *testing.T) {
		_, br := openStream(t, p, reqFor("/stream?abort=1", "a.test"))
		<-node.started
		require.Equal(t, wantA, inFlight(p), "while the body streams")
		node.releaseAll()
		_, err := io.ReadAll(br)
		require.NoError(t, err) // the proxy closes the client connection
		require.Eventually(t, allZero, 5*time.Second, 5*time.Millisecond, "after the node cut: %v", inFlight(p))
	})
	t.Run("retried from a dead node", func(t *testing.T) {
		// The host's order starts with the dead node, whose connection
		// is refused: the request goes on to a, and the dead node's
		// count ends with its attempt.
		host := hostOn(t, tb, "dead")
		_, br := openStream(t, p, reqFor("/stream", host))
		<-node.started
		require.Equal(t, wantA, inFlight(p), "while the body streams")
		node.releaseAll()
		readChunked(t, br)
		require.Eventually(t, allZero, 5*time.Second, 5*time.Millisecond, "after the body: %v", inFlight(p))
	})
	t.Run("handed off", func(t *testing.T) {
		// A body larger than the loops buffer (MaxConnBuffer) is
		// served by the goroutine path.
		before := p.ForwarderStats().Handoffs
		_, br := openStream(t, p, "POST /stream HTTP/1.1\r\nHost: a.test\r\nContent-Length: 20000\r\n\r\n"+strings.Repeat("a", 20000))
		<-node.started
		if p.ForwarderStats().LoopRequests > 0 {
			require.Equal(t, before+1, p.ForwarderStats().Handoffs, "handed off by the loops")
		}
		require.Equal(t, wantA, inFlight(p), "while the body streams")
		node.releaseAll()
		readChunked(t, br)
		require.Eventually(t, allZero, 5*time.Second, 5*time.Millisecond, "after the body: %v", inFlight(p))
	})
	t.Run("short exchanges", func(t *testing.T) {
		c := &http.Client{}
		defer c.CloseIdleConnections()
		for i := 0; i < 20; i++ {
			_, body := get(t, c, proxyURL(p)+"/short", "a.test")
			require.Equal(t, "short", body)
		}
		require.Eventually(t, allZero, 5*time.Second, 5*time.Millisecond, "after the requests: %v", inFlight(p))
	})
}

// readChunked reads a chunked body to its end and returns it.
func readChunked(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		var size int
		_, err = fmt.Sscanf(strings.TrimSpace(line), "%x", &size)
		require.NoError(t, err, "chunk size line %q", line)
		if size == 0 {
			_, err = br.ReadString('\n')
			require.NoError(t, err)
			return b.String()
		}
		chunk := make([]byte, size+2)
		_, err = io.ReadFull(br, chunk)
		require.NoError(t, err)
		b.Write(chunk[:size])
	}
}

// holdingNode answers /hold only once k requests are under way at once,
// so that k connections to it are open; it counts its open connections.
type holdingNode struct {
	k    int
	mu   sync.Mutex
	n    int
	all  chan struct{}
	open atomic.Int64
	srv  *httptest.Server
	addr string
}

func newHoldingNode(t *testing.T, k int) *holdingNode {
	n := &holdingNode{k: k, all: make(chan struct{})}
	n.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		n.n++
		all := n.all
		if n.n == n.k {
			close(n.all)
			n.n, n.all = 0, make(chan struct{})
		}
		n.mu.Unlock()
		select {
		case <-all:
		case <-time.After(5 * time.Second):
		}
		_, _ = io.WriteString(w, "held")
	}))
	n.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			n.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			n.open.Add(-1)
		}
	}
	n.srv.Start()
	t.Cleanup(n.srv.Close)
	n.addr = addrOf(n.srv)
	return n
}

// burst sends k requests at once on k client connections.
func (n *holdingNode) burst(t *testing.T, p *Proxy, host string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n.k)
	for i := 0; i < n.k; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			req, _ := http.NewRequest("GET", proxyURL(p)+"/hold", nil)
			req.Host = host
			resp, err := c.Do(req)
			if err != nil {
				errs <- err
				return
			}
			b, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err == nil && string(b) != "held" {
				err = fmt.Errorf("body %q", b)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func idleOf(p *Proxy) map[string]int {
	m := map[string]int{}
	for _, n := range p.Nodes() {
		m[n.ID] = n.Idle
	}
	return m
}

// NodeStatus.Idle counts the node's pooled keep-alive connections on
// both paths: the event loops keep their own pools, and after k
// requests at once to a node its k connections show there, matching
// the loops' total. When the node closes them, or leaves the table,
// they are gone from the figure and closed.
func TestNodeIdleCountsEveryPool(t *testing.T) {
	const k = 4
	a := newHoldingNode(t, k)
	other := backendServer(t, echoInfo("b"))
	nodes := map[string]string{"a": a.addr, "b": addrOf(other)}
	tb := table(t, nodes, map[string]string{"a.test": "a", "*": ""})
	p := startProxy(t, Config{Table: tb})
	loops := func() bool { return p.ForwarderStats().LoopRequests > 0 }

	a.burst(t, p, "a.test")
	want := map[string]int{"a": k, "b": 0}
	require.Eventually(t, func() bool { return fmt.Sprint(idleOf(p)) == fmt.Sprint(want) },
		5*time.Second, 5*time.Millisecond, "idle after %d requests at once: %v", k, idleOf(p))
	require.EqualValues(t, k, a.open.Load(), "the node's open connections")
	if loops() {
		require.EqualValues(t, k, p.ForwarderStats().LoopIdleConns, "the loops' pools")
		require.Zero(t, p.ForwarderStats().Handoffs)

		// The node closes its idle connections: the loops see each one
		// end and drop it (the goroutine path finds out on next use).
		a.srv.CloseClientConnections()
		require.Eventually(t, func() bool { return idleOf(p)["a"] == 0 },
			5*time.Second, 5*time.Millisecond, "idle after the node closed them: %v", idleOf(p))
		require.Zero(t, p.ForwarderStats().LoopIdleConns)
		a.burst(t, p, "a.test")
		require.Eventually(t, func() bool { return idleOf(p)["a"] == k },
			5*time.Second, 5*time.Millisecond, "idle after a second burst: %v", idleOf(p))
	}

	// a leaves the table: its pooled connections are closed on every
	// path, and when it comes back it starts with none.
	p.SetTable(table(t, map[string]string{"b": addrOf(other)}, map[string]string{"*": ""}))
	require.Eventually(t, func() bool { return a.open.Load() == 0 },
		5*time.Second, 5*time.Millisecond, "the node's connections after it left the table: %d open", a.open.Load())
	require.Eventually(t, func() bool { return p.ForwarderStats().LoopIdleConns == 0 },
		5*time.Second, 5*time.Millisecond, "the loops' pools after the node left the table")
	p.SetTable(tb)
	require.Equal(t, map[string]int{"a": 0, "b": 0}, idleOf(p))
}
