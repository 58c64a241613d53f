package zmqloop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/require"
)

func TestClientConcurrentCallers(t *testing.T) {
	c := newTestCodec(t, nil)
	_, ep := startReply(t, c, nil)
	cl := newClient(t, c, []string{ep})
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				want := fmt.Sprintf(`{"g":%d,"i":%d}`, g, i)
				got, err := cl.Call(context.Background(), "echo", json.RawMessage(want))
				if err == nil && string(got) != want {
					err = fmt.Errorf("caller %d call %d got %s, want %s", g, i, got, want)
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
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestClientSkipsDeadEndpoint(t *testing.T) {
	c := newTestCodec(t, nil)
	_, live := startReply(t, c, nil)
	dead := deadEndpoint(t)
	// A long TryTimeout proves the dead endpoint is skipped at once rather
	// than timed out.
	cl := newClient(t, c, []string{dead, live, dead}, func(cfg *ClientConfig) { cfg.TryTimeout = time.Hour })
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		got, err := cl.Call(ctx, "echo", json.RawMessage(`"x"`))
		cancel()
		require.NoError(t, err, "call %d", i)
		require.Equal(t, `"x"`, string(got))
	}
}

func TestClientFailsOverFromSlowEndpoint(t *testing.T) {
	c := newTestCodec(t, nil)
	stuck := make(chan struct{})
	defer close(stuck)
	var slowCalls atomic.Int32
	_, slow := startReply(t, c, map[string]Handler{"echo": func(ctx context.Context, r *Request) (json.RawMessage, error) {
		slowCalls.Add(1)
		select {
		case <-stuck:
		case <-ctx.Done():
		}
		return json.RawMessage(`"slow"`), nil
	}})
	_, fast := startReply(t, c, map[string]Handler{"echo": func(context.Context, *Request) (json.RawMessage, error) {
		return json.RawMessage(`"fast"`), nil
	}})
	cl := newClient(t, c, []string{slow, fast}, func(cfg *ClientConfig) { cfg.TryTimeout = 200 * time.Millisecond })
	for i := 0; i < 20; i++ {
		got, err := cl.Call(context.Background(), "echo", nil)
		require.NoError(t, err)
		require.Equal(t, `"fast"`, string(got))
	}
	// After the first timeout the slow endpoint is tried last, so it is not
	// asked again for every other call (round robin would ask it 10 times).
	require.LessOrEqual(t, slowCalls.Load(), int32(4))
}

func TestClientSurvivesEndpointDeath(t *testing.T) {
	c := newTestCodec(t, nil)
	ctxA, stopA := context.WithCancel(context.Background())
	a, err := NewReplyLoop(ReplyConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Logger: quietLog,
		Handlers: map[string]Handler{"echo": func(context.Context, *Request) (json.RawMessage, error) { return json.RawMessage(`"a"`), nil }}})
	require.NoError(t, err)
	errA := make(chan error, 1)
	go func() { errA <- a.Run(ctxA) }()
	<-a.Ready()
	_, b := startReply(t, c, map[string]Handler{"echo": func(context.Context, *Request) (json.RawMessage, error) {
		return json.RawMessage(`"b"`), nil
	}})
	cl := newClient(t, c, []string{a.Endpoints()[0], b}, func(cfg *ClientConfig) { cfg.TryTimeout = 100 * time.Millisecond })
	// An endpoint found not yet connected is tried last for 20ms, so the
	// spread begins once both are connected.
	seen := map[string]bool{}
	for end := time.Now().Add(5 * time.Second); !(seen[`"a"`] && seen[`"b"`]) && time.Now().Before(end); {
		got, err := cl.Call(context.Background(), "echo", nil)
		require.NoError(t, err)
		seen[string(got)] = true
	}
	require.True(t, seen[`"a"`] && seen[`"b"`], "calls spread over both endpoints: %v", seen)
	stopA()
	require.NoError(t, <-errA)
	for i := 0; i < 20; i++ {
		got, err := cl.Call(context.Background(), "echo", nil)
		require.NoError(t, err, "call %d after endpoint a died", i)
		require.Equal(t, `"b"`, string(got))
	}
}

func TestClientWaitsForFirstConnection(t *testing.T) {
	// The endpoint comes up after the call started: the call waits for the
	// connection instead of failing.
	c := newTestCodec(t, nil)
	ep := deadEndpoint(t)
	cl := newClient(t, c, []string{ep})
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := cl.Call(ctx, "echo", nil)
		res <- err
	}()
	l, err := NewReplyLoop(ReplyConfig{Bind: []string{ep}, Codec: c, Logger: quietLog, Handlers: map[string]Handler{"echo": echoHandler}})
	require.NoError(t, err)
	start(t, l)
	require.NoError(t, <-res)
}

