package balancer

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeNames is a Config.Resolve the test controls: names to addresses,
// any other name fails as an unknown host would; it counts lookups.
type fakeNames struct {
	mu    sync.Mutex
	names map[string][]netip.Addr
	calls map[string]int
}

func newFakeNames() *fakeNames {
	return &fakeNames{names: map[string][]netip.Addr{}, calls: map[string]int{}}
}

func (f *fakeNames) set(name string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.names[name] = nil
	for _, a := range addrs {
		f.names[name] = append(f.names[name], netip.MustParseAddr(a))
	}
}

func (f *fakeNames) lookups(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

func (f *fakeNames) resolve(_ context.Context, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[host]++
	a, ok := f.names[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return a, nil
}

func nodeStatus(t testing.TB, p *Proxy, id string) NodeStatus {
	t.Helper()
	for _, n := range p.Nodes() {
		if n.ID == id {
			return n
		}
	}
	t.Fatalf("no node %s in %+v", id, p.Nodes())
	return NodeStatus{}
}

// serverOn is a backend listening on ip:port (port "0": any).
func serverOn(t testing.TB, ip, port string, h http.Handler) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, port))
	require.NoError(t, err)
	return serveOn(t, ln, h)
}

// serveOn is a backend serving h on ln.
func serveOn(t testing.TB, ln net.Listener, h http.Handler) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.Listener = ln
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// TestNamedNodeIsServedByTheLoops: a node named "localhost:port"
// (/etc/hosts) is looked up once when the table is loaded and its
// requests are then forwarded by the event loops themselves, not handed
// to the goroutine path one by one.
func TestNamedNodeIsServedByTheLoops(t *testing.T) {
	a := backendServer(t, echoInfo("a"))
	_, port, _ := net.SplitHostPort(addrOf(a))
	tb := table(t, map[string]string{"a": "localhost:" + port}, map[string]string{"*": ""})
	p := startProxy(t, Config{Table: tb, EventLoops: 2})
	require.Eventually(t, func() bool { return nodeStatus(t, p, "a").Resolved != "" }, 10*time.Second, time.Millisecond)
	require.Equal(t, "127.0.0.1:"+port, nodeStatus(t, p, "a").Resolved, "IPv4 first")
	c := &http.Client{}
	for i := 0; i < 10; i++ {
		resp, body := get(t, c, proxyURL(p)+"/", "app.example.com")
		require.Equal(t, 200, resp.StatusCode, body)
		require.Equal(t, "a", resp.Header.Get("X-Node"))
	}
	s := p.ForwarderStats()
	require.EqualValues(t, 10, s.LoopRequests)
	require.Zero(t, s.Handoffs, "a named node's requests stay on the loops")
	require.Empty(t, nodeStatus(t, p, "a").ResolveError)
}

// TestNamedNodeThatDoesNotResolve: the node is ejected with the lookup's
// error in its status, its hosts go to the other node, and it comes back
// once its name resolves (the probe looks it up again).
func TestNamedNodeThatDoesNotResolve(t *testing.T) {
	a := backendServer(t, echoInfo("a"))
	b := backendServer(t, echoInfo("b"))
	_, bport, _ := net.SplitHostPort(addrOf(b))
	names := newFakeNames()
	tb := table(t, map[string]string{"a": addrOf(a), "b": "nowhere.test:" + bport}, map[string]string{"*": ""})
	p := startProxy(t, Config{Table: tb, Resolve: names.resolve, ProbeInterval: 20 * time.Millisecond})
	require.Eventually(t, func() bool { return ejected(t, p, "b") }, 10*time.Second, time.Millisecond)
	st := nodeStatus(t, p, "b")
	require.Contains(t, st.ResolveError, "no such host")
	require.Contains(t, st.ResolveError, "nowhere.test")
	require.Empty(t, st.Resolved)
	require.Empty(t, nodeStatus(t, p, "a").ResolveError)
	c := &http.Client{}
	hostB := hostOn(t, tb, "b")
	for i := 0; i < 5; i++ {
		resp, body := get(t, c, proxyURL(p)+"/", hostB)
		require.Equal(t, 200, resp.StatusCode, body)
		require.Equal(t, "a", resp.Header.Get("X-Node"), "b's hosts go to a")
	}
	// The name appears: the probe's lookup brings b back.
	names.set("nowhere.test", "127.0.0.1")
	require.Eventually(t, func() bool { return !ejected(t, p, "b") }, 10*time.Second, time.Millisecond)
	st = nodeStatus(t, p, "b")
	require.Equal(t, "127.0.0.1:"+bport, st.Resolved)
	require.Empty(t, st.ResolveError)
	resp, body := get(t, c, proxyURL(p)+"/", hostB)
	require.Equal(t, 200, resp.StatusCode, body)
	require.Equal(t, "b", resp.Header.Get("X-Node"))
}

