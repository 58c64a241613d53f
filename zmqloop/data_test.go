package zmqloop

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/require"
)

// allBytes is every byte value, several times: raw data that JSON would
// have to escape and base64 would grow.
var allBytes = bytes.Repeat(func() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}(), 5)

func TestSealOpenData(t *testing.T) {
	c := newTestCodec(t, nil)
	frames, err := c.Seal(Message{Type: "echo", Body: json.RawMessage(`1`), Data: allBytes})
	require.NoError(t, err)
	require.Len(t, frames, 4)
	require.Equal(t, allBytes, frames[3])
	m, err := c.Open(frames)
	require.NoError(t, err)
	require.Equal(t, allBytes, m.Data)
	require.Equal(t, `1`, string(m.Body))
	frames[3][0] ^= 1
	require.Equal(t, byte(0), m.Data[0], "Open copies the data frame")
	frames[3][0] ^= 1

	// Without data (nil or empty), the message is the three frames it was.
	for _, d := range [][]byte{nil, {}} {
		f, err := c.Seal(Message{Type: "echo", ID: "a1", Time: time.UnixMilli(1_800_000_000_000), Body: json.RawMessage(`{"x":1}`), Data: d})
		require.NoError(t, err)
		require.Len(t, f, 3)
		require.Equal(t, "23e2b0d3dc5a6064999e4b854a0a86d7223f7d8b72338789cf473be0f3c80a7e", hexString(f[2]), "the doc's example MAC")
	}
	// The doc's example with data.
	f, err := c.Seal(Message{Type: "echo", ID: "a1", Time: time.UnixMilli(1_800_000_000_000), Body: json.RawMessage(`{"x":1}`), Data: []byte("hi\n")})
	require.NoError(t, err)
	require.Equal(t, "bbc8726c46f8d0651e21b391f799a069a147d33b5a889a0a213ca40bfbbe0b6c", hexString(f[2]))

	// The fast path seals the same MAC.
	msg := Message{Type: "echo", ID: "a1", Time: time.UnixMilli(1_800_000_000_000), Body: json.RawMessage(`{"x":1}`), Data: []byte("hi\n")}
	_, payload, mac, bufp, err := c.sealInto(&msg)
	require.NoError(t, err)
	require.Equal(t, string(f[1]), string(payload))
	require.Equal(t, f[2], mac)
	c.release(bufp)
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, x := range b {
		out = append(out, digits[x>>4], digits[x&15])
	}
	return string(out)
}

// TestOpenDataRefusals: the data frame cannot be altered, stripped, added,
// swapped with the payload or moved to another message, an empty one is
// refused, and it counts against MaxSize.
func TestOpenDataRefusals(t *testing.T) {
	c := newTestCodec(t, nil)
	seal := func(body string, data []byte) [][]byte {
		f, err := c.Seal(Message{Type: "echo", Body: json.RawMessage(body), Data: data})
		require.NoError(t, err)
		return f
	}
	clone := func(f [][]byte) [][]byte {
		out := make([][]byte, len(f))
		for i := range f {
			out[i] = append([]byte(nil), f[i]...)
		}
		return out
	}
	a, b := seal(`"a"`, []byte("data of a")), seal(`"b"`, []byte("data of b"))
	plain := seal(`"p"`, nil)

	tampered := clone(a)
	tampered[3][0] ^= 0x20
	moved := [][]byte{b[0], b[1], b[2], a[3]}
	stripped := a[:3]
	added := [][]byte{plain[0], plain[1], plain[2], []byte("extra")}
	swapped := [][]byte{a[0], a[3], a[2], a[1]}
	// Bytes shifted from the end of the payload to the start of the data
	// keep the concatenation; the lengths in the MAC tell them apart.
	shifted := [][]byte{a[0], a[1][:len(a[1])-1], a[2], append([]byte{a[1][len(a[1])-1]}, a[3]...)}
	for name, f := range map[string][][]byte{"tampered": tampered, "moved": moved, "stripped": stripped,
		"added": added, "swapped": swapped, "shifted": shifted} {
		_, err := c.Open(f)
		require.ErrorIs(t, err, ErrBadMAC, name)
	}
	_, err := c.Open([][]byte{a[0], a[1], a[2], {}})
	require.ErrorIs(t, err, ErrFrames, "empty data frame")
	_, err = c.Open(append(clone(a), []byte("fifth")))
	require.ErrorIs(t, err, ErrFrames, "five frames")

	small, err := NewCodec(CodecConfig{Keys: c.Keys(), MaxSize: 1024})
	require.NoError(t, err)
	_, err = small.Seal(Message{Type: "echo", Data: make([]byte, 1000)})
	require.ErrorIs(t, err, ErrTooLarge, "Seal counts the data")
	m := Message{Type: "echo", Data: make([]byte, 1000)}
	_, _, _, _, err = small.sealInto(&m)
	require.ErrorIs(t, err, ErrTooLarge, "sealInto counts the data")
	big := seal(`1`, make([]byte, 1000))
	_, err = small.Open(big)
	require.ErrorIs(t, err, ErrTooLarge, "Open counts the data")
}

