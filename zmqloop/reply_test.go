package zmqloop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/require"
)

func TestReplyLoopEcho(t *testing.T) {
	c := newTestCodec(t, nil)
	type sum struct{ A, B int }
	_, ep := startReply(t, c, map[string]Handler{
		"echo": echoHandler,
		"add":  HandleJSON(func(_ context.Context, s sum) (int, error) { return s.A + s.B, nil }),
	})
	cl := newClient(t, c, []string{ep})
	ctx := context.Background()

	got, err := cl.Call(ctx, "echo", json.RawMessage(`{"hello":"world"}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"hello":"world"}`, string(got))

	n, err := CallJSON[int](ctx, cl, "add", sum{A: 2, B: 40})
	require.NoError(t, err)
	require.Equal(t, 42, n)

	_, err = CallJSON[int](ctx, cl, "add", "not an object")
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, CodeBadRequest, re.Code)
}

func TestReplyLoopHandlerErrors(t *testing.T) {
	c := newTestCodec(t, nil)
	_, ep := startReply(t, c, map[string]Handler{
		"busy": func(context.Context, *Request) (json.RawMessage, error) {
			return nil, Errorf("busy", "try again in %ds", 3)
		},
		"wrap": func(context.Context, *Request) (json.RawMessage, error) {
			return nil, fmt.Errorf("ctx: %w", Errorf("gone", "x"))
		},
		"plain": func(context.Context, *Request) (json.RawMessage, error) { return nil, errors.New("disk full") },
		"junk":  func(context.Context, *Request) (json.RawMessage, error) { return json.RawMessage(`{bad`), nil },
	})
	cl := newClient(t, c, []string{ep})
	for typ, want := range map[string]RemoteError{
		"busy":  {Code: "busy", Message: "try again in 3s"},
		"wrap":  {Code: "gone", Message: "x"},
		"plain": {Code: CodeInternal, Message: "disk full"},
	} {
		_, err := cl.Call(context.Background(), typ, nil)
		var re *RemoteError
		require.ErrorAs(t, err, &re, typ)
		require.Equal(t, want, *re, typ)
	}
	_, err := cl.Call(context.Background(), "junk", nil)
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, CodeInternal, re.Code)
	require.Contains(t, re.Message, "not one JSON value")
}

