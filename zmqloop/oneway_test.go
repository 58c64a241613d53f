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

// collector records what a one-way handler received.
type collector struct {
	mu   sync.Mutex
	msgs []string
}

func (c *collector) handle(_ context.Context, r *Request) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, r.Type+":"+string(r.Body))
	return nil
}

func (c *collector) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.msgs...)
}

func TestPushPull(t *testing.T) {
	c := newTestCodec(t, nil)
	var got collector
	l, err := NewPullLoop(PullConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Logger: quietLog,
		Handlers: map[string]MessageHandler{"stat": got.handle}})
	require.NoError(t, err)
	ep := start(t, l)
	p, err := NewPusher(SenderConfig{Connect: []string{ep}, Codec: c, Logger: quietLog})
	require.NoError(t, err)
	defer p.Close()
	want := make([]string, 1000)
	for i := range want {
		want[i] = "stat:" + strconv.Itoa(i)
		require.NoError(t, p.Push(context.Background(), "stat", json.RawMessage(strconv.Itoa(i))))
	}
	require.Eventually(t, func() bool { return len(got.list()) == len(want) }, 10*time.Second, time.Millisecond)
	require.Equal(t, want, got.list(), "every message, in order")
	require.NoError(t, p.Close())
	require.ErrorIs(t, p.Push(context.Background(), "stat", nil), ErrClosed)
}

func TestPusherFlushesOnClose(t *testing.T) {
	// Messages pushed before any receiver exists are delivered once it
	// binds, as long as that happens within FlushTimeout of Close.
	c := newTestCodec(t, nil)
	ep := deadEndpoint(t)
	p, err := NewPusher(SenderConfig{Connect: []string{ep}, Codec: c, Logger: quietLog, FlushTimeout: 20 * time.Second})
	require.NoError(t, err)
	for i := 0; i < 10; i++ {
		require.NoError(t, p.Push(context.Background(), "stat", json.RawMessage(strconv.Itoa(i))))
	}
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	var got collector
	l, err := NewPullLoop(PullConfig{Bind: []string{ep}, Codec: c, Logger: quietLog,
		Handlers: map[string]MessageHandler{"stat": got.handle}})
	require.NoError(t, err)
	start(t, l)
	require.NoError(t, <-closed)
	require.Eventually(t, func() bool { return len(got.list()) == 10 }, 10*time.Second, time.Millisecond)
}

func TestPullLoopBadInput(t *testing.T) {
	c := newTestCodec(t, nil)
	var got collector
	var rej rejections
	var panics atomic.Int32
	l, err := NewPullLoop(PullConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Logger: quietLog, Rejected: rej.hook,
		Handlers: map[string]MessageHandler{
			"stat":  got.handle,
			"panic": func(context.Context, *Request) error { panics.Add(1); panic("boom") },
			"fail":  func(context.Context, *Request) error { return errors.New("sink down") },
		}})
	require.NoError(t, err)
	ep := start(t, l)
	raw := rawSocket(t, zmq.PUSH, ep)
	n := 0
	stillWorks := func() {
		t.Helper()
		n++
		f, err := c.Seal(Message{Type: "stat", Body: json.RawMessage(strconv.Itoa(n))})
		require.NoError(t, err)
		sendRaw(t, raw, f...)
		require.Eventually(t, func() bool {
			msgs := got.list()
			return len(msgs) > 0 && msgs[len(msgs)-1] == "stat:"+strconv.Itoa(n)
		}, 5*time.Second, time.Millisecond)
	}
	expect := func(want error) {
		t.Helper()
		require.Eventually(t, func() bool {
			errs := rej.all()
			return len(errs) > 0 && errors.Is(errs[len(errs)-1], want)
		}, 5*time.Second, time.Millisecond, "want %v, have %v", want, rej.all())
		stillWorks()
	}
	seal := func(typ string, at time.Time) [][]byte {
		f, err := c.Seal(Message{Type: typ, Time: at})
		require.NoError(t, err)
		return f
	}
	stillWorks()

	f := seal("stat", time.Time{})
	f[0] = []byte("k9")
	sendRaw(t, raw, f...)
	expect(ErrUnknownKey)

	f = seal("stat", time.Time{})
	f[1] = bytes.Clone(f[1])
	f[1][3] ^= 1
	sendRaw(t, raw, f...)
	expect(ErrBadMAC)

	f = seal("stat", time.Time{})
	f[2] = bytes.Clone(f[2])
	f[2][0] ^= 0x80
	sendRaw(t, raw, f...)
	expect(ErrBadMAC)

	f = seal("stat", time.Time{})
	sendRaw(t, raw, f...)
	sendRaw(t, raw, f...)
	expect(ErrReplay)

	sendRaw(t, raw, seal("stat", time.Now().Add(-time.Minute))...)
	expect(ErrStale)

	sendRaw(t, raw, f[0], bytes.Repeat([]byte(" "), 3000), bytes.Repeat([]byte("m"), 3000))
	expect(ErrTooLarge)

	sendRaw(t, raw, f[:2]...)
	expect(ErrFrames)
	// A fourth frame is a data frame the MAC must cover; a fifth is one
	// too many.
	sendRaw(t, raw, append(seal("stat", time.Time{}), []byte("x"))...)
	expect(ErrBadMAC)
	sendRaw(t, raw, append(seal("stat", time.Time{}), []byte("x"), []byte("y"))...)
	expect(ErrFrames)

	sendRaw(t, raw, resign(testKey, [][]byte{nil, []byte(`{"type":`), nil})...)
	expect(ErrMalformed)

	sendRaw(t, raw, seal("nosuchtype", time.Time{})...)
	require.Eventually(t, func() bool {
		errs := rej.all()
		return len(errs) > 0 && bytes.Contains([]byte(errs[len(errs)-1].Error()), []byte("no handler"))
	}, 5*time.Second, time.Millisecond)
	stillWorks()

	// Oversized frame: libzmq drops the connection; a new one works.
	big := rawSocket(t, zmq.PUSH, ep)
	sendRaw(t, big, f[0], bytes.Repeat([]byte("x"), 8192), f[2])
	stillWorks()

	sendRaw(t, raw, seal("panic", time.Time{})...)
	require.Eventually(t, func() bool { return panics.Load() == 1 }, 5*time.Second, time.Millisecond)
	stillWorks()
	sendRaw(t, raw, seal("fail", time.Time{})...)
	stillWorks()
	require.EqualValues(t, 1, l.Stats().Panics)
}

