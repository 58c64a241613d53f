package zmqloop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/require"
)

// TestPusherCoalescesQueued queues messages while no receiver exists, then
// reads what the Pusher sends with a raw PULL socket. The first messages
// went into libzmq's pipe one by one (up to its high-water mark); the
// backlog queued behind them arrives as signed batches of at most
// MaxBatchItems items; all in order, each item keeping its own type, id and
// timestamp. A message pushed once the queue has drained goes out alone.
func TestPusherCoalescesQueued(t *testing.T) {
	c := newTestCodec(t, nil)
	ep := deadEndpoint(t)
	p, err := NewPusher(SenderConfig{Connect: []string{ep}, Codec: c, Logger: quietLog})
	require.NoError(t, err)
	defer p.Close()
	const queued = 400
	for i := 0; i < queued; i++ {
		require.NoError(t, p.Push(context.Background(), "stat", json.RawMessage(strconv.Itoa(i))))
	}
	pull, err := zmq.NewSocket(zmq.PULL)
	require.NoError(t, err)
	require.NoError(t, pull.SetLinger(0))
	defer pull.Close()
	require.NoError(t, pull.Bind(ep))

	next, sizes := 0, []int{}
	ids := map[string]bool{}
	for next < queued {
		f := recvRaw(t, pull, 10*time.Second)
		require.LessOrEqual(t, len(f[0])+len(f[1])+len(f[2]), c.MaxSize(), "a batch stays within MaxSize")
		m, err := c.Open(f)
		require.NoError(t, err)
		if m.Type != BatchType {
			// The backlog's last run may be one message, which goes out
			// alone; any other single comes before the batches.
			if next != queued-1 {
				require.Empty(t, sizes, "a single message after a batch")
			}
			require.Equal(t, "stat", m.Type)
			require.Equal(t, strconv.Itoa(next), string(m.Body), "messages in push order")
			next++
			continue
		}
		items, err := parseBatch(m.Body, nil)
		require.NoError(t, err)
		sizes = append(sizes, len(items))
		for _, it := range items {
			require.Equal(t, "stat", string(it.typ))
			require.Equal(t, strconv.Itoa(next), string(it.body), "items in push order")
			require.True(t, it.hasTS, "items keep their own timestamp")
			require.False(t, ids[string(it.id)], "item id %s twice", it.id)
			ids[string(it.id)] = true
			next++
		}
	}
	// How the backlog splits depends on when the socket goroutine took
	// it; with a 4096-byte MaxSize about 50 of these items fill a batch.
	require.GreaterOrEqual(t, len(sizes), 2, "the backlog went out in batches")
	require.Greater(t, slices.Max(sizes), 40, "no batch was filled to MaxSize: %v", sizes)

	require.NoError(t, p.Push(context.Background(), "stat", json.RawMessage(`"alone"`)))
	m, err := c.Open(recvRaw(t, pull, 10*time.Second))
	require.NoError(t, err)
	require.Equal(t, "stat", m.Type, "a message with nothing queued goes out alone")
	require.Equal(t, `"alone"`, string(m.Body))

	st := p.Stats()
	require.Equal(t, SenderStats{Sent: queued + 1, Batches: uint64(len(sizes))}, st)
}

// TestPusherStatsCountDrops pushes to an endpoint where nobody listens:
// libzmq takes messages up to its high-water mark, the rest queue, and a
// Close whose FlushTimeout runs out drops the queued ones, which Stats
// counts.
func TestPusherStatsCountDrops(t *testing.T) {
	c := newTestCodec(t, nil)
	p, err := NewPusher(SenderConfig{Connect: []string{deadEndpoint(t)}, Codec: c, Logger: quietLog, FlushTimeout: 50 * time.Millisecond})
	require.NoError(t, err)
	const pushed = 250
	for i := 0; i < pushed; i++ {
		require.NoError(t, p.Push(context.Background(), "stat", json.RawMessage(strconv.Itoa(i))))
	}
	before := p.Stats()
	require.Equal(t, pushed, int(before.Sent)+before.Queued, "%+v", before)
	require.Positive(t, before.Sent, "libzmq's pipe took some")
	require.Positive(t, before.Queued, "the rest queued")
	require.NoError(t, p.Close())
	after := p.Stats()
	require.Equal(t, before.Sent, after.Sent)
	require.Equal(t, uint64(before.Queued), after.Dropped, "%+v", after)
}