// TestReplyLoopBadInput sends every kind of bad input the issue lists from
// a raw socket and checks each is refused for the right reason while the
// loop keeps answering a well-behaved client.
func TestReplyLoopBadInput(t *testing.T) {
	c := newTestCodec(t, nil)
	var rej rejections
	release := make(chan struct{})
	var slowStarted, slowDone atomic.Int32
	l, ep := startReply(t, c, map[string]Handler{
		"echo":  echoHandler,
		"panic": func(context.Context, *Request) (json.RawMessage, error) { panic("boom") },
		"slow": func(ctx context.Context, _ *Request) (json.RawMessage, error) {
			slowStarted.Add(1)
			defer slowDone.Add(1)
			select {
			case <-release:
			case <-ctx.Done():
			}
			return json.RawMessage(`"late"`), nil
		},
	}, func(cfg *ReplyConfig) { cfg.Rejected = rej.hook })
	cl := newClient(t, c, []string{ep})
	stillAnswers := func() {
		t.Helper()
		got, err := cl.Call(context.Background(), "echo", json.RawMessage(`"ok"`))
		require.NoError(t, err)
		require.Equal(t, `"ok"`, string(got))
	}
	expectRejected := func(want error) {
		t.Helper()
		require.Eventually(t, func() bool {
			errs := rej.all()
			return len(errs) > 0 && errors.Is(errs[len(errs)-1], want)
		}, 5*time.Second, time.Millisecond, "want rejection %v, have %v", want, rej.all())
		stillAnswers()
	}
	raw := rawSocket(t, zmq.DEALER, ep)
	seal := func(typ string) [][]byte {
		f, err := c.Seal(Message{Type: typ, Body: json.RawMessage(`1`)})
		require.NoError(t, err)
		return f
	}
	send := func(frames [][]byte) { sendRaw(t, raw, append([][]byte{{}}, frames...)...) }
	flip := func(f [][]byte, i, at int) [][]byte {
		g := [][]byte{bytes.Clone(f[0]), bytes.Clone(f[1]), bytes.Clone(f[2])}
		g[i][at] ^= 0x04
		return g
	}

	t.Run("unknown key id", func(t *testing.T) {
		f := seal("echo")
		f[0] = []byte("nosuchkey")
		send(f)
		expectRejected(ErrUnknownKey)
	})
	t.Run("flipped bit in payload", func(t *testing.T) {
		send(flip(seal("echo"), 1, 5))
		expectRejected(ErrBadMAC)
	})
	t.Run("flipped bit in MAC", func(t *testing.T) {
		send(flip(seal("echo"), 2, 30))
		expectRejected(ErrBadMAC)
	})
	t.Run("replayed message", func(t *testing.T) {
		f := seal("echo")
		send(f)
		first := recvRaw(t, raw, 5*time.Second)
		require.Len(t, first, 4)
		send(f)
		reply := recvRaw(t, raw, 5*time.Second)
		m, err := c.Open(reply[1:])
		require.NoError(t, err)
		require.NotNil(t, m.Error, "a replay gets an error reply")
		require.Equal(t, CodeRejected, m.Error.Code)
		expectRejected(ErrReplay)
	})
	t.Run("timestamp outside the window", func(t *testing.T) {
		f, err := c.Seal(Message{Type: "echo", Time: time.Now().Add(-time.Hour)})
		require.NoError(t, err)
		send(f)
		reply := recvRaw(t, raw, 5*time.Second)
		m, err := c.Open(reply[1:])
		require.NoError(t, err)
		require.NotNil(t, m.Error)
		require.Equal(t, CodeRejected, m.Error.Code)
		expectRejected(ErrStale)
	})
	t.Run("oversized frame", func(t *testing.T) {
		// libzmq (ZMQ_MAXMSGSIZE) drops the connection: the loop never sees it.
		big := rawSocket(t, zmq.DEALER, ep)
		f := seal("echo")
		before := l.Stats()
		sendRaw(t, big, []byte{}, f[0], bytes.Repeat([]byte("x"), 8192), f[2])
		stillAnswers()
		// Not observable: libzmq reports it as any other disconnect.
		require.Equal(t, before.TooLarge, l.Stats().TooLarge)
	})
	t.Run("oversized message", func(t *testing.T) {
		// Every frame under the per-frame bound, the sum over it.
		before := l.Stats()
		f := seal("echo")
		send([][]byte{f[0], bytes.Repeat([]byte(" "), 4000), bytes.Repeat([]byte("m"), 4000)})
		expectRejected(ErrTooLarge)
		require.Equal(t, before.TooLarge+1, l.Stats().TooLarge)
	})
	t.Run("too few frames", func(t *testing.T) {
		f := seal("echo")
		send(f[:2])
		expectRejected(ErrFrames)
	})
	t.Run("unsigned data frame", func(t *testing.T) {
		send(append(seal("echo"), []byte("extra")))
		expectRejected(ErrBadMAC)
	})
	t.Run("too many frames", func(t *testing.T) {
		send(append(seal("echo"), []byte("data"), []byte("extra")))
		expectRejected(ErrFrames)
	})
	t.Run("no delimiter, one frame", func(t *testing.T) {
		sendRaw(t, raw, []byte("x"))
		expectRejected(ErrFrames)
	})
	t.Run("far too many frames", func(t *testing.T) {
		frames := make([][]byte, 40)
		for i := range frames {
			frames[i] = []byte("x")
		}
		sendRaw(t, raw, frames...)
		expectRejected(ErrFrames)
	})
	t.Run("invalid JSON", func(t *testing.T) {
		send(resign(testKey, [][]byte{nil, []byte(`{"type":"echo","id":`), nil}))
		expectRejected(ErrMalformed)
	})
	t.Run("unknown message type", func(t *testing.T) {
		_, err := cl.Call(context.Background(), "nosuchtype", nil)
		var re *RemoteError
		require.ErrorAs(t, err, &re)
		require.Equal(t, CodeUnknownType, re.Code)
		stillAnswers()
	})
	t.Run("handler panics", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			_, err := cl.Call(context.Background(), "panic", nil)
			var re *RemoteError
			require.ErrorAs(t, err, &re)
			require.Equal(t, CodePanic, re.Code)
			require.Contains(t, re.Message, "boom")
		}
		require.EqualValues(t, 3, l.Stats().Panics)
		stillAnswers()
	})
	t.Run("caller disconnects before its reply", func(t *testing.T) {
		gone, err := zmq.NewSocket(zmq.DEALER)
		require.NoError(t, err)
		require.NoError(t, gone.SetLinger(0))
		require.NoError(t, gone.Connect(ep))
		f := seal("slow")
		sendRaw(t, gone, append([][]byte{{}}, f...)...)
		require.Eventually(t, func() bool { return slowStarted.Load() == 1 }, 5*time.Second, time.Millisecond)
		require.NoError(t, gone.Close())
		close(release)
		require.Eventually(t, func() bool { return slowDone.Load() == 1 }, 5*time.Second, time.Millisecond)
		stillAnswers()
	})
	require.GreaterOrEqual(t, l.Stats().Rejected, uint64(12))
}

