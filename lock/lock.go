package lock

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"
)

// Sentinel errors. Errors from this package wrap one of these (or a
// backend's own error) with the name and token involved; test them with
// errors.Is.
var (
	// ErrHeld: TryAcquire found the name held by another lease.
	ErrHeld = errors.New("lock: held by another holder")
	// ErrNotHeld: Renew or Release named a lease that is not the current
	// one for its name: it expired, was released, or never belonged to the
	// caller (a release by a non-holder is refused with it).
	ErrNotHeld = errors.New("lock: lease not held")
	// ErrLeaseLost: Hold's function was stopped because its lease could no
	// longer be renewed.
	ErrLeaseLost = errors.New("lock: lease lost")
	// ErrStaleToken: a Fence refused a token lower than one it already
	// accepted.
	ErrStaleToken = errors.New("lock: stale fencing token")
	// ErrInvalid: a name, TTL or lease is malformed.
	ErrInvalid = errors.New("lock: invalid argument")
	// ErrClosed: the Locker was closed.
	ErrClosed = errors.New("lock: closed")
)

// Bounds on what every backend accepts.
const (
	// MaxNameLen is the longest lock name, in bytes.
	MaxNameLen = 200
	// MinTTL and MaxTTL bound a lease's time to live. A backend may round
	// the TTL up (etcd grants whole seconds); Lease.TTL says what was
	// granted.
	MinTTL = 10 * time.Millisecond
	MaxTTL = 24 * time.Hour
)

// Locker grants named leases with fencing tokens. Every backend in this
// package implements it, and all are held to the same conformance tests.
// A Locker is safe for concurrent use.
//
// A lease is granted to one holder at a time per name, until it expires
// (its TTL after the backend granted or last renewed it, on the backend's
// clock) or is released. Each grant carries a token that is larger than
// the token of every earlier grant of that name, across all holders and
// every failover of the backend, so a storage system that remembers the
// largest token it has seen (see Fence) can refuse a write from a holder
// whose lease ran out while it was paused.
type Locker interface {
	// TryAcquire asks once for the lease on name for ttl. It returns
	// ErrHeld (wrapped) at once if another lease holds the name.
	TryAcquire(ctx context.Context, name string, ttl time.Duration) (*Lease, error)
	// Acquire waits until it gets the lease on name, or ctx is done.
	Acquire(ctx context.Context, name string, ttl time.Duration) (*Lease, error)
	// Renew extends the lease by its TTL from now and updates its
	// Expires. ErrNotHeld means the lease is gone: stop using it.
	Renew(ctx context.Context, l *Lease) error
	// Release gives the lease up. Releasing a lease that is not the
	// current one for its name (expired, already released, or someone
	// else's) fails with ErrNotHeld and changes nothing.
	Release(ctx context.Context, l *Lease) error
	// Close releases the Locker's connections. Leases still held expire
	// on their own.
	Close() error
}

// Lease is one grant of a name.
type Lease struct {
	// Name is the lock's name.
	Name string
	// Token is the fencing token: larger than every earlier grant's of
	// this name. Pass it along with every write the lease protects.
	Token uint64
	// Holder identifies this grant (random per Acquire). Together with
	// Token it is what Renew and Release present to the backend.
	Holder string
	// TTL is the granted time to live.
	TTL time.Duration
	// Expires is when, by the holder's own clock, the lease must be taken
	// as lost unless renewed: TTL after the request that granted (or
	// last renewed) it was sent, so it errs early, never late, whatever
	// the network delay. It is measured on the monotonic clock when the
	// Locker's clock is time.Now, so a jump of the wall clock moves it
	// with the wall clock but does not change the backend's expiry.
	Expires time.Time

	// id is the backend's own handle for the grant (etcd's lease id).
	id int64
}

// String describes the lease for logs.
func (l *Lease) String() string {
	if l == nil {
		return "<nil lease>"
	}
	return fmt.Sprintf("lease %q token %d holder %s", l.Name, l.Token, l.Holder)
}

// checkName validates a lock name: 1 to MaxNameLen bytes of UTF-8 without
// control characters (they would be ambiguous in keys and logs).
func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty lock name", ErrInvalid)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: lock name of %d bytes (at most %d)", ErrInvalid, len(name), MaxNameLen)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: lock name %q is not UTF-8", ErrInvalid, name)
	}
	if strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("%w: lock name %q has control characters", ErrInvalid, name)
	}
	return nil
}

func checkTTL(ttl time.Duration) error {
	if ttl < MinTTL || ttl > MaxTTL {
		return fmt.Errorf("%w: TTL %v outside [%v, %v]", ErrInvalid, ttl, MinTTL, MaxTTL)
	}
	return nil
}

func checkRequest(name string, ttl time.Duration) error {
	if err := checkName(name); err != nil {
		return err
	}
	return checkTTL(ttl)
}

func checkLease(l *Lease) error {
	if l == nil {
		return fmt.Errorf("%w: nil lease", ErrInvalid)
	}
	if err := checkName(l.Name); err != nil {
		return err
	}
	if l.Token == 0 || l.Holder == "" {
		return fmt.Errorf("%w: %v has no token or holder", ErrInvalid, l)
	}
	return checkTTL(l.TTL)
}

// randomID returns a fresh random id (96 bits, hex): a holder, a
// process incarnation, a Release call.
func randomID() string {
	var b [12]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Clock is the time source a Locker uses for Lease.Expires. nil means
// time.Now. Tests inject one to make the client's clock jump.
type Clock func() time.Time

func (c Clock) now() time.Time {
	if c == nil {
		return time.Now()
	}
	return c()
}

// Retry bounds how often a blocking Acquire asks again while the name is
// held: it starts at RetryMin and doubles, with jitter, up to RetryMax.
const (
	RetryMin = 5 * time.Millisecond
	RetryMax = 200 * time.Millisecond
)

// acquireLoop calls try until it succeeds, fails with something other than
// ErrHeld, or ctx is done. Transient backend errors (a dropped connection)
// are retried too: a blocking Acquire is meant to ride out a failover.
func acquireLoop(ctx context.Context, name string, try func(ctx context.Context) (*Lease, error)) (*Lease, error) {
	wait := RetryMin
	for {
		l, err := try(ctx)
		if err == nil {
			return l, nil
		}
		if errors.Is(err, ErrInvalid) || errors.Is(err, ErrClosed) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("lock: acquire %q: %w (last: %v)", name, ctx.Err(), err)
		}
		d := wait/2 + rand.N(wait/2+1)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("lock: acquire %q: %w (last: %v)", name, ctx.Err(), err)
		case <-t.C:
		}
		if wait *= 2; wait > RetryMax {
			wait = RetryMax
		}
	}
}
