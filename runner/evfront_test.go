package runner_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paaskit/paaskit/runner"
	"github.com/stretchr/testify/require"
)

// With event loops on, warm requests go through internal/evproxy and
// everything else through the goroutine path; both answer alike, and the
// in-flight count that idle reaping relies on returns to zero.
func TestEventLoopFront(t *testing.T) {
	clk := newFakeClock()
	e := newEnv(t, func(c *runner.Config) { c.EventLoops = 2; c.Clock = clk })
	s := spec("loops")
	s.IdleTimeout = runner.Duration(300 * time.Millisecond)
	e.put(s)
	// Cold: handed off, started, served.
	require.Equal(t, "hello loops\n", e.mustGet("loops.example", "/"))
	// Warm, on one keep-alive connection, with and without bodies.
	c, err := net.Dial("tcp", e.front)
	require.NoError(t, err)
	defer c.Close()
	br := bufio.NewReader(c)
	for k := 0; k < 50; k++ {
		resp, body := rawExchange(t, e, c, br, "GET / HTTP/1.1\r\nHost: Loops.Example:8080\r\n\r\n", "GET")
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, "hello loops\n", body)
		resp, body = rawExchange(t, e, c, br, "POST /echo HTTP/1.1\r\nHost: loops.example\r\nContent-Length: 5\r\n\r\nhello", "POST")
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, "5 hello", body)
	}
	// A body larger than the loops buffer, a chunked one, a miss and an
	// upgrade on the same connection: each handed to the goroutine path
	// with no byte lost.
	big := strings.Repeat("0123456789", 10000)
	resp, body := rawExchange(t, e, c, br, fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: loops.example\r\nContent-Length: %d\r\n\r\n%s", len(big), big), "POST")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, fmt.Sprintf("%d %s", len(big), big[:20]), body)
	resp, body = rawExchange(t, e, c, br, "POST /echo HTTP/1.1\r\nHost: loops.example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "POST")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "3 abc", body)
	c2, err := net.Dial("tcp", e.front)
	require.NoError(t, err)
	defer c2.Close()
	br2 := bufio.NewReader(c2)
	resp, _ = rawExchange(t, e, c2, br2, "GET / HTTP/1.1\r\nHost: nowhere.example\r\n\r\n", "GET")
	require.Equal(t, 404, resp.StatusCode)
	require.Equal(t, "1", resp.Header.Get(runner.MissHeader))
	_, err = io.WriteString(c2, "GET /upgrade HTTP/1.1\r\nHost: loops.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	require.NoError(t, err)
	resp, err = http.ReadResponse(br2, nil)
	require.NoError(t, err)
	require.Equal(t, 101, resp.StatusCode)
	_, err = io.WriteString(c2, "ping\n")
	require.NoError(t, err)
	line, err := br2.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ping\n", line)
	c2.Close()

	// Many at once, then none in flight.
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for k := 0; k < 100; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body, _ := e.get("loops.example", "/")
			if code != 200 || body != "hello loops\n" {
				errs <- fmt.Errorf("%d %q", code, body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return e.status("loops").Instance != nil && e.status("loops").Instance.Active == 0 },
		10*time.Second, 5*time.Millisecond, "in-flight count back to zero")
	require.EqualValues(t, 1, e.status("loops").Starts)
	// Idle: reaped, and the next request starts it again.
	c.Close()
	clk.Advance(300 * time.Millisecond)
	clk.reapRound(t)
	require.Eventually(t, func() bool {
		st := e.status("loops")
		return st.LastExit != nil && st.LastExit.Reason == "reaped"
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "hello loops\n", e.mustGet("loops.example", "/"))
	require.EqualValues(t, 2, e.status("loops").Starts)
}

func TestEventLoopsBelowMinusOneAreRejected(t *testing.T) {
	_, err := runner.New(runner.Config{StateDir: t.TempDir(), EventLoops: -2})
	require.ErrorContains(t, err, "EventLoops -2")
	_, err = runner.New(runner.Config{StateDir: t.TempDir(), EventLoops: -1})
	require.NoError(t, err, "-1 turns the loops off")
}

// Each new instance has a socket of its own: a front whose apps restart
// again and again (here: reaped as idle, then started by the next
// request) keeps no descriptor for the instances that are gone.
// (internal/evproxy's TestPoolsOfGoneTargetsAreFreed counts the loops'
// pools themselves.)
func TestFrontKeepsNothingOfGoneInstances(t *testing.T) {
	clk := newFakeClock()
	e := newEnv(t, func(c *runner.Config) { c.Clock = clk })
	s := spec("churn")
	s.IdleTimeout = runner.Duration(50 * time.Millisecond)
	e.put(s)
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		require.NoError(t, err)
		n := 0
		for _, e := range ents {
			// The pool of network namespaces made ahead is bounded
			// by Config.NetnsPool, whatever the churn: not counted.
			if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); strings.HasPrefix(l, "net:") {
				continue
			}
			n++
		}
		return n
	}
	round := func(k int) {
		c, err := net.Dial("tcp", e.front)
		require.NoError(t, err)
		br := bufio.NewReader(c)
		for i := 0; i < 5; i++ {
			resp, body := rawExchange(t, e, c, br, "GET / HTTP/1.1\r\nHost: churn.example\r\n\r\n", "GET")
			require.Equal(t, 200, resp.StatusCode)
			require.Equal(t, "hello churn\n", body)
		}
		require.NoError(t, c.Close())
		e.waitIdle("churn")
		clk.Advance(50 * time.Millisecond)
		clk.reapRound(t)
		require.Eventually(t, func() bool {
			st := e.status("churn")
			return st.Starts == int64(k) && st.State == "stopped"
		}, 10*time.Second, 5*time.Millisecond, "instance %d reaped", k)
	}
	round(1)
	base := fds()
	for k := 2; k <= 15; k++ {
		round(k)
	}
	require.Eventually(t, func() bool { return fds() <= base+2 }, 10*time.Second, 10*time.Millisecond,
		"descriptors after 15 instances: %d, after the first: %d", fds(), base)
	netns := func() int {
		ents, _ := os.ReadDir("/proc/self/fd")
		n := 0
		for _, e := range ents {
			if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); strings.HasPrefix(l, "net:") {
				n++
			}
		}
		return n
	}
	require.Eventually(t, func() bool { return netns() <= runner.DefaultNetnsPool+3 }, 10*time.Second, 10*time.Millisecond,
		"network namespaces held after 15 instances: %d (pool of %d, plus each live runner's own): %v", netns(), runner.DefaultNetnsPool, netLinks())
}

func netLinks() []string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); strings.HasPrefix(l, "net:") {
			out = append(out, e.Name()+"="+l)
		}
	}
	self, _ := os.Readlink("/proc/self/ns/net")
	return append(out, "self="+self)
}
