//go:build linux

package zmqloop

import (
	"context"
	"encoding/json"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The first phase of a wait is a blocking ppoll with an eventfd to end it
// (ppollWaiter). These tests check that each side uses it when idle, and that
// every way a wait must end early does end it: with SyscallWait an hour,
// a missed wake-up leaves the waiter there until the test's timeout.

// twoPs runs the rest of the test with GOMAXPROCS at least 2 (the first
// phase is off with one P), whatever the CPUs: go test -cpu 1 and taskset
// runs included.
func twoPs(t *testing.T) {
	if n := runtime.GOMAXPROCS(0); n < 2 {
		runtime.GOMAXPROCS(2)
		t.Cleanup(func() { runtime.GOMAXPROCS(n) })
	}
}

func calls(t *testing.T, cl *Client, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		got, err := cl.Call(ctx, "echo", json.RawMessage(`"x"`))
		cancel()
		require.NoError(t, err)
		require.Equal(t, `"x"`, string(got))
	}
}

func TestSyscallWaitUsedByIdleSides(t *testing.T) {
	twoPs(t)
	c := newTestCodec(t, nil)
	for _, tc := range []struct {
		name           string
		client, server time.Duration
		endpoints      int
		ppolls         bool
	}{
		{"client only", 0, -1, 1, true},
		{"client of two endpoints only (ppoll on the epoll set)", 0, -1, 2, true},
		{"loop only", -1, 0, 1, true},
		{"neither", -1, -1, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var eps []string
			for range tc.endpoints {
				_, ep := startReply(t, c, nil, func(cfg *ReplyConfig) { cfg.SyscallWait = tc.server })
				eps = append(eps, ep)
			}
			cl := newClient(t, c, eps, func(cfg *ClientConfig) { cfg.SyscallWait = tc.client })
			before := ppollWaits.Load()
			calls(t, cl, 50)
			n := ppollWaits.Load() - before
			if tc.ppolls {
				require.Greater(t, n, int64(0), "no wait was spent in ppoll")
			} else {
				require.Zero(t, n)
			}
		})
	}
}

func TestSyscallWaitNotWithOneP(t *testing.T) {
	c := newTestCodec(t, nil)
	_, ep := startReply(t, c, nil)
	cl := newClient(t, c, []string{ep})
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	before := ppollWaits.Load()
	calls(t, cl, 50)
	require.Zero(t, ppollWaits.Load()-before, "with one P a blocking wait stalls every other goroutine")
}

// TestSyscallWaitWakeUps overlaps lone calls (which ppoll) with concurrent
// ones, and replies with arriving requests, on both sides.
func TestSyscallWaitWakeUps(t *testing.T) {
	twoPs(t)
	c := newTestCodec(t, nil)
	var mu sync.Mutex
	n := 0
	_, ep := startReply(t, c, map[string]Handler{"echo": func(ctx context.Context, r *Request) (json.RawMessage, error) {
		mu.Lock()
		n++
		slow := n%8 == 0
		mu.Unlock()
		if slow {
			time.Sleep(2 * time.Millisecond)
		}
		return echoHandler(ctx, r)
	}}, func(cfg *ReplyConfig) { cfg.MaxInFlight = 2; cfg.SyscallWait = time.Hour })
	before := ppollWaits.Load()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for k := 0; k < 4; k++ {
		callers := 1 + k%2 // two clients with one caller (they ppoll), two with two
		cl := newClient(t, c, []string{ep}, func(cfg *ClientConfig) { cfg.TryTimeout = time.Hour; cfg.SyscallWait = time.Hour })
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- edgeTrapCalls(cl, callers, 300)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Greater(t, ppollWaits.Load()-before, int64(0))
}

// ppollCall starts a call whose handler never answers and waits until
// its leader waits in ppoll; it returns the call's result channel.
func ppollCall(t *testing.T, ctx context.Context) (*Client, <-chan error) {
	t.Helper()
	twoPs(t)
	c := newTestCodec(t, nil)
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	_, ep := startReply(t, c, map[string]Handler{"stuck": func(ctx context.Context, _ *Request) (json.RawMessage, error) {
		select {
		case <-stuck:
		case <-ctx.Done():
		}
		return nil, nil
	}})
	cl := newClient(t, c, []string{ep}, func(cfg *ClientConfig) { cfg.TryTimeout = time.Hour; cfg.SyscallWait = time.Hour })
	res := make(chan error, 1)
	go func() {
		_, err := cl.Call(ctx, "stuck", nil)
		res <- err
	}()
	require.Eventually(t, func() bool {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		return cl.inPpoll
	}, 5*time.Second, time.Millisecond)
	return cl, res
}

// requireEnds checks that the call behind res returns target within 10s.
func requireEnds(t *testing.T, res <-chan error, target error, why string) {
	t.Helper()
	select {
	case err := <-res:
		require.ErrorIs(t, err, target)
	case <-time.After(10 * time.Second):
		t.Fatalf("%s stayed in its ppoll wait", why)
	}
}

func TestSyscallWaitEndsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, res := ppollCall(t, ctx)
	cancel()
	requireEnds(t, res, context.Canceled, "a cancelled call")
}

func TestSyscallWaitEndsOnClose(t *testing.T) {
	cl, res := ppollCall(t, context.Background())
	require.NoError(t, cl.Close())
	requireEnds(t, res, ErrClosed, "a call on a closed client")
}

func TestSyscallWaitEndsOnDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, res := ppollCall(t, ctx)
	requireEnds(t, res, ErrTimeout, "a call past its deadline")
}

func TestReplyLoopStopsWhileInSyscallWait(t *testing.T) {
	twoPs(t)
	c := newTestCodec(t, nil)
	l, err := NewReplyLoop(ReplyConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Logger: quietLog,
		Handlers: map[string]Handler{"echo": echoHandler}, SyscallWait: time.Hour})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	before := ppollWaits.Load()
	go func() { done <- l.Run(ctx) }()
	<-l.Ready()
	cl := newClient(t, c, l.Endpoints(), func(cfg *ClientConfig) { cfg.SyscallWait = -1 })
	calls(t, cl, 3)
	// After its reply the worker waits for the next request in ppoll.
	require.Eventually(t, func() bool { return ppollWaits.Load() > before }, 5*time.Second, time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the loop's worker stayed in its ppoll wait after cancel")
	}
}
