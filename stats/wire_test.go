package stats

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// batchEncoder appends a format-1 TypeBatch body (records as JSON
// objects) record by record, as emitters before format 2 did.
type batchEncoder struct {
	b []byte
	n int
}

func (e *batchEncoder) begin(emitter string, from uint64) {
	e.b = append(e.b[:0], `{"emitter":`...)
	e.b = appendJSONString(e.b, emitter)
	e.b = append(e.b, `,"from":`...)
	e.b = strconv.AppendUint(e.b, from, 10)
	e.b = append(e.b, `,"records":[`...)
	e.n = 0
}

func (e *batchEncoder) add(r *Record) {
	if e.n > 0 {
		e.b = append(e.b, ',')
	}
	e.n++
	b := append(e.b, `{"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"kind":"`...)
	b = append(b, r.Kind.String()...)
	b = append(b, `","ts":`...)
	b = strconv.AppendInt(b, r.Time.UnixNano(), 10)
	b = append(b, `,"app":`...)
	b = appendJSONString(b, r.App)
	if r.Instance != 0 {
		b = append(b, `,"instance":`...)
		b = strconv.AppendInt(b, r.Instance, 10)
	}
	if r.Stream != "" {
		b = append(b, `,"stream":`...)
		b = appendJSONString(b, r.Stream)
	}
	if r.Kind == KindLog {
		if utf8.Valid(r.Text) {
			b = append(b, `,"text":`...)
			b = appendJSONString(b, string(r.Text)) // no copy: the compiler sees through it
		} else {
			b = append(b, `,"text64":"`...)
			b = base64.StdEncoding.AppendEncode(b, r.Text)
			b = append(b, '"')
		}
		if r.Truncated {
			b = append(b, `,"truncated":true`...)
		}
	} else {
		b = append(b, `,"name":`...)
		b = appendJSONString(b, r.Name)
		b = append(b, `,"value":`...)
		b = strconv.AppendFloat(b, r.Value, 'g', -1, 64)
	}
	e.b = append(b, '}')
}

func (e *batchEncoder) end() []byte {
	e.b = append(e.b, "]}"...)
	return e.b
}

var roundTripRecords = []Record{
	{Kind: KindLog, Emitter: "e.1", Seq: 7, Time: time.Unix(0, 1800000000123456789), Tags: Tags{App: "web", Instance: -3, Stream: "stderr"},
		Text: []byte("tab\there \"quoted\" back\\slash \x01 é \u2028"), Truncated: true},
	{Kind: KindLog, Emitter: "e.1", Seq: 8, Time: time.Unix(0, 5), Tags: Tags{App: "web"}, Text: []byte{0xff, 0xfe, 'x'}},
	{Kind: KindGauge, Emitter: "e.1", Seq: 9, Time: time.Unix(0, -5), Tags: Tags{App: "web"}, Name: "mem_bytes", Value: 1.5e-300},
	{Kind: KindUsage, Emitter: "e.1", Seq: 10, Time: time.Unix(0, 0), Tags: Tags{App: "web"}, Name: UsageCPUSeconds, Value: 12.25},
	{Kind: KindLog, Emitter: "e.1", Seq: 11, Time: time.Unix(0, 9), Tags: Tags{App: "api", Stream: "stdout"}},
}

// sameRecords compares decoded records with what was encoded (times by
// instant, an empty text as nil).
func sameRecords(t *testing.T, what string, got, want []Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if !g.Time.Equal(w.Time) {
			t.Fatalf("%s: record %d time %v, want %v", what, i, g.Time, w.Time)
		}
		g.Time = w.Time
		if len(g.Text) == 0 && len(w.Text) == 0 {
			g.Text = w.Text
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("%s: record %d:\n got %+v\nwant %+v", what, i, g, w)
		}
	}
}

func encodeV1(emitter string, from uint64, recs []Record) []byte {
	var enc batchEncoder
	enc.begin(emitter, from)
	for i := range recs {
		enc.add(&recs[i])
	}
	return enc.end()
}

// encodeV2 is a format-2 batch as emitters sent it before the data
// frame: the frames in base64 in the body.
func encodeV2(emitter string, from uint64, recs []Record) []byte {
	var enc frameEncoder
	enc.begin(emitter, from)
	for i := range recs {
		enc.addRecord(&recs[i])
	}
	b := append([]byte(`{"emitter":`), appendJSONString(nil, emitter)...)
	b = append(b, `,"from":`...)
	b = strconv.AppendUint(b, from, 10)
	b = append(b, `,"frames":"`...)
	b = base64.StdEncoding.AppendEncode(b, enc.raw)
	return append(b, `"}`...)
}