// TestPushPullBatchOrder mixes batched and single messages from one Pusher:
// a backlog queued before the receiver binds, then a burst pushed while it
// drains. The handler sees every message once, in push order, with the
// Request fields a lone message has.
func TestPushPullBatchOrder(t *testing.T) {
	c := newTestCodec(t, nil)
	ep := deadEndpoint(t)
	var mu sync.Mutex
	var got []string
	ids := map[string]bool{}
	l, err := NewPullLoop(PullConfig{Bind: []string{ep}, Codec: c, Logger: quietLog,
		Handlers: map[string]MessageHandler{
			"a": func(_ context.Context, r *Request) error {
				mu.Lock()
				defer mu.Unlock()
				if r.ID == "" || ids[r.ID] || r.KeyID != "k1" || r.Time.IsZero() {
					return fmt.Errorf("bad request fields %+v", r)
				}
				ids[r.ID] = true
				got = append(got, r.Type+":"+string(r.Body))
				return nil
			},
		}})
	require.NoError(t, err)
	p, err := NewPusher(SenderConfig{Connect: []string{ep}, Codec: c, Logger: quietLog})
	require.NoError(t, err)
	defer p.Close()
	var want []string
	push := func(i int) {
		require.NoError(t, p.Push(context.Background(), "a", json.RawMessage(strconv.Itoa(i))))
		want = append(want, "a:"+strconv.Itoa(i))
	}
	for i := 0; i < 200; i++ {
		push(i)
	}
	start(t, l)
	for i := 200; i < 3000; i++ {
		push(i)
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= len(want)
	}, 20*time.Second, time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, want, got, "every message once, in push order")
	st := l.Stats()
	require.EqualValues(t, len(want), st.Received, "each batch item counts as received")
	require.EqualValues(t, len(want), st.Handled)
	require.Zero(t, st.Rejected)
}