// TestNamedNodeChangesBetweenLoads: the same node (id and name) whose
// name points elsewhere at the next table load goes to the new address,
// keeping its identity; the loops' idle connections to the old address
// are closed.
func TestNamedNodeChangesBetweenLoads(t *testing.T) {
	one := serverOn(t, "127.0.0.1", "0", echoInfo("one"))
	_, port, _ := net.SplitHostPort(addrOf(one))
	serverOn(t, "127.0.0.2", port, echoInfo("two"))
	names := newFakeNames()
	names.set("svc.test", "127.0.0.1")
	tb := table(t, map[string]string{"n": "svc.test:" + port}, map[string]string{"*": ""})
	p := startProxy(t, Config{Table: tb, Resolve: names.resolve})
	require.Eventually(t, func() bool { return nodeStatus(t, p, "n").Resolved != "" }, 10*time.Second, time.Millisecond)
	c := &http.Client{}
	for i := 0; i < 3; i++ {
		resp, body := get(t, c, proxyURL(p)+"/", "app.example.com")
		require.Equal(t, 200, resp.StatusCode, body)
		require.Equal(t, "one", resp.Header.Get("X-Node"))
	}
	require.Equal(t, 1, names.lookups("svc.test"), "one lookup per load, none per request")
	names.set("svc.test", "127.0.0.2")
	p.SetTable(table(t, map[string]string{"n": "svc.test:" + port}, map[string]string{"*": ""}))
	want := "127.0.0.2:" + port
	require.Eventually(t, func() bool { return nodeStatus(t, p, "n").Resolved == want }, 10*time.Second, time.Millisecond)
	require.Equal(t, 2, names.lookups("svc.test"))
	// A new connection, as a pooled one may still be bound to the old
	// address on the goroutine path.
	c.CloseIdleConnections()
	for i := 0; i < 3; i++ {
		resp, body := get(t, c, proxyURL(p)+"/", "app.example.com")
		require.Equal(t, 200, resp.StatusCode, body)
		require.Equal(t, "two", resp.Header.Get("X-Node"))
	}
	if p.loops.Load() != nil {
		require.Eventually(t, func() bool {
			return p.loops.Load().IdleByTarget()[loopTarget("127.0.0.1:"+port)] == 0
		}, 10*time.Second, time.Millisecond, "idle connections to the old address closed")
	}
}

// TestNamedNodeLookedUpAgainAfterConnectFailures: a name whose address
// stops answering is looked up again after a failed connect (not once per
// request: at most once a second), and the next address it gives is used
// without a table load; with two addresses, a refused one moves the node
// to the other at once.
func TestNamedNodeLookedUpAgainAfterConnectFailures(t *testing.T) {
	// 127.0.0.1:P refuses, 127.0.0.2:P answers. P is free on 127.0.0.1
	// when picked; another test binary may hold it on 127.0.0.2 (a CI
	// run's bind failed so): pick again.
	var port string
	for try := 0; ; try++ {
		_, port, _ = net.SplitHostPort(deadAddr(t))
		ln, err := net.Listen("tcp", "127.0.0.2:"+port)
		if err == nil {
			serveOn(t, ln, echoInfo("two"))
			break
		}
		require.Less(t, try, 20, "no port free on both 127.0.0.1 and 127.0.0.2: %v", err)
	}
	names := newFakeNames()
	names.set("svc.test", "127.0.0.1")
	tb := table(t, map[string]string{"n": "svc.test:" + port}, map[string]string{"*": ""})
	p := startProxy(t, Config{Table: tb, Resolve: names.resolve, EjectAfter: time.Hour})
	require.Eventually(t, func() bool { return nodeStatus(t, p, "n").Resolved != "" }, 10*time.Second, time.Millisecond)
	names.set("svc.test", "127.0.0.2")
	c := &http.Client{}
	start := time.Now()
	var codes []int
	for i := 0; i < 200; i++ {
		resp, _ := get(t, c, proxyURL(p)+"/", "app.example.com")
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == 200 {
			require.Equal(t, "two", resp.Header.Get("X-Node"))
			break
		}
		require.Equal(t, 502, resp.StatusCode)
		time.Sleep(5 * time.Millisecond)
	}
	require.Equal(t, 200, codes[len(codes)-1], "served after the lookup: %v", codes)
	elapsed := time.Since(start)
	// One lookup for the load, then at most one per resolveRetry.
	max := 2 + int(elapsed/resolveRetry)
	require.LessOrEqual(t, names.lookups("svc.test"), max, "lookups after %d failed requests in %v", len(codes)-1, elapsed)

	// Two addresses, the first refusing: the loops move to the second
	// on the first failure.
	names.set("multi.test", "127.0.0.1", "127.0.0.2")
	p.SetTable(table(t, map[string]string{"m": "multi.test:" + port}, map[string]string{"*": ""}))
	require.Eventually(t, func() bool { return nodeStatus(t, p, "m").Resolved != "" }, 10*time.Second, time.Millisecond)
	ok := 0
	for i := 0; i < 5; i++ {
		resp, _ := get(t, c, proxyURL(p)+"/", "app.example.com")
		if resp.StatusCode == 200 {
			ok++
		}
	}
	require.GreaterOrEqual(t, ok, 4, "at most the first request fails")
	require.Equal(t, "127.0.0.2:"+port, nodeStatus(t, p, "m").Resolved)
}
