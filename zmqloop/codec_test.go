package zmqloop

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var (
	testKey  = Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	testKey2 = Key{ID: "k2", Secret: []byte("fedcba9876543210fedcba9876543210")}
)

// fakeClock is a settable clock for window tests.
type fakeClock struct{ t time.Time }

func (f *fakeClock) Now() time.Time { return f.t }

func newTestCodec(t testing.TB, clock func() time.Time, keys ...Key) *Codec {
	t.Helper()
	if len(keys) == 0 {
		keys = []Key{testKey}
	}
	ring, err := NewKeyRing(keys...)
	require.NoError(t, err)
	c, err := NewCodec(CodecConfig{Keys: ring, Now: clock, MaxSize: 4096})
	require.NoError(t, err)
	return c
}

// resign replaces the MAC frame so that a modified payload verifies.
func resign(k Key, frames [][]byte) [][]byte {
	e := newKeyEntry(k)
	return [][]byte{[]byte(k.ID), frames[1], e.mac(nil, frames[1])}
}

func TestSealOpenRoundTrip(t *testing.T) {
	c := newTestCodec(t, nil)
	frames, err := c.Seal(Message{Type: "echo", Body: json.RawMessage(`{"a":[1,2,"x"]}`)})
	require.NoError(t, err)
	require.Len(t, frames, 3)
	require.Equal(t, "k1", string(frames[0]))
	require.Len(t, frames[2], 32)

	m, err := c.Open(frames)
	require.NoError(t, err)
	require.Equal(t, "echo", m.Type)
	require.NotEmpty(t, m.ID)
	require.Equal(t, "k1", m.KeyID)
	require.JSONEq(t, `{"a":[1,2,"x"]}`, string(m.Body))
	require.WithinDuration(t, time.Now(), m.Time, time.Second)

	// Error replies carry code and message, escapes included.
	frames, err = c.Seal(Message{Type: "echo", ReplyTo: m.ID, Error: &RemoteError{Code: "nope", Message: "bad \"x\"\n\x01 ünï"}})
	require.NoError(t, err)
	r, err := c.Open(frames)
	require.NoError(t, err)
	require.Equal(t, m.ID, r.ReplyTo)
	require.Equal(t, &RemoteError{Code: "nope", Message: "bad \"x\"\n\x01 ünï"}, r.Error)
	require.Empty(t, r.Body)
}

func TestSealRejectsBadMessages(t *testing.T) {
	c := newTestCodec(t, nil)
	for name, m := range map[string]Message{
		"empty type":      {},
		"type with space": {Type: "a b"},
		"bad id":          {Type: "x", ID: "é"},
		"bad reply-to":    {Type: "x", ReplyTo: `"`},
		"bad body":        {Type: "x", Body: json.RawMessage(`{"a":`)},
		"two bodies":      {Type: "x", Body: json.RawMessage(`1 2`)},
		"bad error code":  {Type: "x", Error: &RemoteError{Code: ""}},
		"before 1970":     {Type: "x", Time: time.Unix(-5, 0)},
	} {
		_, err := c.Seal(m)
		require.ErrorIs(t, err, ErrMalformed, name)
	}
	_, err := c.Seal(Message{Type: "x", Body: json.RawMessage(`"` + strings.Repeat("a", 5000) + `"`)})
	require.ErrorIs(t, err, ErrTooLarge)
}