// encodeData is a format-2 batch as emitters send it: the frames raw in
// the message's data frame.
func encodeData(emitter string, from uint64, recs []Record) (body, data []byte) {
	var enc frameEncoder
	enc.begin(emitter, from)
	for i := range recs {
		enc.addRecord(&recs[i])
	}
	body, data = enc.endData()
	return append([]byte(nil), body...), data
}

// The three forms carry the same records; the collector decodes all.
func TestBatchRoundTrip(t *testing.T) {
	bodyOnly := func(enc func(string, uint64, []Record) []byte) func(string, uint64, []Record) ([]byte, []byte) {
		return func(e string, from uint64, recs []Record) ([]byte, []byte) { return enc(e, from, recs), nil }
	}
	for _, f := range []struct {
		name string
		enc  func(string, uint64, []Record) ([]byte, []byte)
	}{{"format 1 (JSON records)", bodyOnly(encodeV1)}, {"format 2 (frames in base64)", bodyOnly(encodeV2)}, {"format 2 (frames in the data frame)", encodeData}} {
		body, data := f.enc("e.1", 7, roundTripRecords)
		if !json.Valid(body) {
			t.Fatalf("%s: invalid JSON %s", f.name, body)
		}
		var d decodedBatch
		if err := d.decode(body, data, DefaultMaxLineBytes); err != nil || d.Emitter != "e.1" || d.From != 7 || d.Cut != 0 {
			t.Fatalf("%s: decode: %v %q %d %d", f.name, err, d.Emitter, d.From, d.Cut)
		}
		sameRecords(t, f.name, d.Recs, roundTripRecords)
		// The decoder's buffers are reused: a second batch decodes as well.
		body, data = f.enc("e.1", 8, roundTripRecords[1:])
		if err := d.decode(body, data, DefaultMaxLineBytes); err != nil {
			t.Fatal(err)
		}
		sameRecords(t, f.name+", again", d.Recs, roundTripRecords[1:])
	}
	// The data frame's body is the JSON form's without "frames", and its
	// data the frames the JSON form carries in base64.
	body, data := encodeData("e.1", 7, roundTripRecords)
	var d decodedBatch
	if err := d.decode(encodeV2("e.1", 7, roundTripRecords), nil, DefaultMaxLineBytes); err != nil {
		t.Fatal(err)
	}
	if string(body) != `{"emitter":"e.1","from":7}` || !bytes.Equal(data, d.Raw) {
		t.Fatalf("data form %s + %x\nJSON form's frames %x", body, data, d.Raw)
	}
}

// A format-2 frame is the record as the journal keeps it: the collector
// copies it, unless it cut the line.
func TestFrameBatchKeepsFramesAndCutsLongLines(t *testing.T) {
	long := Record{Kind: KindLog, Emitter: "e.1", Seq: 12, Time: time.Unix(0, 1), Tags: Tags{App: "web"}, Text: []byte(strings.Repeat("é", 600))}
	recs := append(append([]Record(nil), roundTripRecords...), long)
	body := encodeV2("e.1", 1, recs)
	var d decodedBatch
	if err := d.decode(body, nil, 1000); err != nil {
		t.Fatal(err)
	}
	if d.Cut != 1 || len(d.Frames) != len(recs) {
		t.Fatalf("cut %d, %d frames", d.Cut, len(d.Frames))
	}
	for i, f := range d.Frames[:len(recs)-1] {
		want := recs[i].appendBinary(nil)
		if f.n != frameHeader+len(want) || !bytes.Equal(d.Raw[f.off+frameHeader:f.off+f.n], want) {
			t.Fatalf("frame %d is not the record's binary layout", i)
		}
	}
	last := d.Recs[len(d.Recs)-1]
	if d.Frames[len(recs)-1].n != 0 || !last.Truncated || len(last.Text) > 1000 || !utf8.Valid(last.Text) ||
		!strings.HasSuffix(string(last.Text), TruncatedMarker) {
		t.Fatalf("long line: frame %+v, %d bytes, truncated %v", d.Frames[len(recs)-1], len(last.Text), last.Truncated)
	}
}

