package zmqloop

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPusherBackpressure stalls the receiver until the Pusher's queue is
// full (every libzmq and TCP buffer on the way is full too, so the socket
// pushes back and messages queue for the socket goroutine, which waits for
// the socket), then lets it go: every message arrives once, in order, and
// the pusher's callers were held up rather than failed.
func TestPusherBackpressure(t *testing.T) {
	c := newTestCodec(t, nil)
	gate := make(chan struct{})
	first := make(chan struct{})
	var firstOnce sync.Once
	var mu sync.Mutex
	var got []int
	l, err := NewPullLoop(PullConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Logger: quietLog,
		Handlers: map[string]MessageHandler{"stat": func(_ context.Context, r *Request) error {
			firstOnce.Do(func() { close(first) })
			<-gate
			var v struct{ N int }
			if err := json.Unmarshal(r.Body, &v); err != nil {
				return err
			}
			mu.Lock()
			got = append(got, v.N)
			mu.Unlock()
			return nil
		}}})
	require.NoError(t, err)
	ep := start(t, l)
	p, err := NewPusher(SenderConfig{Connect: []string{ep}, Codec: c, Logger: quietLog, Queue: 64})
	require.NoError(t, err)
	defer p.Close()

	// The pusher pushes until it is held up: the count is whatever the
	// queue and the buffers behind it hold, not a fixed figure that must
	// exceed them (20,000 took 11 s under -race, mostly sealing and
	// opening the messages after the gate opened).
	pad := strings.Repeat("x", 2000)
	var stop atomic.Bool
	var total int
	pushed := make(chan error, 1)
	go func() {
		for i := 0; !stop.Load(); i++ {
			body := json.RawMessage(fmt.Sprintf(`{"N":%d,"pad":%q}`, i, pad))
			if err := p.Push(context.Background(), "stat", body); err != nil {
				pushed <- err
				return
			}
			total = i + 1
		}
		pushed <- nil
	}()
	// Once the first message reached the handler the connection is up, and
	// the queue can fill only when every buffer behind it is full.
	select {
	case <-first:
	case <-time.After(20 * time.Second):
		t.Fatal("no message reached the pull loop")
	}
	require.Eventually(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.count == 64
	}, 20*time.Second, time.Millisecond, "the pusher's queue never filled")
	stop.Store(true) // the Push that is held up now is the last
	close(gate)
	require.NoError(t, <-pushed)
	require.Greater(t, total, 64+pusherHWM, "the queue filled before libzmq's buffers did")
	t.Logf("%d messages pushed before the pusher was held up", total)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == total
	}, 30*time.Second, 5*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for i, n := range got {
		require.Equal(t, i, n, "message %d out of order", i)
	}
}