func TestClientTimeouts(t *testing.T) {
	c := newTestCodec(t, nil)
	stuck := make(chan struct{})
	defer close(stuck)
	_, ep := startReply(t, c, map[string]Handler{"echo": func(ctx context.Context, _ *Request) (json.RawMessage, error) {
		select {
		case <-stuck:
		case <-ctx.Done():
		}
		return nil, nil
	}})
	cl := newClient(t, c, []string{ep}, func(cfg *ClientConfig) { cfg.Timeout = 200 * time.Millisecond; cfg.TryTimeout = 50 * time.Millisecond })
	// No deadline on ctx: the client's Timeout applies.
	_, err := cl.Call(context.Background(), "echo", nil)
	require.ErrorIs(t, err, ErrTimeout)
	// A ctx deadline applies.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = cl.Call(ctx, "echo", nil)
	require.ErrorIs(t, err, ErrTimeout)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	// A cancelled ctx returns at once.
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	_, err = cl.Call(ctx2, "echo", nil)
	require.ErrorIs(t, err, context.Canceled)
	// Nothing listening at all: ErrTimeout, not a hang.
	cl2 := newClient(t, c, []string{deadEndpoint(t)}, func(cfg *ClientConfig) { cfg.Timeout = 100 * time.Millisecond })
	_, err = cl2.Call(context.Background(), "echo", nil)
	require.ErrorIs(t, err, ErrTimeout)
}

func TestClientClose(t *testing.T) {
	c := newTestCodec(t, nil)
	stuck := make(chan struct{})
	defer close(stuck)
	var started atomic.Int32
	_, ep := startReply(t, c, map[string]Handler{
		"echo": echoHandler,
		"stuck": func(ctx context.Context, _ *Request) (json.RawMessage, error) {
			started.Add(1)
			select {
			case <-stuck:
			case <-ctx.Done():
			}
			return nil, nil
		}})
	cl, err := NewClient(ClientConfig{Endpoints: []string{ep}, Codec: c, Logger: quietLog})
	require.NoError(t, err)
	_, err = cl.Call(context.Background(), "echo", nil)
	require.NoError(t, err)
	res := make(chan error, 1)
	go func() {
		_, err := cl.Call(context.Background(), "stuck", nil)
		res <- err
	}()
	require.Eventually(t, func() bool { return started.Load() == 1 }, 5*time.Second, time.Millisecond)
	require.NoError(t, cl.Close())
	require.ErrorIs(t, <-res, ErrClosed)
	_, err = cl.Call(context.Background(), "echo", nil)
	require.ErrorIs(t, err, ErrClosed)
	require.NoError(t, cl.Close(), "second Close")

	// A client closed before its first call never opened anything.
	cl2, err := NewClient(ClientConfig{Endpoints: []string{ep}, Codec: c})
	require.NoError(t, err)
	require.NoError(t, cl2.Close())
	_, err = cl2.Call(context.Background(), "echo", nil)
	require.ErrorIs(t, err, ErrClosed)
}

func TestClientRejectsForgedReplies(t *testing.T) {
	// A server signing with a key the client does not have is never
	// believed: the call times out.
	good := newTestCodec(t, nil)
	other := newTestCodec(t, nil, testKey2)
	_, ep := startReply(t, other, nil)
	cl := newClient(t, good, []string{ep}, func(cfg *ClientConfig) { cfg.Timeout = 200 * time.Millisecond })
	_, err := cl.Call(context.Background(), "echo", nil)
	require.ErrorIs(t, err, ErrTimeout)
}