func TestOpenRejectsBadInput(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	c := newTestCodec(t, clock.Now)
	good, err := c.Seal(Message{Type: "echo", Body: json.RawMessage(`{"n":1}`)})
	require.NoError(t, err)
	_, err = c.Open(good)
	require.NoError(t, err)

	clone := func() [][]byte {
		out := make([][]byte, len(good))
		for i, f := range good {
			out[i] = append([]byte(nil), f...)
		}
		return out
	}
	sealAt := func(at time.Time) [][]byte {
		f, err := c.Seal(Message{Type: "echo", Time: at})
		require.NoError(t, err)
		return f
	}
	signed := func(payload string) [][]byte {
		return resign(testKey, [][]byte{nil, []byte(payload), nil})
	}
	cases := []struct {
		name   string
		frames [][]byte
		want   error
	}{
		{"unknown key id", func() [][]byte { f := clone(); f[0] = []byte("k9"); return f }(), ErrUnknownKey},
		{"key id of another ring", resign(testKey2, good), ErrUnknownKey},
		{"empty key id", func() [][]byte { f := clone(); f[0] = nil; return f }(), ErrUnknownKey},
		{"flipped bit in MAC", func() [][]byte { f := clone(); f[2][7] ^= 0x10; return f }(), ErrBadMAC},
		{"truncated MAC", func() [][]byte { f := clone(); f[2] = f[2][:31]; return f }(), ErrBadMAC},
		{"empty MAC", func() [][]byte { f := clone(); f[2] = nil; return f }(), ErrBadMAC},
		{"no frames", nil, ErrFrames},
		{"one frame", good[:1], ErrFrames},
		{"two frames", good[:2], ErrFrames},
		// A fourth frame is a data frame, which the MAC must cover.
		{"unsigned fourth frame", append(clone(), []byte("x")), ErrBadMAC},
		{"empty fourth frame", append(clone(), []byte{}), ErrFrames},
		{"five frames", append(clone(), []byte("x"), []byte("y")), ErrFrames},
		{"oversized", [][]byte{good[0], bytes.Repeat([]byte(" "), 5000), good[2]}, ErrTooLarge},
		{"too old", sealAt(clock.t.Add(-31 * time.Second)), ErrStale},
		{"too new", sealAt(clock.t.Add(31 * time.Second)), ErrStale},
		{"invalid JSON", signed(`{"type":"echo","id":"a","ts":1800000000000`), ErrMalformed},
		{"not an object", signed(`["echo"]`), ErrMalformed},
		{"empty payload", signed(``), ErrMalformed},
		{"missing type", signed(`{"id":"a","ts":1800000000000}`), ErrMalformed},
		{"missing id", signed(`{"type":"x","ts":1800000000000}`), ErrMalformed},
		{"missing ts", signed(`{"type":"x","id":"a"}`), ErrMalformed},
		{"ts not integer", signed(`{"type":"x","id":"a","ts":1.8e12}`), ErrMalformed},
		{"ts negative", signed(`{"type":"x","id":"a","ts":-1}`), ErrMalformed},
		{"ts string", signed(`{"type":"x","id":"a","ts":"1800000000000"}`), ErrMalformed},
		{"ts overflows", signed(`{"type":"x","id":"a","ts":99999999999999999999}`), ErrMalformed},
		{"duplicate type", signed(`{"type":"x","type":"y","id":"a","ts":1800000000000}`), ErrMalformed},
		{"escaped type", signed(`{"type":"\u0078","id":"a","ts":1800000000000}`), ErrMalformed},
		{"type with space", signed(`{"type":"a b","id":"a","ts":1800000000000}`), ErrMalformed},
		{"trailing data", signed(`{"type":"x","id":"a","ts":1800000000000}x`), ErrMalformed},
		{"error without code", signed(`{"type":"x","id":"a","ts":1800000000000,"error":{"message":"m"}}`), ErrMalformed},
		{"error not object", signed(`{"type":"x","id":"a","ts":1800000000000,"error":"boom"}`), ErrMalformed},
		{"bad body", signed(`{"type":"x","id":"a","ts":1800000000000,"body":{"a":tru}}`), ErrMalformed},
		{"control char", signed("{\"type\":\"x\",\"id\":\"a\",\"ts\":1800000000000,\"body\":\"\x01\"}"), ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := c.Open(tc.frames)
			require.ErrorIs(t, err, tc.want)
			require.Nil(t, m)
		})
	}

	// Every single-bit flip in the payload is caught.
	for i := range good[1] {
		for bit := 0; bit < 8; bit++ {
			f := clone()
			f[1][i] ^= 1 << bit
			_, err := c.Open(f)
			require.ErrorIs(t, err, ErrBadMAC, "byte %d bit %d", i, bit)
		}
	}
	// Unknown fields are ignored (forward compatibility) and order is free.
	m, err := c.Open(signed(` { "ts" : 1800000000000, "x":{"y":[null,true,false,-1.5e3]}, "id":"a", "type":"t" } `))
	require.NoError(t, err)
	require.Equal(t, "t", m.Type)
}

