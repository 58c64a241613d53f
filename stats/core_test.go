package stats

import (
	"fmt"
	"testing"

	"go.uber.org/goleak"
)

func TestEmitterToCollectorDeliversInOrder(t *testing.T) {
	g := newRig(t)
	sink := newMemSink("mem")
	c := g.collector(t, sink)
	running(t, "collector", c.Run)
	e := g.emitter(t, nil)
	running(t, "emitter", e.Run)
	const n = 20000
	for i := range n {
		if i%2 == 0 {
			e.Count(Tags{App: "web", Instance: 1}, "requests", 1)
		} else {
			e.Log(Tags{App: "web", Instance: 1, Stream: "stdout"}, []byte(fmt.Sprintf("line %d", i)))
		}
	}
	eventually(t, "every record in the sink", func() bool { return sink.count() == n })
	eventually(t, "every record acknowledged", func() bool { return e.Stats().Acked == n })
	for i, r := range sink.recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
		if i%2 == 1 && string(r.Text) != fmt.Sprintf("line %d", i) {
			t.Fatalf("record %d text %q", i, r.Text)
		}
	}
	if st := e.Stats(); st.Dropped != 0 || st.Spooled != 0 {
		t.Fatalf("emitter stats %+v", st)
	}
}

// TestRunReleasesEverything: a collector and an emitter that ran and
// stopped leave no goroutine behind.
func TestRunReleasesEverything(t *testing.T) {
	opts := goleak.IgnoreCurrent()
	g := newRig(t)
	files, err := NewFileSink(FileSinkConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	c := g.collector(t, files)
	stopC := running(t, "collector", c.Run)
	e := g.emitter(t, nil)
	stopE := running(t, "emitter", e.Run)
	e.Log(Tags{App: "web"}, []byte("x"))
	eventually(t, "acked", func() bool { return e.Stats().Acked == 1 })
	stopE()
	stopC()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := files.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, opts)
}
