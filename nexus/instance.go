package nexus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"time"
)

// Sentinel errors; errors from this package wrap one of them (or a
// zmqloop or etcd error) with the failing input.
var (
	// ErrNotFound: Get found no live instance of that kind and id.
	ErrNotFound = errors.New("nexus: instance not found")
	// ErrInvalid: an instance, kind, id or configuration is malformed.
	ErrInvalid = errors.New("nexus: invalid")
	// ErrStaleMark: a heartbeat or goodbye is not newer than what the
	// resolver already holds for that instance (a replay, a reordered
	// message, or a message signed before the resolver started).
	ErrStaleMark = errors.New("nexus: heartbeat not newer than the one held")
)

// Limits on what an instance may carry, so that one announcement stays a
// small message and a kind of a thousand instances fits in one reply.
const (
	MaxEndpoints = 16
	MaxMeta      = 32
	MaxValueLen  = 512
)

// Instance is what a service announces about itself.
type Instance struct {
	// Kind is the service it is ("runner", "statsd"): 1-64 bytes of
	// [a-z0-9._-]. Queries ask by kind.
	Kind string `json:"kind"`
	// ID names the instance within its kind, stable across restarts (a
	// runner node's host name): 1-128 bytes of [A-Za-z0-9._:-].
	ID string `json:"id"`
	// Endpoints are its addresses by name ("http": "10.0.0.5:8080",
	// "rpc": "tcp://10.0.0.5:7000"); at most MaxEndpoints.
	Endpoints map[string]string `json:"endpoints,omitempty"`
	// Meta is free-form metadata (version, zone, capacity); at most
	// MaxMeta pairs.
	Meta map[string]string `json:"meta,omitempty"`
}

// State is how a resolver sees an instance.
type State string

const (
	// Alive: its heartbeats arrive.
	Alive State = "alive"
	// Suspect: it has missed heartbeats (none for SuspectAfter) but is
	// still within its grace period; it is still listed, so that a short
	// stall does not move its work, and users may prefer others.
	Suspect State = "suspect"
)

// Entry is an instance as a directory lists it.
type Entry struct {
	Instance
	State State `json:"state"`
	// Mark orders announcements of one instance: Incarnation is the
	// announcer's start (Unix ns), Seq counts its messages. A resolver
	// keeps the highest mark it has accepted per instance; on etcd,
	// Incarnation is the lease id and Seq the key's mod revision.
	Incarnation int64  `json:"inc"`
	Seq         uint64 `json:"seq"`
}

// Key returns "kind/id".
func (e Entry) Key() string { return e.Kind + "/" + e.ID }

func (i Instance) equal(o Instance) bool {
	return i.Kind == o.Kind && i.ID == o.ID && maps.Equal(i.Endpoints, o.Endpoints) && maps.Equal(i.Meta, o.Meta)
}

func (i Instance) clone() Instance {
	i.Endpoints = maps.Clone(i.Endpoints)
	i.Meta = maps.Clone(i.Meta)
	return i
}

func kindChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

func idChar(c byte) bool {
	return kindChar(c) || c >= 'A' && c <= 'Z' || c == ':'
}

// ValidKind reports whether kind is 1-64 bytes of [a-z0-9._-].
func ValidKind(kind string) bool { return validWith(kind, 64, kindChar) }

func validID(id string) bool { return validWith(id, 128, idChar) }

func validWith(s string, max int, ok func(byte) bool) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func checkKind(kind string) error {
	if !ValidKind(kind) {
		return fmt.Errorf("%w: kind %q: want 1-64 bytes of [a-z0-9._-]", ErrInvalid, kind)
	}
	return nil
}

// Validate reports what is wrong with the instance, or nil.
func (i Instance) Validate() error {
	if err := checkKind(i.Kind); err != nil {
		return err
	}
	if !validID(i.ID) {
		return fmt.Errorf("%w: instance id %q: want 1-128 bytes of [A-Za-z0-9._:-]", ErrInvalid, i.ID)
	}
	check := func(what string, m map[string]string, max int) error {
		if len(m) > max {
			return fmt.Errorf("%w: instance %s/%s: %d %s, at most %d", ErrInvalid, i.Kind, i.ID, len(m), what, max)
		}
		for k, v := range m {
			if !validWith(k, 64, idChar) || len(v) > MaxValueLen {
				return fmt.Errorf("%w: instance %s/%s: %s %q: name must be 1-64 bytes of [A-Za-z0-9._:-], value at most %d bytes",
					ErrInvalid, i.Kind, i.ID, what, k, MaxValueLen)
			}
		}
		return nil
	}
	if err := check("endpoints", i.Endpoints, MaxEndpoints); err != nil {
		return err
	}
	return check("meta", i.Meta, MaxMeta)
}