func TestKeyRotation(t *testing.T) {
	ring, err := NewKeyRing(testKey)
	require.NoError(t, err)
	c, err := NewCodec(CodecConfig{Keys: ring})
	require.NoError(t, err)
	oldFrames, err := c.Seal(Message{Type: "x"})
	require.NoError(t, err)

	// Step 1: every node learns k2; k1 still signs, both verify.
	require.NoError(t, ring.Add(testKey2))
	require.Equal(t, []string{"k1", "k2"}, ring.KeyIDs())
	_, err = c.Open(oldFrames)
	require.NoError(t, err)

	// Step 2: k2 signs; k1 messages still verify.
	require.NoError(t, ring.SetSigning("k2"))
	newFrames, err := c.Seal(Message{Type: "x"})
	require.NoError(t, err)
	require.Equal(t, "k2", string(newFrames[0]))
	m, err := c.Open(newFrames)
	require.NoError(t, err)
	require.Equal(t, "k2", m.KeyID)
	_, err = c.Open(oldFrames)
	require.NoError(t, err)

	// Step 3: k1 retires.
	require.NoError(t, ring.Remove("k1"))
	_, err = c.Open(oldFrames)
	require.ErrorIs(t, err, ErrUnknownKey)
	_, err = c.Open(newFrames)
	require.NoError(t, err)

	// Mistakes are errors, not panics.
	require.Error(t, ring.Remove("k2"), "removing the signing key")
	require.ErrorIs(t, ring.Remove("k9"), ErrUnknownKey)
	require.ErrorIs(t, ring.SetSigning("k9"), ErrUnknownKey)
	require.Error(t, ring.Add(testKey2), "duplicate")
	require.Error(t, ring.Add(Key{ID: "short", Secret: []byte("x")}))
	require.Error(t, ring.Add(Key{ID: "bad id", Secret: testKey.Secret}))
	_, err = NewKeyRing()
	require.Error(t, err)
	_, err = NewKeyRing(testKey, testKey)
	require.Error(t, err)
	_, err = NewCodec(CodecConfig{})
	require.Error(t, err)
	_, err = NewCodec(CodecConfig{Keys: ring, MaxSize: 10})
	require.Error(t, err)
}

func TestReplayWindow(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	w, err := NewReplayWindow(ReplayConfig{Window: 10 * time.Second, Capacity: 100, Now: clock.Now})
	require.NoError(t, err)
	msg := func(key, id string, at time.Time) *Message { return &Message{KeyID: key, ID: id, Time: at} }

	require.NoError(t, w.Admit(msg("k1", "a", clock.t)))
	require.ErrorIs(t, w.Admit(msg("k1", "a", clock.t)), ErrReplay)
	require.NoError(t, w.Admit(msg("k2", "a", clock.t)), "ids are per key")
	require.ErrorIs(t, w.Admit(msg("k1", "b", clock.t.Add(-11*time.Second))), ErrStale)
	require.ErrorIs(t, w.Admit(msg("k1", "b", clock.t.Add(11*time.Second))), ErrStale)
	require.Equal(t, 2, w.Len())

	// Ids are forgotten once their timestamps leave the window; a replay of
	// them is then stale.
	clock.t = clock.t.Add(11 * time.Second)
	require.NoError(t, w.Admit(msg("k1", "c", clock.t)))
	require.Equal(t, 1, w.Len())
	require.ErrorIs(t, w.Admit(msg("k1", "a", clock.t.Add(-11*time.Second))), ErrStale)
}

