package stats

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
	"unicode"
)

func TestBatchRoundTrip(t *testing.T) {
	recs := []Record{
		{Kind: KindLog, Emitter: "e.1", Seq: 7, Time: time.Unix(0, 1800000000123456789), Tags: Tags{App: "web", Instance: -3, Stream: "stderr"},
			Text: []byte("tab\there \"quoted\" back\\slash \x01 é \u2028"), Truncated: true},
		{Kind: KindLog, Emitter: "e.1", Seq: 8, Time: time.Unix(0, 5), Tags: Tags{App: "web"}, Text: []byte{0xff, 0xfe, 'x'}},
		{Kind: KindGauge, Emitter: "e.1", Seq: 9, Time: time.Unix(0, -5), Tags: Tags{App: "web"}, Name: "mem_bytes", Value: 1.5e-300},
		{Kind: KindUsage, Emitter: "e.1", Seq: 10, Time: time.Unix(0, 0), Tags: Tags{App: "web"}, Name: UsageCPUSeconds, Value: 12.25},
	}
	var enc batchEncoder
	enc.begin("e.1", 7)
	for i := range recs {
		enc.add(&recs[i])
	}
	body := enc.end()
	if !json.Valid(body) {
		t.Fatalf("invalid JSON %s", body)
	}
	em, from, got, cut, err := decodeBatch(body, DefaultMaxLineBytes, nil)
	if err != nil || em != "e.1" || from != 7 || cut != 0 {
		t.Fatalf("decode: %v %q %d %d", err, em, from, cut)
	}
	for i := range recs {
		if !got[i].Time.Equal(recs[i].Time) {
			t.Fatalf("record %d time %v, want %v", i, got[i].Time, recs[i].Time)
		}
		got[i].Time = recs[i].Time
		if len(got[i].Text) == 0 && len(recs[i].Text) == 0 {
			got[i].Text = recs[i].Text
		}
		if !reflect.DeepEqual(got[i], recs[i]) {
			t.Fatalf("record %d:\n got %+v\nwant %+v", i, got[i], recs[i])
		}
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`{"emitter":"e","from":1,"records":[{"seq":1,"kind":"log","ts":1,"app":"web","text":"a\u00e9\ud83d\ude00"}]}`))
	f.Add([]byte(`{"emitter":"e","from":1,"records":[{"seq":1,"kind":"counter","ts":-1,"app":"w","name":"x","value":-1.5e3,"extra":[1,{"a":null}]}]}`))
	f.Add([]byte(`{"records":null,"emitter":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var mine wireBatch
		errMine := parseWireBatch(body, &mine)
		var std wireBatch
		errStd := json.Unmarshal(body, &std)
		// encoding/json also matches member names case-insensitively: a
		// body with upper-case letters may name a member only it sees.
		if errMine == nil && errStd == nil && !bytes.ContainsFunc(body, unicode.IsUpper) && !bytes.Contains(body, []byte(`\u`)) {
			// Where both accept, they agree (apart from empty text64,
			// which encoding/json leaves nil).
			for i := range mine.Records {
				if len(mine.Records[i].Text64) == 0 && len(std.Records[i].Text64) == 0 {
					mine.Records[i].Text64, std.Records[i].Text64 = nil, nil
				}
			}
			if len(mine.Records) == 0 && len(std.Records) == 0 {
				mine.Records, std.Records = nil, nil
			}
			if !reflect.DeepEqual(mine, std) {
				t.Fatalf("decoders disagree on %q:\n mine %+v\n  std %+v", body, mine, std)
			}
		}
		if errMine == nil && errStd != nil && json.Valid(body) {
			t.Fatalf("accepted what encoding/json refuses: %q: %v", body, errStd)
		}
	})
}
