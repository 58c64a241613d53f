package nexus

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func runnerInst(id string) Instance {
	return Instance{Kind: "runner", ID: id, Endpoints: map[string]string{"http": "127.0.0.1:1"}}
}

// Suspicion after SuspectAfter without a beat, a drop after a further
// Grace, and a beat in between bringing it back: all on a fake clock.
func TestTableSuspectAndGrace(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	tab := newTable(3*time.Second, 5*time.Second, 40*time.Second, 16, "e1")
	require.NoError(t, tab.beat(runnerInst("a"), 1, 1, t0))
	require.NoError(t, tab.beat(runnerInst("b"), 1, 1, t0))

	s, d := tab.sweep(t0.Add(2999 * time.Millisecond))
	require.Equal(t, [2]int{0, 0}, [2]int{s, d})
	require.NoError(t, tab.beat(runnerInst("b"), 1, 2, t0.Add(2*time.Second)))
	s, d = tab.sweep(t0.Add(3 * time.Second))
	require.Equal(t, [2]int{1, 0}, [2]int{s, d}, "a is suspect, b beat in time")
	a, ok := tab.get("runner", "a")
	require.True(t, ok)
	require.Equal(t, Suspect, a.State)
	require.Equal(t, []string{"a", "b"}, ids(tab.lookup("runner")), "a suspect instance is still listed")

	// A beat brings a suspect back to alive.
	require.NoError(t, tab.beat(runnerInst("a"), 1, 2, t0.Add(4*time.Second)))
	a, _ = tab.get("runner", "a")
	require.Equal(t, Alive, a.State)

	// b goes silent: suspect at 2s+3s, dropped at 2s+3s+5s.
	tab.sweep(t0.Add(5 * time.Second))
	b, _ := tab.get("runner", "b")
	require.Equal(t, Suspect, b.State)
	require.NoError(t, tab.beat(runnerInst("a"), 1, 3, t0.Add(9*time.Second)))
	_, d = tab.sweep(t0.Add(9999 * time.Millisecond))
	require.Zero(t, d)
	_, d = tab.sweep(t0.Add(10 * time.Second))
	require.Equal(t, 1, d)
	require.Equal(t, []string{"a"}, ids(tab.lookup("runner")))
	require.Equal(t, 1, tab.size())

	// After its drop a replayed old beat of b is still refused; a new
	// incarnation is accepted.
	require.ErrorIs(t, tab.beat(runnerInst("b"), 1, 2, t0.Add(11*time.Second)), ErrStaleMark)
	require.NoError(t, tab.beat(runnerInst("b"), 2, 1, t0.Add(11*time.Second)))
	require.Equal(t, []string{"a", "b"}, ids(tab.lookup("runner")))
}

// Marks: an equal or older heartbeat is refused; a goodbye leaves a
// tombstone that refuses the heartbeats before it, until the tombstone
// has outlived the codec's window.
func TestTableMarksAndTombstones(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	tab := newTable(time.Second, time.Second, 30*time.Second, 16, "e1")
	require.NoError(t, tab.beat(runnerInst("a"), 5, 10, t0))
	for _, m := range [][2]int64{{5, 10}, {5, 9}, {4, 99}} {
		err := tab.beat(runnerInst("a"), m[0], uint64(m[1]), t0)
		require.True(t, errors.Is(err, ErrStaleMark), "mark %v: %v", m, err)
	}
	require.ErrorIs(t, tab.bye("runner", "a", 5, 10, t0), ErrStaleMark, "a goodbye must be newer too")
	require.NoError(t, tab.bye("runner", "a", 5, 11, t0))
	require.Empty(t, tab.lookup("runner"))
	require.ErrorIs(t, tab.beat(runnerInst("a"), 5, 10, t0), ErrStaleMark, "a beat from before the goodbye")

	// A goodbye for an instance never seen leaves a tombstone too.
	require.NoError(t, tab.bye("runner", "x", 7, 3, t0))
	require.ErrorIs(t, tab.beat(runnerInst("x"), 7, 2, t0), ErrStaleMark)
	require.Empty(t, tab.lookup("runner"))

	tab.sweep(t0.Add(30 * time.Second))
	require.NoError(t, tab.beat(runnerInst("x"), 7, 1, t0.Add(31*time.Second)), "tombstone forgotten after its TTL")
}