// EventType says what happened to an instance.
type EventType int

const (
	// Put: the instance appeared, or its endpoints, metadata or state
	// changed. Event.Entry is its new entry.
	Put EventType = iota + 1
	// Delete: the instance is gone (goodbye, or its grace period ran
	// out). Event.Entry holds its kind and id and its last entry.
	Delete
	// Sync: the watcher's view is complete: every instance known at the
	// time has had its Put. Sent once after the initial set and again
	// after the watcher had to resynchronise. Entry is empty.
	Sync
)

func (t EventType) String() string {
	switch t {
	case Put:
		return "put"
	case Delete:
		return "delete"
	case Sync:
		return "sync"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one change in a watched kind.
type Event struct {
	Type  EventType
	Entry Entry
}

// Directory is how a platform component finds others. The same interface
// is served by the resolver pair (NewClient) and by etcd (NewEtcd); Open
// picks one by configuration. Every method is safe for concurrent use.
type Directory interface {
	// Lookup returns the live instances of kind (alive and suspect),
	// sorted by id. An unknown kind has none: an empty list, no error.
	Lookup(ctx context.Context, kind string) ([]Entry, error)
	// Get returns one instance, or an error wrapping ErrNotFound.
	Get(ctx context.Context, kind, id string) (Entry, error)
	// Watch streams the changes of kind until ctx ends, when the channel
	// is closed: first a Put for every instance and a Sync, then each
	// change as it happens. Events are not dropped: a consumer that
	// stops reading stalls only its own watch. Errors talking to the
	// backend are retried (and logged) inside; the stream resynchronises
	// after them with the Puts and Deletes that bring it up to date and
	// another Sync.
	Watch(ctx context.Context, kind string) (<-chan Event, error)
	// Close releases the directory's connections. Watches end.
	Close() error
}

// Announcer keeps one instance announced while Run runs, and takes it
// back (a goodbye) when Run's ctx is cancelled. Run returns only once it
// has said goodbye (or given up after a short timeout) and released its
// connections.
type Announcer interface {
	Run(ctx context.Context) error
}

// Follow watches kind on d and calls fn with the whole current set of
// instances, sorted by id, once the watch has synced and after every burst
// of changes (events already waiting are applied together, so a resolver
// that resynchronises produces one call, not one per instance). fn runs on
// Follow's goroutine; it must not keep the slice. Follow returns ctx's
// error when ctx ends, or an error if the watch cannot start.
func Follow(ctx context.Context, d Directory, kind string, fn func([]Entry)) error {
	ch, err := d.Watch(ctx, kind)
	if err != nil {
		return err
	}
	set := map[string]Entry{}
	synced := false
	apply := func(ev Event) {
		switch ev.Type {
		case Put:
			set[ev.Entry.ID] = ev.Entry
		case Delete:
			delete(set, ev.Entry.ID)
		case Sync:
			synced = true
		}
	}
	for {
		ev, ok := <-ch
		if !ok {
			return ctx.Err()
		}
		apply(ev)
	drain:
		for {
			select {
			case ev, ok := <-ch:
				if !ok {
					return ctx.Err()
				}
				apply(ev)
			default:
				break drain
			}
		}
		if synced {
			fn(sortedEntries(set))
		}
	}
}

func sortedEntries(m map[string]Entry) []Entry {
	out := make([]Entry, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// newer reports whether mark (inc, seq) is above (inc0, seq0).
func newer(inc int64, seq uint64, inc0 int64, seq0 uint64) bool {
	return inc > inc0 || inc == inc0 && seq > seq0
}

// durationMS is a duration on the wire: integer milliseconds.
func durationMS(d time.Duration) int64 { return d.Milliseconds() }