func TestCallDataRoundTrip(t *testing.T) {
	c := newTestCodec(t, nil)
	var rej rejections
	_, ep := startReply(t, c, map[string]Handler{
		"echo": echoHandler,
		"rev": func(_ context.Context, r *Request) (json.RawMessage, error) {
			out := make([]byte, len(r.Data))
			for i, x := range r.Data {
				out[len(out)-1-i] = x
			}
			r.ReplyData = out
			return json.RawMessage(strconv.Itoa(len(r.Data))), nil
		},
		"fail": func(_ context.Context, r *Request) (json.RawMessage, error) {
			r.ReplyData = []byte("not sent")
			return nil, Errorf("nope", "refused")
		},
	}, func(cfg *ReplyConfig) { cfg.Rejected = rej.hook })
	cl := newClient(t, c, []string{ep})
	ctx := context.Background()

	body, data, err := cl.CallData(ctx, "echo", json.RawMessage(`"x"`), allBytes)
	require.NoError(t, err)
	require.Equal(t, `"x"`, string(body))
	require.Equal(t, allBytes, data)

	body, data, err = cl.CallData(ctx, "rev", nil, []byte{0, 1, 2, 0xff})
	require.NoError(t, err)
	require.Equal(t, `4`, string(body))
	require.Equal(t, []byte{0xff, 2, 1, 0}, data)

	// No data: three frames each way, and no data back.
	body, data, err = cl.CallData(ctx, "echo", json.RawMessage(`2`), nil)
	require.NoError(t, err)
	require.Equal(t, `2`, string(body))
	require.Empty(t, data)

	_, data, err = cl.CallData(ctx, "fail", nil, []byte("in"))
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, "nope", re.Code)
	require.Empty(t, data, "an error reply carries no data")

	// A plain REQ-style peer sees a reply with data as 4 frames after the
	// delimiter, and one without as 3.
	raw := rawSocket(t, zmq.DEALER, ep)
	req, err := c.Seal(Message{Type: "echo", Body: json.RawMessage(`3`), Data: []byte("raw")})
	require.NoError(t, err)
	sendRaw(t, raw, append([][]byte{{}}, req...)...)
	got := recvRaw(t, raw, 5*time.Second)
	require.Len(t, got, 5)
	m, err := c.Open(got[1:])
	require.NoError(t, err)
	require.Equal(t, []byte("raw"), m.Data)

	// A tampered data frame and data moved between two requests: refused
	// without an answer (the next good request is answered next).
	other, err := c.Seal(Message{Type: "echo", Body: json.RawMessage(`4`), Data: []byte("other")})
	require.NoError(t, err)
	bad := [][]byte{{}, req[0], req[1], req[2], []byte("rax")}
	moved := [][]byte{{}, other[0], other[1], other[2], req[3]}
	sendRaw(t, raw, bad...)
	sendRaw(t, raw, moved...)
	good, err := c.Seal(Message{Type: "echo", Body: json.RawMessage(`5`)})
	require.NoError(t, err)
	sendRaw(t, raw, append([][]byte{{}}, good...)...)
	got = recvRaw(t, raw, 5*time.Second)
	require.Len(t, got, 4, "the good request's reply, no data")
	m, err = c.Open(got[1:])
	require.NoError(t, err)
	require.Equal(t, `5`, string(m.Body))
	// The refusals are reported by the loop, which may do so after it
	// answered the good request on the per-frame path: wait for both.
	var errs []error
	require.Eventually(t, func() bool { errs = rej.all(); return len(errs) >= 2 }, 5*time.Second, time.Millisecond)
	require.Len(t, errs, 2)
	require.ErrorIs(t, errs[0], ErrBadMAC)
	require.ErrorIs(t, errs[1], ErrBadMAC)
}

// dataCollector records bodies and data of a one-way handler, copying
// both (they alias the loop's buffer).
type dataCollector struct {
	mu   sync.Mutex
	msgs []string
}

func (d *dataCollector) handle(_ context.Context, r *Request) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.msgs = append(d.msgs, string(r.Body)+"|"+string(r.Data))
	return nil
}

func (d *dataCollector) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.msgs...)
}