func TestReplyLoopBoundsConcurrency(t *testing.T) {
	c := newTestCodec(t, nil)
	var running, peak atomic.Int32
	gate := make(chan struct{})
	_, ep := startReply(t, c, map[string]Handler{
		"work": func(ctx context.Context, _ *Request) (json.RawMessage, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			<-gate
			return json.RawMessage(`true`), nil
		},
	}, func(cfg *ReplyConfig) { cfg.MaxInFlight = 3 })
	cl := newClient(t, c, []string{ep}, func(cfg *ClientConfig) { cfg.TryTimeout = time.Minute })
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := cl.Call(context.Background(), "work", nil)
			errs <- err
		}()
	}
	require.Eventually(t, func() bool { return running.Load() == 3 }, 5*time.Second, time.Millisecond)
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.EqualValues(t, 3, peak.Load())
}

func TestReplyLoopConfigErrors(t *testing.T) {
	c := newTestCodec(t, nil)
	h := map[string]Handler{"echo": echoHandler}
	for name, cfg := range map[string]ReplyConfig{
		"no codec":       {Bind: []string{"tcp://127.0.0.1:*"}, Handlers: h},
		"no endpoint":    {Codec: c, Handlers: h},
		"no handlers":    {Codec: c, Bind: []string{"tcp://127.0.0.1:*"}},
		"bad endpoint":   {Codec: c, Bind: []string{"127.0.0.1:5"}, Handlers: h},
		"bad type":       {Codec: c, Bind: []string{"tcp://127.0.0.1:*"}, Handlers: map[string]Handler{"a b": echoHandler}},
		"nil handler":    {Codec: c, Bind: []string{"tcp://127.0.0.1:*"}, Handlers: map[string]Handler{"a": nil}},
		"negative bound": {Codec: c, Bind: []string{"tcp://127.0.0.1:*"}, Handlers: h, MaxInFlight: -1},
		"bad curve key":  {Codec: c, Bind: []string{"tcp://127.0.0.1:*"}, Handlers: h, Curve: &Curve{KeyPair: CurveKeyPair{Public: "x", Secret: "y"}}},
	} {
		_, err := NewReplyLoop(cfg)
		require.Error(t, err, name)
	}
	// A bind that fails is Run's error, not a panic or a hang.
	l, err := NewReplyLoop(ReplyConfig{Codec: c, Bind: []string{"tcp://256.0.0.1:1"}, Handlers: h})
	require.NoError(t, err)
	require.Error(t, l.Run(context.Background()))
}
