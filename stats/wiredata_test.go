package stats

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/paaskit/paaskit/zmqloop"
)

func logRecords(emitter string, first uint64, n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		seq := first + uint64(i)
		recs[i] = Record{Kind: KindLog, Emitter: emitter, Seq: seq, Time: time.Unix(0, int64(seq)),
			Tags: Tags{App: "web", Instance: 1, Stream: "stdout"}, Text: fmt.Appendf(nil, "line %d", seq)}
	}
	return recs
}

// A collector takes format-2 frames in both forms through real sockets:
// base64 in the body, as older emitters send them, and raw in the data
// frame, as emitters send them now; and an emitter sends the data form.
func TestCollectorAcceptsFramesInTheBodyAndInTheDataFrame(t *testing.T) {
	g := newRig(t)
	sink := newMemSink("mem")
	c := g.collector(t, sink)
	running(t, "collector", c.Run)
	p, err := zmqloop.NewPusher(zmqloop.SenderConfig{Connect: []string{g.pull}, Codec: g.codec})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	old := logRecords("old.1", 1, 3)
	if err := p.Push(ctx, TypeBatch, json.RawMessage(encodeV2("old.1", 1, old))); err != nil {
		t.Fatal(err)
	}
	recent := logRecords("old.1", 4, 3)
	body, data := encodeData("old.1", 1, recent)
	if err := p.PushData(ctx, TypeBatch, json.RawMessage(body), data); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both forms written", func() bool { return sink.count() == 6 })

	e := g.emitter(t, nil)
	running(t, "emitter", e.Run)
	e.Log(Tags{App: "web", Stream: "stdout"}, []byte("from an emitter"))
	eventually(t, "the emitter's line written", func() bool { return sink.count() == 7 })

	sink.mu.Lock()
	got := append([]Record(nil), sink.recs...)
	sink.mu.Unlock()
	for i, w := range append(old, recent...) {
		if got[i].Emitter != w.Emitter || got[i].Seq != w.Seq || string(got[i].Text) != string(w.Text) || !got[i].Time.Equal(w.Time) {
			t.Fatalf("record %d: got %s/%d %q, want %s/%d %q", i, got[i].Emitter, got[i].Seq, got[i].Text, w.Emitter, w.Seq, w.Text)
		}
	}
	if string(got[6].Text) != "from an emitter" || got[6].Emitter != e.ID() {
		t.Fatalf("emitter's record: %+v", got[6])
	}
	if st := c.Stats(); st.Accepted != 7 || st.Malformed != 0 || st.Rejected != 0 || st.Duplicates != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// A data frame that is not whole, valid format-2 frames, or a batch with
// frames both in its body and in its data frame, is refused whole and
// counted: nothing of it is journaled (its good first records neither),
// the emitter's sequence does not move, and the same records sent right
// afterwards are all accepted.
func TestCollectorRefusesBadDataFramesWhole(t *testing.T) {
	g := newRig(t)
	sink := newMemSink("mem")
	c := g.collector(t, sink)
	running(t, "collector", c.Run)
	p, err := zmqloop.NewPusher(zmqloop.SenderConfig{Connect: []string{g.pull}, Codec: g.codec})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()

	recs := logRecords("e.1", 1, 4)
	body, good := encodeData("e.1", 1, recs)
	good = append([]byte(nil), good...)
	badCRC := append([]byte(nil), good...)
	badCRC[len(badCRC)-1] ^= 1 // the last record's text
	lastLen := binary.LittleEndian.Uint32(good[len(good)-len(recs[3].appendBinary(nil))-frameHeader:])
	overLen := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(overLen[len(good)-int(lastLen)-frameHeader:], lastLen+1)
	bad := []struct {
		name       string
		body, data []byte
	}{
		{"bad CRC in the last frame", body, badCRC},
		{"truncated last frame", body, good[:len(good)-3]},
		{"a header cut short", body, append(append([]byte(nil), good...), 1, 2, 3)},
		{"last length over the rest", body, overLen},
		{"not frames", body, []byte("hello, collector")},
		{"frames in the body and the data frame",
			[]byte(`{"emitter":"e.1","from":1,"frames":"` + base64.StdEncoding.EncodeToString(good) + `"}`), good},
		{"records in the body and frames in the data frame", encodeV1("e.1", 1, recs), good},
	}
	for _, b := range bad {
		if err := p.PushData(ctx, TypeBatch, json.RawMessage(b.body), b.data); err != nil {
			t.Fatalf("%s: %v", b.name, err)
		}
	}
	eventually(t, "refusals counted", func() bool { return c.Stats().Malformed == uint64(len(bad)) })
	if st := c.Stats(); st.Accepted != 0 || st.Duplicates != 0 || st.Gaps != 0 {
		t.Fatalf("after the bad batches: %+v", st)
	}
	if err := p.PushData(ctx, TypeBatch, json.RawMessage(body), good); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the good batch written", func() bool { return sink.count() == len(recs) })
	if st := c.Stats(); st.Accepted != uint64(len(recs)) || st.Duplicates != 0 || st.Gaps != 0 || st.Malformed != uint64(len(bad)) {
		t.Fatalf("after the good batch: %+v", st)
	}
}
