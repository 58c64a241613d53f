package stats

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestEmitterToCollectorDeliversInOrder(t *testing.T) {
	g := newRig(t)
	sink := newMemSink("mem")
	c := g.collector(t, sink)
	running(t, "collector", c.Run)
	// Not a fault test: an AckTimeout well above a slow fsync on a
	// loaded machine (the rig's 500ms is not, under the race detector),
	// so that everything travels by the normal path, not the spool.
	e := g.emitter(t, func(c *EmitterConfig) { c.AckTimeout = 10 * time.Second })
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

// TestEmitterRestartReplaysItsSpoolFirst: an emitter that ran while the
// collector was away leaves its records in the spool; the next
// incarnation sends them, in order, before its own.
func TestEmitterRestartReplaysItsSpoolFirst(t *testing.T) {
	g := newRig(t)
	e1 := g.emitter(t, nil)
	stop1 := running(t, "emitter 1", e1.Run)
	for i := range 3000 {
		e1.Log(Tags{App: "web"}, []byte(fmt.Sprintf("old %d", i)))
	}
	stop1()
	e1.Log(Tags{App: "web"}, []byte("old after Run")) // spooled by Close
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	if st := e1.Stats(); st.Acked != 0 || st.Dropped != 0 {
		t.Fatalf("first incarnation %+v", st)
	}
	sink := newMemSink("mem")
	running(t, "collector", g.collector(t, sink).Run)
	e2 := g.emitter(t, nil)
	if e2.ID() == e1.ID() {
		t.Fatal("two incarnations share an id")
	}
	e2.Log(Tags{App: "web"}, []byte("new 0"))
	running(t, "emitter 2", e2.Run)
	e2.Log(Tags{App: "web"}, []byte("new 1"))
	eventually(t, "all records", func() bool { return sink.count() == 3003 })
	for i, r := range sink.recs {
		want := fmt.Sprintf("old %d", i)
		switch {
		case i == 3000:
			want = "old after Run"
		case i > 3000:
			want = fmt.Sprintf("new %d", i-3001)
		}
		if string(r.Text) != want {
			t.Fatalf("record %d is %q, want %q", i, r.Text, want)
		}
	}
	eventually(t, "the spool emptied", func() bool { return !e2.Stats().SpoolPending })
}
