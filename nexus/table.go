package nexus

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"
)

// table is a resolver's state: instances by kind, with the highest mark
// accepted per instance, tombstones for instances that left, and per kind
// a numbered log of recent changes for watchers. It has no sockets and no
// clock of its own (callers pass now), so it is tested directly. It is
// safe for concurrent use under its one mutex.
type table struct {
	suspectAfter time.Duration
	grace        time.Duration
	tombstoneTTL time.Duration
	logSize      int
	epoch        string

	mu    sync.Mutex
	kinds map[string]*kindTable
	live  int
}

type kindTable struct {
	recs    map[string]*record
	live    int
	seq     uint64   // number of the last change
	log     []change // the last changes, in order, at most logSize
	changed chan struct{}
	cache   []byte // encoded lookup body, nil when stale
}

type record struct {
	entry  Entry
	last   time.Time // when its last heartbeat arrived
	gone   bool      // a tombstone: it said goodbye or was dropped
	goneAt time.Time
}

type change struct {
	Seq   uint64 `json:"n"`
	Type  string `json:"t"` // "put" or "delete"
	Entry Entry  `json:"e"`
}

func newTable(suspectAfter, grace, tombstoneTTL time.Duration, logSize int, epoch string) *table {
	return &table{suspectAfter: suspectAfter, grace: grace, tombstoneTTL: tombstoneTTL, logSize: logSize,
		epoch: epoch, kinds: map[string]*kindTable{}}
}

func (t *table) kind(kind string) *kindTable {
	k := t.kinds[kind]
	if k == nil {
		k = &kindTable{recs: map[string]*record{}, changed: make(chan struct{})}
		t.kinds[kind] = k
	}
	return k
}

// record appends a change to k's log and wakes its watchers (t.mu held).
func (t *table) record(k *kindTable, typ EventType, e Entry) {
	k.seq++
	c := change{Seq: k.seq, Type: typ.String(), Entry: e}
	if len(k.log) >= t.logSize {
		// Keep the newer half: amortised O(1) per change.
		k.log = append(k.log[:0], k.log[len(k.log)-t.logSize/2:]...)
	}
	k.log = append(k.log, c)
	k.cache = nil
	close(k.changed)
	k.changed = make(chan struct{})
}

// beat applies a heartbeat received at now. It refuses (ErrStaleMark) one
// whose mark is not above the one held, tombstones included, so a replayed
// or reordered heartbeat never revives an instance that said goodbye.
func (t *table) beat(in Instance, inc int64, seq uint64, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.kind(in.Kind)
	r := k.recs[in.ID]
	if r != nil && !newer(inc, seq, r.entry.Incarnation, r.entry.Seq) {
		return fmt.Errorf("%w: heartbeat of %s/%s mark %d.%d, held %d.%d",
			ErrStaleMark, in.Kind, in.ID, inc, seq, r.entry.Incarnation, r.entry.Seq)
	}
	e := Entry{Instance: in, State: Alive, Incarnation: inc, Seq: seq}
	if r == nil || r.gone {
		if r == nil {
			r = &record{}
			k.recs[in.ID] = r
		}
		r.gone = false
		r.entry, r.last = e, now
		k.live++
		t.live++
		t.record(k, Put, e)
		return nil
	}
	changed := r.entry.State != Alive || r.entry.Incarnation != inc || !r.entry.Instance.equal(in)
	r.entry, r.last = e, now
	if changed {
		t.record(k, Put, e)
	}
	return nil
}

// bye applies a goodbye: the instance leaves at once, and a tombstone
// keeps its mark so that earlier heartbeats stay refused.
func (t *table) bye(kind, id string, inc int64, seq uint64, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.kind(kind)
	r := k.recs[id]
	if r != nil && !newer(inc, seq, r.entry.Incarnation, r.entry.Seq) {
		return fmt.Errorf("%w: goodbye of %s/%s mark %d.%d, held %d.%d",
			ErrStaleMark, kind, id, inc, seq, r.entry.Incarnation, r.entry.Seq)
	}
	if r == nil {
		r = &record{entry: Entry{Instance: Instance{Kind: kind, ID: id}}, gone: true}
		k.recs[id] = r
	} else if !r.gone {
		t.drop(k, r)
	}
	r.entry.Incarnation, r.entry.Seq = inc, seq
	r.goneAt = now
	return nil
}