// TestPushDataRoundTrip: data on the direct path and on the queued path
// (pushed before the receiver exists, so messages coalesce), mixed with
// messages without data, all delivered in order with their data.
func TestPushDataRoundTrip(t *testing.T) {
	c := newTestCodec(t, nil)
	ep := deadEndpoint(t)
	p, err := NewPusher(SenderConfig{Connect: []string{ep}, Codec: c, Logger: quietLog})
	require.NoError(t, err)
	defer p.Close()
	var want []string
	push := func(i int) {
		body := json.RawMessage(strconv.Itoa(i))
		if i%3 == 0 {
			d := append([]byte{0, 0xff, byte(i)}, allBytes[:i%200]...)
			want = append(want, string(body)+"|"+string(d))
			require.NoError(t, p.PushData(context.Background(), "stat", body, d))
		} else {
			want = append(want, string(body)+"|")
			require.NoError(t, p.Push(context.Background(), "stat", body))
		}
	}
	for i := 0; i < 300; i++ { // no peer yet: these queue
		push(i)
	}
	var got dataCollector
	var rej rejections
	l, err := NewPullLoop(PullConfig{Bind: []string{ep}, Codec: c, Logger: quietLog, Rejected: rej.hook,
		Handlers: map[string]MessageHandler{"stat": got.handle}})
	require.NoError(t, err)
	start(t, l)
	require.Eventually(t, func() bool { return len(got.list()) >= 300 }, 10*time.Second, time.Millisecond)
	for i := 300; i < 600; i++ { // connected: mostly direct
		push(i)
	}
	require.Eventually(t, func() bool { return len(got.list()) >= 600 }, 10*time.Second, time.Millisecond)
	require.Equal(t, want, got.list(), "every message, in order, with its data")
	require.Empty(t, rej.all())
	st := p.Stats()
	require.Equal(t, uint64(600), st.Sent)
	require.NotZero(t, st.Batches, "the queued messages without data were batched")

	// Raw input: a tampered data frame, data moved between two messages,
	// and a message over MaxSize only with its data (each frame under it)
	// are refused and counted; a 3-frame message still arrives.
	raw := rawSocket(t, zmq.PUSH, ep)
	a, err := c.Seal(Message{Type: "stat", Body: json.RawMessage(`"a"`), Data: []byte("aaa")})
	require.NoError(t, err)
	b, err := c.Seal(Message{Type: "stat", Body: json.RawMessage(`"b"`), Data: []byte("bbb")})
	require.NoError(t, err)
	sendRaw(t, raw, a[0], a[1], a[2], []byte("aab"))
	sendRaw(t, raw, b[0], b[1], b[2], a[3])
	half := make([]byte, c.MaxSize()/2+1)
	sendRaw(t, raw, a[0], half, a[2], half)
	plain, err := c.Seal(Message{Type: "stat", Body: json.RawMessage(`"plain"`)})
	require.NoError(t, err)
	sendRaw(t, raw, plain...)
	require.Eventually(t, func() bool { return len(got.list()) == 601 }, 10*time.Second, time.Millisecond)
	require.Equal(t, `"plain"|`, got.list()[600])
	errs := rej.all()
	require.Len(t, errs, 3)
	require.ErrorIs(t, errs[0], ErrBadMAC)
	require.ErrorIs(t, errs[1], ErrBadMAC)
	require.ErrorIs(t, errs[2], ErrTooLarge)
	require.Equal(t, uint64(1), l.Stats().TooLarge)

	// A batch with a data frame is refused whole.
	batch, err := c.Seal(Message{Type: BatchType, Body: json.RawMessage(`[{"type":"stat","id":"x1","body":1}]`), Data: []byte("d")})
	require.NoError(t, err)
	sendRaw(t, raw, batch...)
	require.Eventually(t, func() bool { return len(rej.all()) == 4 }, 10*time.Second, time.Millisecond)
	require.ErrorIs(t, rej.all()[3], ErrMalformed)
	require.Len(t, got.list(), 601)
}

func TestPublishDataRoundTrip(t *testing.T) {
	c := newTestCodec(t, nil)
	var got dataCollector
	l, err := NewSubLoop(SubConfig{Topics: []string{"hb"}, PullConfig: PullConfig{
		Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Logger: quietLog,
		Handlers: map[string]MessageHandler{"hb": got.handle}}})
	require.NoError(t, err)
	ep := start(t, l)
	pub, err := NewPublisher(SenderConfig{Connect: []string{ep}, Codec: c, Logger: quietLog})
	require.NoError(t, err)
	defer pub.Close()
	require.Eventually(t, func() bool {
		require.NoError(t, pub.PublishData(context.Background(), "hb", json.RawMessage(`1`), allBytes))
		return len(got.list()) > 0
	}, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, `1|`+string(allBytes), got.list()[0])
}