// Every way a format-2 batch can be wrong is refused with an error, in
// both forms.
func TestFrameBatchRefusals(t *testing.T) {
	good := encodeV2("e.1", 1, roundTripRecords)
	goodBody, goodData := encodeData("e.1", 1, roundTripRecords)
	frames := func(b []byte) []byte {
		var d decodedBatch
		if err := d.decode(b, nil, DefaultMaxLineBytes); err != nil {
			t.Fatal(err)
		}
		return append([]byte(nil), d.Raw...)
	}(good)
	reframe := func(payload []byte) []byte {
		b := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
		b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(payload, crcTable))
		return append(b, payload...)
	}
	first := roundTripRecords[0]
	badCRC := append([]byte(nil), frames...)
	badCRC[frameHeader+5] ^= 1
	lastBadCRC := append([]byte(nil), frames...)
	lastBadCRC[len(lastBadCRC)-1] ^= 1
	other := first
	other.Emitter = "e.2"
	badFlags := first.appendBinary(nil)
	badFlags[1] = 2
	logWithValue := first
	logWithValue.Value = 1
	gap := roundTripRecords[1]
	gap.Seq = 9
	secondBadStream := roundTripRecords[1]
	secondBadStream.Stream = "../x"
	seqWraps := []Record{{Kind: KindLog, Emitter: "e.1", Seq: 1<<64 - 1, Tags: Tags{App: "web"}}, {Kind: KindLog, Emitter: "e.1", Seq: 0, Tags: Tags{App: "web"}}}
	frameOf := func(recs ...Record) []byte {
		var enc frameEncoder
		enc.begin("e.1", 1)
		for i := range recs {
			enc.addRecord(&recs[i])
		}
		return append([]byte(nil), enc.raw...)
	}
	// Bad frames, each refused whether it comes in base64 in the body or
	// raw in the data frame.
	badFrames := map[string][]byte{
		"short header":          frames[:5],
		"truncated":             frames[:len(frames)-1],
		"length past the end":   append(binary.LittleEndian.AppendUint32(nil, 1<<20), frames[4:]...),
		"length over maxFrame":  append(binary.LittleEndian.AppendUint32(nil, maxFrame+1), frames[4:]...),
		"bad CRC":               badCRC,
		"bad CRC in the last":   lastBadCRC,
		"another emitter":       reframe(other.appendBinary(nil)),
		"unknown flags":         reframe(badFlags),
		"trailing bytes":        reframe(append(first.appendBinary(nil), 0)),
		"log line with a value": reframe(logWithValue.appendBinary(nil)),
		"a gap":                 append(reframe(first.appendBinary(nil)), reframe(gap.appendBinary(nil))...),
		"bad app":               frameOf(Record{Kind: KindLog, Emitter: "e.1", Seq: 1, Tags: Tags{App: "../etc"}}),
		"bad stream after good": frameOf(roundTripRecords[0], secondBadStream),
		"seq 0":                 frameOf(Record{Kind: KindLog, Emitter: "e.1", Tags: Tags{App: "web"}}),
		"seq wraps to 0":        frameOf(seqWraps...),
		"bad kind":              frameOf(Record{Kind: 9, Emitter: "e.1", Seq: 1, Tags: Tags{App: "web"}}),
		"garbage":               []byte("not frames at all"),
	}
	type batch struct{ body, data []byte }
	cases := map[string]batch{
		"both records and frames":         {[]byte(`{"emitter":"e.1","from":1,"records":[],"frames":""}`), nil},
		"frames, then records":            {[]byte(`{"emitter":"e.1","from":1,"frames":"` + base64.StdEncoding.EncodeToString(frames) + `","records":[]}`), nil},
		"no frames":                       {[]byte(`{"emitter":"e.1","from":1,"frames":""}`), nil},
		"not base64":                      {[]byte(`{"emitter":"e.1","from":1,"frames":"!!!!"}`), nil},
		"frames in the body and the data": {good, goodData},
		"empty frames and data":           {[]byte(`{"emitter":"e.1","from":1,"frames":""}`), goodData},
		"records and data":                {encodeV1("e.1", 1, roundTripRecords), goodData},
		"data with a bad emitter":         {[]byte(`{"emitter":"../x","from":1}`), goodData},
		"data with a bad body":            {[]byte(`{"emitter":"e.1","from":1`), goodData},
	}
	for name, raw := range badFrames {
		cases[name+" (base64)"] = batch{[]byte(`{"emitter":"e.1","from":1,"frames":"` + base64.StdEncoding.EncodeToString(raw) + `"}`), nil}
		cases[name+" (data frame)"] = batch{goodBody, raw}
	}
	var reused decodedBatch // buffers of earlier batches must not count as members
	for name, c := range cases {
		var d decodedBatch
		if err := d.decode(c.body, c.data, DefaultMaxLineBytes); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%s: error %v does not wrap ErrInvalidRecord", name, err)
		}
		if err := reused.decode(good, nil, DefaultMaxLineBytes); err != nil {
			t.Fatal(err)
		}
		if err := reused.decode(c.body, c.data, DefaultMaxLineBytes); err == nil {
			t.Errorf("%s: accepted after a good batch", name)
		}
		if err := reused.decode(encodeV1("e.1", 1, roundTripRecords), nil, DefaultMaxLineBytes); err != nil {
			t.Fatalf("format 1 after %s: %v", name, err)
		}
		if err := reused.decode(goodBody, goodData, DefaultMaxLineBytes); err != nil {
			t.Fatalf("data form after %s: %v", name, err)
		}
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`{"emitter":"e","from":1,"records":[{"seq":1,"kind":"log","ts":1,"app":"web","text":"a\u00e9\ud83d\ude00"}]}`))
	f.Add([]byte(`{"emitter":"e","from":1,"records":[{"seq":1,"kind":"counter","ts":-1,"app":"w","name":"x","value":-1.5e3,"extra":[1,{"a":null}]}]}`))
	f.Add([]byte(`{"records":null,"emitter":null}`))
	f.Add(encodeV2("e.1", 3, roundTripRecords))
	f.Add([]byte(`{"emitter":"e","frames":"AAEC\u0041\/","from":2}`))
	f.Add([]byte(`{"frames":null,"frames":"QUJD"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var mine wireBatch
		errMine := parseWireBatch(body, &mine)
		var std wireBatch
		errStd := json.Unmarshal(body, &std)
		// encoding/json also matches member names case-insensitively: a
		// body with upper-case letters may name a member only it sees.
		if errMine == nil && errStd == nil && !bytes.ContainsFunc(body, unicode.IsUpper) && !bytes.Contains(body, []byte(`\u`)) {
			// Where both accept, they agree (apart from empty text64 and
			// frames, which encoding/json leaves nil).
			for i := range mine.Records {
				if len(mine.Records[i].Text64) == 0 && len(std.Records[i].Text64) == 0 {
					mine.Records[i].Text64, std.Records[i].Text64 = nil, nil
				}
			}
			if len(mine.Records) == 0 && len(std.Records) == 0 {
				mine.Records, std.Records = nil, nil
			}
			if len(mine.Frames) == 0 && len(std.Frames) == 0 {
				mine.Frames, std.Frames = nil, nil
			}
			if !reflect.DeepEqual(mine, std) {
				t.Fatalf("decoders disagree on %q:\n mine %+v\n  std %+v", body, mine, std)
			}
		}
		// (Upper case again: encoding/json may see, say, "frAmes" as
		// frames, and refuse its value, where a member of that name is
		// another member here, and ignored.)
		if errMine == nil && errStd != nil && json.Valid(body) && !bytes.ContainsFunc(body, unicode.IsUpper) {
			t.Fatalf("accepted what encoding/json refuses: %q: %v", body, errStd)
		}
		var d decodedBatch
		_ = d.decode(body, nil, DefaultMaxLineBytes) // never panics
	})
}

// FuzzDecodeFrames feeds arbitrary frames to the format-2 decoder. It
// never panics, and what it accepts is exactly what format 1 carries: the
// same records through the format-1 encoder and decoder come out equal,
// and framed again they are the same bytes.
func FuzzDecodeFrames(f *testing.F) {
	var enc frameEncoder
	enc.begin("e.1", 7)
	for i := range roundTripRecords {
		enc.addRecord(&roundTripRecords[i])
	}
	f.Add(enc.raw, uint16(DefaultMaxLineBytes))
	f.Add(enc.raw[:40], uint16(20))
	f.Fuzz(func(t *testing.T, raw []byte, maxLine uint16) {
		body := []byte(`{"emitter":"e.1","from":1,"frames":"` + base64.StdEncoding.EncodeToString(raw) + `"}`)
		ml := max(int(maxLine), len(TruncatedMarker)+4)
		var d decodedBatch
		err := d.decode(body, nil, ml)
		// The same frames in the data frame: the same verdict, the same
		// records.
		var dd decodedBatch
		errData := dd.decode([]byte(`{"emitter":"e.1","from":1}`), raw, ml)
		if (err == nil) != (errData == nil) && len(raw) > 0 {
			t.Fatalf("base64 form: %v; data frame form: %v", err, errData)
		}
		if err != nil {
			return
		}
		sameRecords(t, "data frame form", dd.Recs, d.Recs)
		recs := append([]Record(nil), d.Recs...)
		for i := range recs {
			recs[i].Text = append([]byte(nil), recs[i].Text...)
		}
		var d1 decodedBatch
		if err := d1.decode(encodeV1("e.1", 1, recs), nil, ml); err != nil {
			t.Fatalf("format 1 refuses what format 2 accepted: %v", err)
		}
		sameRecords(t, "format 1 of the same records", d1.Recs, recs)
		if d.Cut == 0 {
			var again frameEncoder
			again.begin("e.1", 1)
			for i := range recs {
				again.addRecord(&recs[i])
			}
			if !bytes.Equal(again.raw, raw) {
				t.Fatalf("framed again differently:\n%x\n%x", again.raw, raw)
			}
		}
	})
}