// TestPullLoopBatchBadInput sends authentic but bad batches: each is
// refused with a clear error, nothing of it is delivered, and the loop
// keeps serving. Items of a type without a handler, or stale, are refused
// alone and the rest of their batch is delivered.
func TestPullLoopBatchBadInput(t *testing.T) {
	c := newTestCodec(t, nil)
	var got collector
	var rej rejections
	l, err := NewPullLoop(PullConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Logger: quietLog, Rejected: rej.hook,
		Handlers: map[string]MessageHandler{"stat": got.handle}})
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
	expect := func(want error, text string) {
		t.Helper()
		require.Eventually(t, func() bool {
			errs := rej.all()
			return len(errs) > 0 && errors.Is(errs[len(errs)-1], want) && strings.Contains(errs[len(errs)-1].Error(), text)
		}, 5*time.Second, time.Millisecond, "want %v with %q, have %v", want, text, rej.all())
		before := len(got.list())
		stillWorks()
		require.Len(t, got.list(), before+1, "nothing of the refused batch was delivered")
	}
	batch := func(body string) [][]byte {
		f, err := c.Seal(Message{Type: BatchType, Body: json.RawMessage(body)})
		require.NoError(t, err)
		return f
	}
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	stillWorks()

	sendRaw(t, raw, batch(`[{"type":"stat","id":"n1","body":1},{"type":"`+BatchType+`","id":"n2","body":[{"type":"stat","id":"n3"}]}]`)...)
	expect(ErrMalformed, "nested in a batch")

	sendRaw(t, raw, batch(`[{"type":"stat","id":"t1","body":1},{"id":"t2","body":2}]`)...)
	expect(ErrMalformed, "missing type")

	sendRaw(t, raw, batch(`[{"type":"stat","body":2}]`)...)
	expect(ErrMalformed, "missing id")

	sendRaw(t, raw, batch(`[]`)...)
	expect(ErrMalformed, "empty array")

	sendRaw(t, raw, batch(`{"type":"stat","id":"o1"}`)...)
	expect(ErrMalformed, "want a JSON array")

	sendRaw(t, raw, batch(`[{"type":"stat","id":"s1"},"stat"]`)...)
	expect(ErrMalformed, "want object")

	sendRaw(t, raw, batch(`[{"type":"stat","id":"r1","re":"x"}]`)...)
	expect(ErrMalformed, "not allowed in a batch item")

	// Not JSON at all (signed, so only the parser can refuse it).
	sendRaw(t, raw, resign(testKey, [][]byte{nil, []byte(`{"type":"` + BatchType + `","id":"m1","ts":` + ts + `,"body":[{"type":"stat","id":"m2"},]}`), nil})...)
	expect(ErrMalformed, "")

	// Over the size limit: sealed by a codec with a larger MaxSize and the
	// same key; every frame is within the receiver's per-frame limit, the
	// sum is not.
	bigRing, err := NewKeyRing(testKey)
	require.NoError(t, err)
	bigCodec, err := NewCodec(CodecConfig{Keys: bigRing, MaxSize: 1 << 16})
	require.NoError(t, err)
	var f [][]byte
	for pad := 3900; ; pad += 4070 - len(f[1]) {
		f, err = bigCodec.Seal(Message{Type: BatchType, Body: json.RawMessage(`[{"type":"stat","id":"b1","body":"` + strings.Repeat("x", pad) + `"}]`)})
		require.NoError(t, err)
		if len(f[1]) == 4070 {
			break
		}
	}
	require.Less(t, len(f[1]), 4096)
	require.Greater(t, len(f[0])+len(f[1])+len(f[2]), 4096)
	sendRaw(t, raw, f...)
	expect(ErrTooLarge, "")

	// Unknown item type and a stale item: refused alone, the rest delivered.
	before := len(got.list())
	old := strconv.FormatInt(time.Now().Add(-time.Minute).UnixMilli(), 10)
	sendRaw(t, raw, batch(`[{"type":"stat","id":"u1","body":"x1"},{"type":"nosuch","id":"u2"},{"type":"stat","id":"u3","ts":`+old+`,"body":"old"},{"type":"stat","id":"u4","ts":`+ts+`,"body":"x2"}]`)...)
	require.Eventually(t, func() bool { return len(got.list()) == before+2 }, 5*time.Second, time.Millisecond)
	require.Equal(t, []string{`stat:"x1"`, `stat:"x2"`}, got.list()[before:])
	var noHandler, stale bool
	for _, e := range rej.all() {
		noHandler = noHandler || strings.Contains(e.Error(), `no handler for message type "nosuch"`)
		stale = stale || (errors.Is(e, ErrStale) && strings.Contains(e.Error(), `"u3"`))
	}
	require.True(t, noHandler, "unknown item type reported: %v", rej.all())
	require.True(t, stale, "stale item reported: %v", rej.all())
	stillWorks()

	// A replayed batch is refused whole, like any replayed message.
	f = batch(`[{"type":"stat","id":"p1","body":"once"}]`)
	sendRaw(t, raw, f...)
	sendRaw(t, raw, f...)
	expect(ErrReplay, "")
	require.Equal(t, 1, strings.Count(strings.Join(got.list(), "\n"), `"once"`))
}

// TestBatchTypeReserved: no handler may claim BatchType and Push refuses it.
func TestBatchTypeReserved(t *testing.T) {
	c := newTestCodec(t, nil)
	_, err := NewPullLoop(PullConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: c,
		Handlers: map[string]MessageHandler{BatchType: func(context.Context, *Request) error { return nil }}})
	require.ErrorContains(t, err, "reserved")
	p, err := NewPusher(SenderConfig{Connect: []string{deadEndpoint(t)}, Codec: c, Logger: quietLog, FlushTimeout: time.Millisecond})
	require.NoError(t, err)
	defer p.Close()
	require.ErrorIs(t, p.Push(context.Background(), BatchType, nil), ErrMalformed)
}