func TestReplayWindowBoundedMemory(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	w, err := NewReplayWindow(ReplayConfig{Window: time.Minute, Capacity: 1000, Now: clock.Now})
	require.NoError(t, err)
	base := clock.t.Add(-30 * time.Second)
	ids := make([]string, 5000)
	for i := range ids {
		ids[i] = "id" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + time.Duration(i).String()
		require.NoError(t, w.Admit(&Message{KeyID: "k1", ID: ids[i], Time: base.Add(time.Duration(i) * time.Millisecond)}))
		require.LessOrEqual(t, w.Len(), 1000)
	}
	require.Equal(t, 1000, w.Len())
	// Every id, remembered or forgotten, is still refused.
	for i, id := range ids {
		err := w.Admit(&Message{KeyID: "k1", ID: id, Time: base.Add(time.Duration(i) * time.Millisecond)})
		require.ErrorIs(t, err, ErrReplay, "id %d", i)
	}
	// New messages newer than the forgotten ones pass.
	require.NoError(t, w.Admit(&Message{KeyID: "k1", ID: "fresh", Time: clock.t}))
}

func TestRemoteErrorIs(t *testing.T) {
	err := error(Errorf("busy", "try %d", 2))
	var re *RemoteError
	require.True(t, errors.As(err, &re))
	require.Equal(t, "busy", re.Code)
	require.Equal(t, "try 2", re.Message)
	require.Contains(t, err.Error(), "busy")
}

func TestReplayWindowCodecIDs(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	w, err := NewReplayWindow(ReplayConfig{Window: 10 * time.Second, Capacity: 16 * 512, Now: clock.Now})
	require.NoError(t, err)
	c := newTestCodec(t, clock.Now)
	ids := make([]string, 6000)
	for i := range ids {
		ids[i] = c.NewID()
		_, _, ok := parseSeqID(ids[i])
		require.True(t, ok, ids[i])
	}
	msg := func(key, id string) *Message { return &Message{KeyID: key, ID: id, Time: clock.t} }

	// Out of order within the bitmap: fine; each only once.
	for _, i := range []int{5, 3, 4, 1, 2, 100, 50} {
		require.NoError(t, w.Admit(msg("k1", ids[i])), "id %d", i)
	}
	for _, i := range []int{5, 3, 4, 1, 2, 100, 50} {
		require.ErrorIs(t, w.Admit(msg("k1", ids[i])), ErrReplay, "id %d", i)
	}
	require.NoError(t, w.Admit(msg("k2", ids[5])), "per key")
	// Far ahead, then far behind: refused even though never seen.
	require.NoError(t, w.Admit(msg("k1", ids[5999])))
	require.ErrorIs(t, w.Admit(msg("k1", ids[60])), ErrReplay)
	require.NoError(t, w.Admit(msg("k1", ids[5999-seqBits+1])))
	require.Equal(t, 0, w.Len(), "codec ids use no per-id memory")

	// Sender table full: silent senders are forgotten first, then the
	// oldest, raising the floor.
	for i := 0; i < 40; i++ {
		other := newTestCodec(t, clock.Now)
		clock.t = clock.t.Add(time.Millisecond)
		require.NoError(t, w.Admit(msg("k1", other.NewID())))
	}
	require.LessOrEqual(t, len(w.senders), 16)
	require.ErrorIs(t, w.Admit(&Message{KeyID: "k1", ID: c.NewID(), Time: time.Unix(1_800_000_000, 0)}), ErrReplay)
	require.NoError(t, w.Admit(msg("k1", c.NewID())))

	for _, bad := range []string{"0123456789abcdef-", "0123456789abcdeF-1", "0123456789abcdef-0", "0123456789abcdef_1", "0123456789abcdef-zzzzzzzzzzzzzz"} {
		_, _, ok := parseSeqID(bad)
		require.False(t, ok, bad)
	}
}