func TestPubSub(t *testing.T) {
	c := newTestCodec(t, nil)
	var got collector
	var rej rejections
	l, err := NewSubLoop(SubConfig{Topics: []string{"hb."}, PullConfig: PullConfig{
		Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Logger: quietLog, Rejected: rej.hook,
		Handlers: map[string]MessageHandler{"hb.node1": got.handle, "other": got.handle}}})
	require.NoError(t, err)
	ep := start(t, l)
	pub, err := NewPublisher(SenderConfig{Connect: []string{ep}, Codec: c, Logger: quietLog})
	require.NoError(t, err)
	defer pub.Close()
	// PUB drops messages until the subscription has propagated: publish
	// until one arrives.
	i := 0
	require.Eventually(t, func() bool {
		i++
		require.NoError(t, pub.Publish(context.Background(), "other", json.RawMessage(`0`)))
		require.NoError(t, pub.Publish(context.Background(), "hb.node1", json.RawMessage(strconv.Itoa(i))))
		return len(got.list()) > 0
	}, 10*time.Second, 5*time.Millisecond)
	for _, m := range got.list() {
		require.Regexp(t, `^hb\.node1:\d+$`, m, "only subscribed topics arrive")
	}

	// A topic frame that does not match the signed type is refused.
	raw := rawSocket(t, zmq.PUB, ep)
	f, err := c.Seal(Message{Type: "hb.node2"})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		sendRaw(t, raw, append([][]byte{[]byte("hb.node1")}, f...)...)
		errs := rej.all()
		return len(errs) > 0 && errors.Is(errs[len(errs)-1], ErrMalformed)
	}, 10*time.Second, 5*time.Millisecond)
	n := len(got.list())
	require.NoError(t, pub.Publish(context.Background(), "hb.node1", json.RawMessage(`"after"`)))
	require.Eventually(t, func() bool { return len(got.list()) > n }, 5*time.Second, time.Millisecond)
}

func TestOneWayConfigErrors(t *testing.T) {
	c := newTestCodec(t, nil)
	h := map[string]MessageHandler{"x": func(context.Context, *Request) error { return nil }}
	for name, cfg := range map[string]PullConfig{
		"no codec":    {Bind: []string{"tcp://127.0.0.1:*"}, Handlers: h},
		"no endpoint": {Codec: c, Handlers: h},
		"no handlers": {Codec: c, Bind: []string{"tcp://127.0.0.1:*"}},
		"bad type":    {Codec: c, Bind: []string{"tcp://127.0.0.1:*"}, Handlers: map[string]MessageHandler{"": h["x"]}},
	} {
		_, err := NewPullLoop(cfg)
		require.Error(t, err, name)
		_, err = NewSubLoop(SubConfig{PullConfig: cfg})
		require.Error(t, err, name)
	}
	for name, cfg := range map[string]SenderConfig{
		"no codec":    {Connect: []string{"tcp://127.0.0.1:1"}},
		"no endpoint": {Codec: c},
		"bad bind":    {Codec: c, Bind: []string{"tcp://256.1.1.1:1"}},
	} {
		_, err := NewPusher(cfg)
		require.Error(t, err, name)
		_, err = NewPublisher(cfg)
		require.Error(t, err, name)
	}
	p, err := NewPusher(SenderConfig{Codec: c, Connect: []string{"tcp://127.0.0.1:1"}, FlushTimeout: time.Millisecond})
	require.NoError(t, err)
	require.ErrorIs(t, p.Push(context.Background(), "bad type", nil), ErrMalformed)
	require.NoError(t, p.Close())
	_ = fmt.Sprint
}