// TestSubLoopBatch: a SubLoop unpacks a batch published under BatchType
// like a PullLoop does, delivering the items it has handlers for.
func TestSubLoopBatch(t *testing.T) {
	c := newTestCodec(t, nil)
	var got collector
	var rej rejections
	l, err := NewSubLoop(SubConfig{PullConfig: PullConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Logger: quietLog,
		Rejected: rej.hook, Handlers: map[string]MessageHandler{"hb": got.handle}}})
	require.NoError(t, err)
	ep := start(t, l)
	raw := rawSocket(t, zmq.PUB, ep)
	require.Eventually(t, func() bool {
		f, err := c.Seal(Message{Type: BatchType, Body: json.RawMessage(`[{"type":"hb","id":"h1","body":1},{"type":"other","id":"h2"},{"type":"hb","id":"h3","body":2}]`)})
		require.NoError(t, err)
		sendRaw(t, raw, append([][]byte{[]byte(BatchType)}, f...)...)
		return len(got.list()) >= 2
	}, 10*time.Second, 10*time.Millisecond, "a PUB socket drops messages until the subscription arrives")
	msgs := got.list()
	require.Equal(t, []string{"hb:1", "hb:2"}, msgs[:2])
	require.True(t, bytes.Contains([]byte(fmt.Sprint(rej.all())), []byte(`no handler for message type "other"`)))
}

// TestPusherBatchCount: with a MaxSize that is no constraint, a backlog
// goes out in batches of at most MaxBatchItems, and they fill to it.
func TestPusherBatchCount(t *testing.T) {
	ring, err := NewKeyRing(testKey)
	require.NoError(t, err)
	c, err := NewCodec(CodecConfig{Keys: ring})
	require.NoError(t, err)
	ep := deadEndpoint(t)
	p, err := NewPusher(SenderConfig{Connect: []string{ep}, Codec: c, Logger: quietLog})
	require.NoError(t, err)
	defer p.Close()
	const queued = 400
	for i := 0; i < queued; i++ {
		require.NoError(t, p.Push(context.Background(), "stat", json.RawMessage(strconv.Itoa(i))))
	}
	pull, err := zmq.NewSocket(zmq.PULL)
	require.NoError(t, err)
	require.NoError(t, pull.SetLinger(0))
	defer pull.Close()
	require.NoError(t, pull.Bind(ep))
	var sizes []int
	for next := 0; next < queued; {
		m, err := c.Open(recvRaw(t, pull, 10*time.Second))
		require.NoError(t, err)
		if m.Type != BatchType {
			next++
			continue
		}
		items, err := parseBatch(m.Body, nil)
		require.NoError(t, err)
		sizes = append(sizes, len(items))
		next += len(items)
	}
	require.NotEmpty(t, sizes)
	require.Equal(t, MaxBatchItems, slices.Max(sizes), "batch sizes %v", sizes)
}

// TestPusherFlushesBatchesOnClose: a backlog beyond what libzmq's pipe
// holds is still delivered, coalesced, when Close is called before the
// receiver binds (within FlushTimeout), in order.
func TestPusherFlushesBatchesOnClose(t *testing.T) {
	c := newTestCodec(t, nil)
	ep := deadEndpoint(t)
	p, err := NewPusher(SenderConfig{Connect: []string{ep}, Codec: c, Logger: quietLog, FlushTimeout: 20 * time.Second})
	require.NoError(t, err)
	const total = 500
	var want []string
	for i := 0; i < total; i++ {
		require.NoError(t, p.Push(context.Background(), "stat", json.RawMessage(strconv.Itoa(i))))
		want = append(want, "stat:"+strconv.Itoa(i))
	}
	p.mu.Lock()
	queued := p.count
	p.mu.Unlock()
	require.Greater(t, queued, 2*MaxBatchItems, "messages queued behind libzmq's pipe")
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	var got collector
	l, err := NewPullLoop(PullConfig{Bind: []string{ep}, Codec: c, Logger: quietLog,
		Handlers: map[string]MessageHandler{"stat": got.handle}})
	require.NoError(t, err)
	start(t, l)
	require.NoError(t, <-closed)
	require.Eventually(t, func() bool { return len(got.list()) == total }, 10*time.Second, time.Millisecond)
	require.Equal(t, want, got.list())
}