func (t *table) drop(k *kindTable, r *record) {
	r.gone = true
	k.live--
	t.live--
	t.record(k, Delete, r.entry)
}

// sweep marks instances suspect after SuspectAfter without a heartbeat,
// drops them after SuspectAfter+Grace, and forgets tombstones older than
// tombstoneTTL (by then the codec's window refuses what they guarded
// against).
func (t *table) sweep(now time.Time) (suspected, dropped int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	// A kind is never removed, even when empty: its change numbers must
	// not restart while watchers follow it.
	for _, k := range t.kinds {
		for id, r := range k.recs {
			if r.gone {
				if now.Sub(r.goneAt) >= t.tombstoneTTL {
					delete(k.recs, id)
				}
				continue
			}
			quiet := now.Sub(r.last)
			switch {
			case quiet >= t.suspectAfter+t.grace:
				t.drop(k, r)
				r.goneAt = now
				dropped++
			case quiet >= t.suspectAfter && r.entry.State == Alive:
				r.entry.State = Suspect
				t.record(k, Put, r.entry)
				suspected++
			}
		}
	}
	return suspected, dropped
}

// lookup returns the live entries of kind, sorted by id.
func (t *table) lookup(kind string) []Entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.kinds[kind]
	if k == nil {
		return []Entry{}
	}
	return k.entries()
}

func (k *kindTable) entries() []Entry {
	out := make([]Entry, 0, k.live)
	for _, r := range k.recs {
		if !r.gone {
			out = append(out, r.entry)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// lookupJSON returns kind's entries encoded as a JSON array and the
// kind's change number; the encoding is cached until the kind changes, so
// a heartbeat that changes nothing keeps lookups at the cost of a copy.
func (t *table) lookupJSON(kind string) ([]byte, uint64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.kinds[kind]
	if k == nil {
		return []byte("[]"), 0, nil
	}
	if k.cache == nil {
		b, err := json.Marshal(k.entries())
		if err != nil {
			return nil, 0, fmt.Errorf("nexus: encode kind %q: %w", kind, err)
		}
		k.cache = b
	}
	return k.cache, k.seq, nil
}

func (t *table) get(kind, id string) (Entry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if k := t.kinds[kind]; k != nil {
		if r := k.recs[id]; r != nil && !r.gone {
			return r.entry, true
		}
	}
	return Entry{}, false
}

// watchReply is the answer to a watch request: either the changes after
// the watcher's change number, or (Reset) the whole current set.
type watchReply struct {
	Epoch   string   `json:"epoch"`
	Seq     uint64   `json:"seq"`
	Reset   bool     `json:"reset,omitempty"`
	Entries []Entry  `json:"entries,omitempty"`
	Changes []change `json:"changes,omitempty"`
	Warm    bool     `json:"warm"`
}

// changesSince returns what a watcher that has seen kind up to change
// number since (of this table's epoch) is missing, and a channel closed at
// kind's next change. A watcher of another epoch, or too far behind for
// the log, gets a reset.
func (t *table) changesSince(kind, epoch string, since uint64, max int) (watchReply, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.kind(kind)
	rep := watchReply{Epoch: t.epoch, Seq: k.seq}
	oldest := k.seq + 1
	if len(k.log) > 0 {
		oldest = k.log[0].Seq
	}
	if epoch != t.epoch || since > k.seq || since+1 < oldest {
		rep.Reset = true
		rep.Entries = k.entries()
		return rep, k.changed
	}
	for s := since + 1; s <= k.seq && len(rep.Changes) < max; s++ {
		rep.Changes = append(rep.Changes, k.log[s-oldest])
	}
	if n := len(rep.Changes); n > 0 {
		rep.Seq = rep.Changes[n-1].Seq
	}
	return rep, k.changed
}

func (t *table) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.live
}
