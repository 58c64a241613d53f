package balancer

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestEventLoopPathServesRoutesAndHeals runs the balancer's behaviours
// that the loops serve themselves (routing, in-flight counts, retry and
// ejection of a dead node, return of the node) and the ones they hand
// off (the miss hook) with the event loops on, and checks through
// ForwarderStats that the loops did serve them.
func TestEventLoopPathServesRoutesAndHeals(t *testing.T) {
	a := backendServer(t, echoInfo("a"))
	bAddr := deadAddr(t)
	tb := table(t, map[string]string{"a": addrOf(a), "b": bAddr}, map[string]string{"*": ""})
	clk := newFakeClock()
	p := startProxy(t, Config{Table: tb, EventLoops: 2, EjectAfter: 100 * time.Millisecond, ProbeInterval: 20 * time.Millisecond, Clock: clk})
	c := &http.Client{}
	hostA, hostB := hostOn(t, tb, "a"), hostOn(t, tb, "b")
	for i := 0; i < 10; i++ {
		resp, _ := get(t, c, proxyURL(p)+"/", hostA)
		require.Equal(t, "a", resp.Header.Get("X-Node"))
	}
	s := p.ForwarderStats()
	require.EqualValues(t, 10, s.LoopRequests)
	require.Zero(t, s.Handoffs)
	// The node connection goes back to its pool just after the last
	// byte was written to the client, which may read it first.
	require.Eventually(t, func() bool { return p.ForwarderStats().LoopIdleConns >= 1 },
		5*time.Second, time.Millisecond, "the loops pooled the node connection")
	// b refuses connections: retried on a, then ejected.
	resp, _ := get(t, c, proxyURL(p)+"/", hostB)
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "a", resp.Header.Get("X-Node"))
	require.False(t, ejected(t, p, "b"), "within the grace period")
	clk.Advance(100 * time.Millisecond)
	resp, _ = get(t, c, proxyURL(p)+"/", hostB)
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "a", resp.Header.Get("X-Node"))
	require.True(t, ejected(t, p, "b"), "failing for EjectAfter")
	// A request counts until its response was wholly written to the
	// client, which may be a moment after the client read it.
	require.Eventually(t, func() bool {
		for _, n := range p.Nodes() {
			if n.InFlight != 0 {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond, "in flight: %+v", p.Nodes())
	require.Zero(t, p.ForwarderStats().Handoffs)
}

func TestEventLoopMissIsHandedOffAndRetried(t *testing.T) {
	var started atomic.Bool
	a := backendServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !started.Load() {
			w.Header().Set("X-Paaskit-Miss", "1")
			w.WriteHeader(404)
			return
		}
		_, _ = io.WriteString(w, "app says hi")
	}))
	var calls atomic.Int64
	p := startProxy(t, Config{
		Table:      table(t, map[string]string{"a": addrOf(a)}, map[string]string{"*": ""}),
		EventLoops: 2,
		OnMiss: func(context.Context, Miss) error {
			calls.Add(1)
			started.Store(true)
			return nil
		},
	})
	c := &http.Client{}
	resp, body := get(t, c, proxyURL(p)+"/", "app.example.com")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "app says hi", body)
	require.EqualValues(t, 1, calls.Load())
	require.EqualValues(t, 1, p.ForwarderStats().Handoffs)
	// New connections are served by the loops again.
	c.CloseIdleConnections()
	resp, _ = get(t, c, proxyURL(p)+"/", "app.example.com")
	require.Equal(t, 200, resp.StatusCode)
	require.EqualValues(t, 2, p.ForwarderStats().LoopRequests)
}

// A connection handed off for a chunked upload (one larger than
// MaxConnBuffer: a small one sent whole stays on the loops) goes back to the event
// loops once the upload was answered: the GETs that follow on it are
// served by a loop (LoopRequests), not by the goroutine path.
func TestChunkedUploadThenGETsReturnToTheLoop(t *testing.T) {
	a := backendServer(t, echoInfo("a"))
	p := startProxy(t, Config{Table: table(t, map[string]string{"a": addrOf(a)}, map[string]string{"*": ""}), EventLoops: 2})
	rc := dialRaw(t, p)
	rc.send("POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8000\r\n" + strings.Repeat("u", 32<<10) + "\r\n0\r\n\r\n")
	resp, _ := rc.response("POST")
	require.Equal(t, 200, resp.StatusCode)
	before := p.ForwarderStats()
	require.EqualValues(t, 1, before.Handoffs)
	for i := 0; i < 3; i++ {
		rc.send("GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := rc.response("GET")
		require.Equal(t, 200, resp.StatusCode)
		require.Contains(t, body, "path=/after")
	}
	after := p.ForwarderStats()
	require.EqualValues(t, 1, after.Resumed, "the connection went back to the loops")
	require.Equal(t, before.LoopRequests+3, after.LoopRequests, "the GETs were served by a loop")
	require.EqualValues(t, 1, after.Handoffs)
}
