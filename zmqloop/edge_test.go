package zmqloop

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ZMQ_FD is edge-like: a send may consume the notification for input that
// is already waiting, and the goroutine parked in the netpoller then never
// wakes for it. These tests make sends and arrivals overlap all the time
// and leave no other way out (no failover: TryTimeout is an hour), so a
// lost wake-up shows as a call that does not finish within its 20s ctx.

func edgeTrapCalls(cl *Client, callers, calls int) error {
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for g := 0; g < callers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				want := fmt.Sprintf(`[%d,%d]`, g, i)
				got, err := cl.Call(ctx, "echo", json.RawMessage(want))
				cancel()
				if err == nil && string(got) != want {
					err = fmt.Errorf("caller %d call %d: got %s, want %s", g, i, got, want)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// TestClientEdgeTrap: callers send while the leader waits for replies that
// are arriving; every sender must drain after its send.
func TestClientEdgeTrap(t *testing.T) {
	c := newTestCodec(t, nil)
	_, ep := startReply(t, c, nil)
	cl := newClient(t, c, []string{ep}, func(cfg *ClientConfig) { cfg.TryTimeout = time.Hour })
	require.NoError(t, edgeTrapCalls(cl, 16, 300))
}

// TestReplyLoopEdgeTrap: workers send replies while another worker waits
// for requests that are arriving; with two workers one is nearly always
// waiting while the other sends.
func TestReplyLoopEdgeTrap(t *testing.T) {
	c := newTestCodec(t, nil)
	// libzmq processes its commands on a send only if about 1ms has passed
	// since it last did, so some handlers take 2ms: the reply after them
	// is a send that can swallow the notification.
	var n atomic.Int64
	_, ep := startReply(t, c, map[string]Handler{"echo": func(ctx context.Context, r *Request) (json.RawMessage, error) {
		if n.Add(1)%8 == 0 {
			time.Sleep(2 * time.Millisecond)
		}
		return echoHandler(ctx, r)
	}}, func(cfg *ReplyConfig) { cfg.MaxInFlight = 2 })
	// Several clients, so requests also arrive from several peers at once.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for k := 0; k < 4; k++ {
		cl := newClient(t, c, []string{ep}, func(cfg *ClientConfig) { cfg.TryTimeout = time.Hour })
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- edgeTrapCalls(cl, 4, 300)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// TestClientLeaderHandOff: the caller that waits for the sockets (the
// leader) gives up while another call is in flight; that call must take
// over the waiting, or its reply would never be read (TryTimeout is an
// hour, so nothing else would look).
func TestClientLeaderHandOff(t *testing.T) {
	c := newTestCodec(t, nil)
	stuck := make(chan struct{})
	defer close(stuck)
	slowStarted := make(chan struct{}, 1)
	release := make(chan struct{})
	_, ep := startReply(t, c, map[string]Handler{
		"stuck": func(ctx context.Context, _ *Request) (json.RawMessage, error) {
			select {
			case <-stuck:
			case <-ctx.Done():
			}
			return nil, nil
		},
		"slow": func(ctx context.Context, _ *Request) (json.RawMessage, error) {
			slowStarted <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return json.RawMessage(`"slow"`), nil
		},
	})
	cl := newClient(t, c, []string{ep}, func(cfg *ClientConfig) { cfg.TryTimeout = time.Hour })
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leaderDone := make(chan error, 1)
	go func() {
		_, err := cl.Call(leaderCtx, "stuck", nil)
		leaderDone <- err
	}()
	// Wait until the first call leads, then start the second.
	require.Eventually(t, func() bool {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		return cl.leader != nil && cl.parked
	}, 5*time.Second, time.Millisecond)
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		got, err := cl.Call(ctx, "slow", nil)
		if err == nil && string(got) != `"slow"` {
			err = fmt.Errorf("got %s", got)
		}
		res <- err
	}()
	<-slowStarted
	cancelLeader()
	require.ErrorIs(t, <-leaderDone, context.Canceled)
	close(release)
	require.NoError(t, <-res)
}