// TestClientDropsForgedRepliesAndCounts has a raw ROUTER answer each
// request three times: signed with a key the client does not hold, with
// bad framing, then properly. The call gets the proper answer; Stats
// counts the two refused replies, and the rest of the client's traffic.
func TestClientDropsForgedRepliesAndCounts(t *testing.T) {
	good := newTestCodec(t, nil)
	forger := newTestCodec(t, nil, testKey2)
	router, err := zmq.NewSocket(zmq.ROUTER)
	require.NoError(t, err)
	require.NoError(t, router.SetLinger(0))
	require.NoError(t, router.SetRcvtimeo(10*time.Second))
	require.NoError(t, router.Bind("tcp://127.0.0.1:*"))
	ep, err := router.GetLastEndpoint()
	require.NoError(t, err)
	served := make(chan error, 1)
	// The socket is closed once the calls have their replies: closing it
	// right after the last send (linger 0) could drop that reply.
	defer router.Close()
	go func() {
		for n := 0; n < 3; n++ {
			f, err := router.RecvMessageBytes(0)
			if err != nil {
				served <- err
				return
			}
			req, err := good.Open(f[2:])
			if err != nil {
				served <- err
				return
			}
			reply := Message{Type: req.Type, ReplyTo: req.ID, Body: req.Body}
			forged, err1 := forger.Seal(reply)
			proper, err2 := good.Seal(reply)
			if err := errors.Join(err1, err2); err != nil {
				served <- err
				return
			}
			for _, m := range [][][]byte{
				append([][]byte{f[0], {}}, forged...),
				{f[0], {}, proper[0], proper[1]}, // a frame short
				// Over MaxSize (4096) in all, within the receive buffer,
				// then over the buffer too: each frame under libzmq's bound.
				{f[0], {}, proper[0], bytes.Repeat([]byte(" "), 3000), bytes.Repeat([]byte("m"), 3000)},
				{f[0], {}, bytes.Repeat([]byte("k"), 4000), bytes.Repeat([]byte(" "), 4000), bytes.Repeat([]byte("m"), 4000)},
				append([][]byte{f[0], {}}, proper...),
			} {
				if _, err := router.SendMessage(m); err != nil {
					served <- err
					return
				}
			}
		}
		served <- nil
	}()
	dead := deadEndpoint(t)
	cl := newClient(t, good, []string{ep, dead})
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		got, err := cl.Call(ctx, "echo", json.RawMessage(strconv.Itoa(i)))
		cancel()
		require.NoError(t, err, "%+v", cl.Stats())
		require.Equal(t, strconv.Itoa(i), string(got))
	}
	require.NoError(t, <-served)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = cl.Call(ctx, "echo", nil) // cancelled before it begins: not counted
	require.ErrorIs(t, err, context.Canceled)

	st := cl.Stats()
	require.Equal(t, uint64(3), st.Calls)
	require.Zero(t, st.Failed)
	require.Zero(t, st.RemoteErrors)
	require.Len(t, st.Endpoints, 2)
	live, gone := st.Endpoints[0], st.Endpoints[1]
	require.Equal(t, ep, live.Endpoint)
	require.Equal(t, uint64(3), live.Sent)
	require.Equal(t, uint64(3), live.Replies)
	require.Equal(t, uint64(12), live.Dropped, "a forged, a malformed and two over-size replies per call")
	require.Equal(t, uint64(6), live.TooLarge, "two over-size replies per call")
	require.False(t, live.Suspect)
	require.Equal(t, dead, gone.Endpoint)
	require.Zero(t, gone.Sent+gone.Replies)
	require.GreaterOrEqual(t, gone.Skipped, uint64(1), "the first call's turn fell on it")
}

func TestClientStatsCountFailuresAndRemoteErrors(t *testing.T) {
	c := newTestCodec(t, nil)
	stuck := make(chan struct{})
	defer close(stuck)
	handlers := map[string]Handler{
		"echo": echoHandler,
		"fail": func(context.Context, *Request) (json.RawMessage, error) { return nil, Errorf("nope", "no") },
		"stuck": func(ctx context.Context, _ *Request) (json.RawMessage, error) {
			select {
			case <-stuck:
			case <-ctx.Done():
			}
			return nil, nil
		},
	}
	_, a := startReply(t, c, handlers)
	_, b := startReply(t, c, handlers)
	// Attempts long enough that a loaded machine answers the first two
	// calls within one (a late answer would clear an endpoint's
	// suspicion).
	cl := newClient(t, c, []string{a, b}, func(cfg *ClientConfig) { cfg.TryTimeout = 250 * time.Millisecond })
	_, err := cl.Call(context.Background(), "echo", nil)
	require.NoError(t, err)
	_, err = cl.Call(context.Background(), "fail", nil)
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	ctx, cancel := context.WithTimeout(context.Background(), 1100*time.Millisecond)
	defer cancel()
	_, err = cl.Call(ctx, "stuck", nil)
	require.ErrorIs(t, err, ErrTimeout)

	st := cl.Stats()
	require.Equal(t, uint64(3), st.Calls)
	require.Equal(t, uint64(1), st.Failed)
	require.Equal(t, uint64(1), st.RemoteErrors)
	ea, eb := st.Endpoints[0], st.Endpoints[1]
	// The stuck call went to each endpoint in turn every TryTimeout (4
	// attempts in 1.1 s), so there are more attempts than calls, and
	// both endpoints are suspect: each left an attempt unanswered.
	require.GreaterOrEqual(t, ea.Sent+eb.Sent, uint64(5))
	require.Equal(t, uint64(2), ea.Replies+eb.Replies)
	require.True(t, ea.Suspect && eb.Suspect, "%+v", st)
}

func TestClientConfigErrors(t *testing.T) {
	c := newTestCodec(t, nil)
	for name, cfg := range map[string]ClientConfig{
		"no codec":         {Endpoints: []string{"tcp://127.0.0.1:1"}},
		"no endpoints":     {Codec: c},
		"bad endpoint":     {Codec: c, Endpoints: []string{"localhost"}},
		"negative timeout": {Codec: c, Endpoints: []string{"tcp://127.0.0.1:1"}, Timeout: -1},
	} {
		_, err := NewClient(cfg)
		require.Error(t, err, name)
	}
	// A bad type is an error from Call, not a panic.
	_, ep := startReply(t, c, nil)
	cl := newClient(t, c, []string{ep})
	_, err := cl.Call(context.Background(), "bad type", nil)
	require.ErrorIs(t, err, ErrMalformed)
	_, err = cl.Call(context.Background(), "echo", json.RawMessage(`{`))
	require.ErrorIs(t, err, ErrMalformed)
}
