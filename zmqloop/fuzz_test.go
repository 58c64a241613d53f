package zmqloop

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// FuzzDecode feeds the envelope decoder arbitrary input. The first byte
// picks the mode: even means the rest is a payload that the harness signs
// correctly (so the JSON parser is reached); odd means the rest is split
// into frames at 0xFF bytes and opened as is (so 4-frame messages, with a
// data frame, and other counts come up). A first byte of 2 mod 4 also
// signs correctly but splits the rest at its first 0xFF into payload and
// data frame (the data path of the MAC and the decoder). Whatever the
// decoder accepts must agree with encoding/json field by field, carry the
// data frame unchanged, and survive a re-seal. Seeds live in
// testdata/fuzz/FuzzDecode and run with every go test.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("\x00" + `{"type":"echo","id":"a1","ts":1800000000000,"body":{"x":[1,"2",null]}}`))
	f.Add([]byte("\x00" + `{"type":"zmqloop.batch","id":"b1","ts":1800000000000,"body":[{"type":"stat","id":"i1","ts":1800000000000,"body":1},{"type":"stat","id":"i2"}]}`))
	f.Add([]byte("\x02" + `{"type":"pty.output","id":"a2","ts":1800000000000,"body":{"o":0}}` + "\xff\x00\x01raw\xff"))
	f.Add([]byte("\x01k1\xff{}\xff0123456789abcdef0123456789abcdef\xffdata"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		ring, err := NewKeyRing(testKey)
		if err != nil {
			t.Fatal(err)
		}
		clock := &fakeClock{t: time.UnixMilli(1_800_000_000_000)}
		c, err := NewCodec(CodecConfig{Keys: ring, Now: clock.Now, MaxSize: 1 << 16})
		if err != nil {
			t.Fatal(err)
		}
		var frames [][]byte
		switch {
		case data[0]%4 == 2:
			payload, raw, _ := bytes.Cut(data[1:], []byte{0xFF})
			if len(raw) == 0 {
				frames = resign(testKey, [][]byte{nil, payload, nil})
			} else {
				e := newKeyEntry(testKey)
				frames = [][]byte{[]byte(testKey.ID), payload, e.macData(nil, payload, raw), raw}
			}
		case data[0]%2 == 0:
			frames = resign(testKey, [][]byte{nil, data[1:], nil})
		default:
			frames = bytes.Split(data[1:], []byte{0xFF})
		}
		var m Message
		err = c.open(frames, &m)
		if err != nil && !errors.Is(err, ErrStale) {
			for _, want := range []error{ErrFrames, ErrTooLarge, ErrUnknownKey, ErrBadMAC, ErrMalformed} {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("open failed with an unclassified error: %v", err)
		}
		payload := frames[1]
		if len(frames) == 4 {
			if !bytes.Equal(m.Data, frames[3]) || len(m.Data) == 0 {
				t.Fatalf("data frame %q opened as %q", frames[3], m.Data)
			}
		} else if m.Data != nil {
			t.Fatalf("a %d-frame message opened with data %q", len(frames), m.Data)
		}
		if !json.Valid(payload) {
			t.Fatalf("decoder accepted invalid JSON %q", payload)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(payload, &fields); err != nil {
			t.Fatalf("decoder accepted %q, encoding/json did not: %v", payload, err)
		}
		str := func(key string) string {
			var s string
			if raw, ok := fields[key]; ok {
				if err := json.Unmarshal(raw, &s); err != nil {
					t.Fatalf("field %s of %q: %v", key, payload, err)
				}
			}
			return s
		}
		var ts int64
		if err := json.Unmarshal(fields["ts"], &ts); err != nil || ts != m.Time.UnixMilli() {
			t.Fatalf("ts of %q: decoder %d, encoding/json %d (%v)", payload, m.Time.UnixMilli(), ts, err)
		}
		if m.Type != str("type") || m.ID != str("id") || m.ReplyTo != str("re") {
			t.Fatalf("fields of %q: decoder %q %q %q", payload, m.Type, m.ID, m.ReplyTo)
		}
		if !bytes.Equal(m.Body, fields["body"]) {
			t.Fatalf("body of %q: decoder %q, encoding/json %q", payload, m.Body, fields["body"])
		}
		if raw, ok := fields["error"]; ok != (m.Error != nil) {
			t.Fatalf("error of %q: decoder %v, encoding/json present=%v", payload, m.Error, ok)
		} else if ok {
			var e map[string]json.RawMessage
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatal(err)
			}
			var code, msg string
			_ = json.Unmarshal(e["code"], &code)
			if e["message"] != nil {
				_ = json.Unmarshal(e["message"], &msg)
			}
			if code != m.Error.Code || msg != m.Error.Message {
				t.Fatalf("error of %q: decoder %+v, encoding/json %q %q", payload, m.Error, code, msg)
			}
		}
		if m.Type == BatchType {
			checkBatch(t, m.Body)
		}
		// What was accepted re-seals to the same message.
		clock.t = m.Time
		again, err := c.Seal(m)
		if err != nil {
			t.Fatalf("re-seal of %+v: %v", m, err)
		}
		var m2 Message
		if err := c.open(again, &m2); err != nil {
			t.Fatalf("re-open of %q: %v", again[1], err)
		}
		m.KeyID, m2.KeyID = "", ""
		if m.Type != m2.Type || m.ID != m2.ID || !m.Time.Equal(m2.Time) || m.ReplyTo != m2.ReplyTo ||
			!bytes.Equal(m.Body, m2.Body) || !bytes.Equal(m.Data, m2.Data) || (m.Error == nil) != (m2.Error == nil) ||
			(m.Error != nil && *m.Error != *m2.Error) {
			t.Fatalf("re-seal changed the message: %+v became %+v", m, m2)
		}
	})
}

// checkBatch holds parseBatch to encoding/json on a batch body: what it
// accepts is a non-empty array of objects whose members agree, none of
// them a batch.
func checkBatch(t *testing.T, body []byte) {
	t.Helper()
	items, err := parseBatch(body, nil)
	if err != nil {
		return
	}
	var arr []map[string]json.RawMessage
	if err := json.Unmarshal(body, &arr); err != nil {
		t.Fatalf("parseBatch accepted %q, encoding/json did not: %v", body, err)
	}
	if len(arr) == 0 || len(arr) != len(items) {
		t.Fatalf("batch %q: parseBatch %d items, encoding/json %d", body, len(items), len(arr))
	}
	for i, it := range items {
		var typ, id string
		if json.Unmarshal(arr[i]["type"], &typ) != nil || json.Unmarshal(arr[i]["id"], &id) != nil ||
			typ != string(it.typ) || id != string(it.id) || typ == BatchType {
			t.Fatalf("batch %q item %d: parseBatch %q %q, encoding/json %q %q", body, i, it.typ, it.id, typ, id)
		}
		if !bytes.Equal(it.body, arr[i]["body"]) {
			t.Fatalf("batch %q item %d: body %q, encoding/json %q", body, i, it.body, arr[i]["body"])
		}
		raw, hasTS := arr[i]["ts"]
		var ts int64
		if hasTS != it.hasTS || (hasTS && (json.Unmarshal(raw, &ts) != nil || ts != it.ts)) {
			t.Fatalf("batch %q item %d: ts %d (%v), encoding/json %s", body, i, it.ts, it.hasTS, raw)
		}
		if _, ok := arr[i]["re"]; ok {
			t.Fatalf("batch %q item %d: accepted \"re\"", body, i)
		}
		if _, ok := arr[i]["error"]; ok {
			t.Fatalf("batch %q item %d: accepted \"error\"", body, i)
		}
	}
}