// The change log: a watcher gets exactly the changes after its number, a
// reset when it is of another epoch or too far behind, and a heartbeat
// that changes nothing logs nothing.
func TestTableChangeLog(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	tab := newTable(time.Second, time.Second, 30*time.Second, 8, "e1")
	rep, _ := tab.changesSince("runner", "", 0, 100)
	require.True(t, rep.Reset)
	require.Empty(t, rep.Entries)
	require.NoError(t, tab.beat(runnerInst("a"), 1, 1, t0))
	require.NoError(t, tab.beat(runnerInst("a"), 1, 2, t0)) // same content: no change
	in := runnerInst("a")
	in.Meta = map[string]string{"v": "2"}
	require.NoError(t, tab.beat(in, 1, 3, t0))
	require.NoError(t, tab.bye("runner", "a", 1, 4, t0))
	rep, changed := tab.changesSince("runner", "e1", 0, 100)
	require.False(t, rep.Reset)
	require.Len(t, rep.Changes, 3)
	require.Equal(t, []string{"put", "put", "delete"}, []string{rep.Changes[0].Type, rep.Changes[1].Type, rep.Changes[2].Type})
	require.Equal(t, uint64(3), rep.Seq)
	rep, _ = tab.changesSince("runner", "e1", 2, 100)
	require.Len(t, rep.Changes, 1)

	select {
	case <-changed:
		t.Fatal("changed fired without a change")
	default:
	}
	require.NoError(t, tab.beat(runnerInst("b"), 1, 1, t0))
	select {
	case <-changed:
	default:
		t.Fatal("a change did not wake the watcher")
	}

	for i := 2; i < 30; i++ {
		require.NoError(t, tab.bye("runner", "b", int64(i-1), 2, t0))
		require.NoError(t, tab.beat(runnerInst("b"), int64(i), 1, t0))
	}
	rep, _ = tab.changesSince("runner", "e1", 3, 100)
	require.True(t, rep.Reset, "too far behind the log")
	require.Equal(t, []string{"b"}, ids(rep.Entries))
	rep, _ = tab.changesSince("runner", "other-epoch", rep.Seq, 100)
	require.True(t, rep.Reset, "another epoch")
	rep, _ = tab.changesSince("runner", "e1", rep.Seq+5, 100)
	require.True(t, rep.Reset, "a number from the future")
}

func TestInstanceValidate(t *testing.T) {
	long := string(make([]byte, MaxValueLen+1))
	many := map[string]string{}
	for i := 0; i < MaxEndpoints+1; i++ {
		many[string(rune('a'+i))] = "x"
	}
	for name, in := range map[string]Instance{
		"empty kind":        {ID: "a"},
		"upper-case kind":   {Kind: "Runner", ID: "a"},
		"kind with slash":   {Kind: "run/ner", ID: "a"},
		"empty id":          {Kind: "runner"},
		"id with slash":     {Kind: "runner", ID: "a/b"},
		"id with space":     {Kind: "runner", ID: "a b"},
		"long value":        {Kind: "runner", ID: "a", Meta: map[string]string{"k": long}},
		"bad endpoint name": {Kind: "runner", ID: "a", Endpoints: map[string]string{"": "x"}},
		"too many":          {Kind: "runner", ID: "a", Endpoints: many},
	} {
		require.ErrorIs(t, in.Validate(), ErrInvalid, name)
	}
	require.NoError(t, Instance{Kind: "runner", ID: "node-1.example:7", Endpoints: map[string]string{"http": "h:1"}}.Validate())
}
