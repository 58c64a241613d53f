package zmqloop

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err, "counting fds needs /proc (Linux)")
	return len(ents)
}

// TestClientCreateCloseNoLeak creates, uses and closes 10,000 clients and
// checks no goroutine and no file descriptor outlives them.
func TestClientCreateCloseNoLeak(t *testing.T) {
	c := newTestCodec(t, nil)
	_, ep := startReply(t, c, nil)
	warm := newClient(t, c, []string{ep})
	_, err := warm.Call(context.Background(), "echo", nil)
	require.NoError(t, err)

	ignore := goleak.IgnoreCurrent()
	before := openFDs(t)
	const cycles = 10000
	for i := 0; i < cycles; i++ {
		cl, err := NewClient(ClientConfig{Endpoints: []string{ep}, Codec: c, Logger: quietLog})
		require.NoError(t, err)
		// Every tenth client makes a call (opening its socket, watcher and
		// TCP connection); the others open theirs on an aborted call, so
		// every cycle creates and releases the full set.
		if i%10 == 0 {
			got, err := cl.Call(context.Background(), "echo", json.RawMessage(`1`))
			require.NoError(t, err)
			require.Equal(t, "1", string(got))
		} else {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			require.NoError(t, cl.start())
			_, err := cl.Call(ctx, "echo", nil)
			require.ErrorIs(t, err, context.Canceled)
		}
		require.NoError(t, cl.Close())
	}
	require.Eventually(t, func() bool { return openFDs(t) <= before }, 10*time.Second, 10*time.Millisecond,
		"fds: %d before, %d after %d clients", before, openFDs(t), cycles)
	goleak.VerifyNone(t, ignore)
}

// TestLoopsReleaseEverything starts and stops each kind of loop and sender
// many times and checks nothing is left behind.
func TestLoopsReleaseEverything(t *testing.T) {
	c := newTestCodec(t, nil)
	var ignore goleak.Option
	var before int
	h := map[string]MessageHandler{"x": func(context.Context, *Request) error { return nil }}
	for i := 0; i <= 200; i++ {
		if i == 1 {
			// Count after one warm-up cycle: the first one creates the
			// process-wide ZeroMQ context (never terminated) and its fds.
			ignore = goleak.IgnoreCurrent()
			before = openFDs(t)
		}
		ctx, cancel := context.WithCancel(context.Background())
		rl, err := NewReplyLoop(ReplyConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Logger: quietLog, Handlers: map[string]Handler{"echo": echoHandler}})
		require.NoError(t, err)
		pl, err := NewPullLoop(PullConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Logger: quietLog, Handlers: h})
		require.NoError(t, err)
		sl, err := NewSubLoop(SubConfig{PullConfig: PullConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Logger: quietLog, Handlers: h}})
		require.NoError(t, err)
		errs := make(chan error, 3)
		for _, l := range []runner{rl, pl, sl} {
			go func() { errs <- l.Run(ctx) }()
			<-l.Ready()
		}
		p, err := NewPusher(SenderConfig{Connect: pl.Endpoints(), Codec: c, Logger: quietLog})
		require.NoError(t, err)
		pub, err := NewPublisher(SenderConfig{Connect: sl.Endpoints(), Codec: c, Logger: quietLog})
		require.NoError(t, err)
		require.NoError(t, p.Push(ctx, "x", nil))
		require.NoError(t, pub.Publish(ctx, "x", nil))
		require.NoError(t, p.Close())
		require.NoError(t, pub.Close())
		cancel()
		for range 3 {
			require.NoError(t, <-errs)
		}
	}
	require.Eventually(t, func() bool { return openFDs(t) <= before }, 10*time.Second, 10*time.Millisecond,
		"fds: %d before, %d after", before, openFDs(t))
	goleak.VerifyNone(t, ignore)
}
