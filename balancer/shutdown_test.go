package balancer

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// silentNode accepts connections and reads requests but never answers.
// got counts the request lines it has read.
type silentNode struct {
	ln    net.Listener
	got   atomic.Int64
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newSilentNode(t *testing.T) *silentNode {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	n := &silentNode{ln: ln}
	n.wg.Add(1)
	go n.accept()
	return n
}

func (n *silentNode) accept() {
	defer n.wg.Done()
	for {
		c, err := n.ln.Accept()
		if err != nil {
			return
		}
		n.mu.Lock()
		n.conns = append(n.conns, c)
		n.mu.Unlock()
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			br := bufio.NewReader(c)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if strings.HasPrefix(line, "GET ") || strings.HasPrefix(line, "POST ") {
					n.got.Add(1)
				}
			}
		}()
	}
}

// close stops the node and waits for its goroutines.
func (n *silentNode) close() {
	_ = n.ln.Close()
	n.mu.Lock()
	for _, c := range n.conns {
		_ = c.Close()
	}
	n.mu.Unlock()
	n.wg.Wait()
}

// Shutdown is bounded by one ShutdownTimeout for the whole proxy, not
// one per forwarder: with a request that never gets an answer on the
// event loops and another on the goroutine path (handed off: a body
// larger than the loops buffer), both have ShutdownTimeout to finish, then both are cut, the
// connections to the node included, and Run returns, leaving no
// goroutine behind.
func TestShutdownTakesOneTimeoutForBothPaths(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	node := newSilentNode(t)
	defer node.close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	const timeout = 300 * time.Millisecond
	cfg := Config{
		Listener:              ln,
		Logger:                testLogger(t),
		Table:                 table(t, map[string]string{"a": node.ln.Addr().String()}, map[string]string{"*": ""}),
		ShutdownTimeout:       timeout,
		ResponseHeaderTimeout: 10 * time.Second,
	}
	testForwarder(&cfg)
	p, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(ctx) }()
	<-p.Ready()

	var clients []*bufio.Reader
	for _, req := range []string{
		"GET /never HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"POST /never HTTP/1.1\r\nHost: a.test\r\nContent-Length: 20000\r\n\r\n" + strings.Repeat("a", 20000),
	} {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		_, err = io.WriteString(c, req)
		require.NoError(t, err)
		clients = append(clients, bufio.NewReader(c))
	}
	require.Eventually(t, func() bool { return node.got.Load() == 2 }, 5*time.Second, time.Millisecond,
		"the node got both requests: %d", node.got.Load())
	if fs := p.ForwarderStats(); fs.LoopRequests > 0 {
		require.Equal(t, ForwarderStats{LoopConns: 1, LoopRequests: 1, Handoffs: 1}, fs, "one request on each path")
	}

	start := time.Now()
	cancel()
	select {
	case err := <-runDone:
		took := time.Since(start)
		require.NoError(t, err)
		t.Logf("Run returned %v after the cancel (ShutdownTimeout %v)", took, timeout)
		require.GreaterOrEqual(t, took, timeout, "the requests had their time")
		require.Less(t, took, timeout*3/2+100*time.Millisecond, "one ShutdownTimeout for the whole shutdown")
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}
	for i, br := range clients {
		b, err := io.ReadAll(br)
		require.NoError(t, err, "client %d", i)
		require.False(t, strings.HasPrefix(string(b), "HTTP/1.1 2"), "client %d got %q", i, b)
	}
	require.Equal(t, 0, int(p.Nodes()[0].InFlight))
}
