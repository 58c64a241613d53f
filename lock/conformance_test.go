package lock

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestConformance holds every backend to the same contract. The backends
// run side by side, and so do the cases of each: every case works on a
// lock name of its own, and most of their time is spent waiting out TTLs
// on the backend's clock, which no injected clock can shorten (TestMain
// raises -test.parallel for that).
func TestConformance(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			conformance(t, b)
		})
	}
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func conformance(t *testing.T, b *backend) {
	name := func(t *testing.T) string { return "c-" + strings.ReplaceAll(t.Name(), "/", "-") }

	t.Run("AcquireHeldRelease", func(t *testing.T) {
		t.Parallel()
		ctx := ctxFor(t, 30*time.Second)
		a, c := b.newLocker(t, nil), b.newLocker(t, nil)
		n := name(t)
		l1, err := a.TryAcquire(ctx, n, b.ttl)
		require.NoError(t, err)
		require.NotZero(t, l1.Token)
		require.Equal(t, n, l1.Name)
		require.True(t, l1.Expires.After(time.Now()))
		_, err = c.TryAcquire(ctx, n, b.ttl)
		require.ErrorIs(t, err, ErrHeld)
		_, err = a.TryAcquire(ctx, n, b.ttl)
		require.ErrorIs(t, err, ErrHeld, "a second acquire by the same client is a different holder")
		require.NoError(t, a.Release(ctx, l1))
		require.ErrorIs(t, a.Release(ctx, l1), ErrNotHeld, "a second release")
		l2, err := c.TryAcquire(ctx, n, b.ttl)
		require.NoError(t, err)
		require.Greater(t, l2.Token, l1.Token)
		require.NoError(t, c.Release(ctx, l2))
	})

	t.Run("TokensIncreaseAcrossHolders", func(t *testing.T) {
		t.Parallel()
		ctx := ctxFor(t, 30*time.Second)
		lockers := []Locker{b.newLocker(t, nil), b.newLocker(t, nil), b.newLocker(t, nil)}
		n := name(t)
		var last uint64
		for i := 0; i < 9; i++ {
			l, err := lockers[i%3].Acquire(ctx, n, b.ttl)
			require.NoError(t, err)
			require.Greater(t, l.Token, last, "grant %d", i)
			last = l.Token
			require.NoError(t, lockers[i%3].Release(ctx, l))
		}
	})

	t.Run("NonHolderIsRefused", func(t *testing.T) {
		t.Parallel()
		ctx := ctxFor(t, 30*time.Second)
		a, c := b.newLocker(t, nil), b.newLocker(t, nil)
		n := name(t)
		l0, err := a.TryAcquire(ctx, n, b.ttl*4)
		require.NoError(t, err)
		require.NoError(t, a.Release(ctx, l0))
		l, err := a.TryAcquire(ctx, n, b.ttl*4)
		require.NoError(t, err)
		require.Greater(t, l.Token, uint64(1), "take one grant first so Token/2 is a valid older token")
		for _, forged := range []Lease{
			{Name: n, Token: l.Token, Holder: "someone-else", TTL: l.TTL, id: l.id},
			{Name: n, Token: l.Token + 1, Holder: l.Holder, TTL: l.TTL, id: l.id},
			{Name: n, Token: l.Token / 2, Holder: l.Holder, TTL: l.TTL, id: l.id},
			{Name: n + "-other", Token: l.Token, Holder: l.Holder, TTL: l.TTL, id: l.id},
		} {
			require.ErrorIs(t, c.Release(ctx, &forged), ErrNotHeld, "release of %v", &forged)
			require.ErrorIs(t, c.Renew(ctx, &forged), ErrNotHeld, "renew of %v", &forged)
		}
		_, err = c.TryAcquire(ctx, n, b.ttl)
		require.ErrorIs(t, err, ErrHeld, "the lease survives the forged releases")
		require.NoError(t, a.Release(ctx, l))
	})

	t.Run("PausedHolderIsFenced", func(t *testing.T) {
		t.Parallel()
		// A holder stops (a GC pause, SIGSTOP) past its lease; another
		// takes the lock and writes; the first wakes and writes: refused.
		ctx := ctxFor(t, 30*time.Second)
		a, c := b.newLocker(t, nil), b.newLocker(t, nil)
		n := name(t)
		fence := NewFence()
		la, err := a.Acquire(ctx, n, b.ttl)
		require.NoError(t, err)
		require.NoError(t, fence.Admit(n, la.Token))
		lc, err := c.Acquire(ctx, n, b.ttl) // waits out a's lease
		require.NoError(t, err)
		require.Greater(t, lc.Token, la.Token)
		require.NoError(t, fence.Admit(n, lc.Token))
		require.ErrorIs(t, fence.Admit(n, la.Token), ErrStaleToken, "the paused holder's late write")
		require.ErrorIs(t, a.Renew(ctx, la), ErrNotHeld)
		require.ErrorIs(t, a.Release(ctx, la), ErrNotHeld)
		require.NoError(t, c.Release(ctx, lc))
	})

	t.Run("RenewKeepsIt", func(t *testing.T) {
		t.Parallel()
		ctx := ctxFor(t, 30*time.Second)
		a, c := b.newLocker(t, nil), b.newLocker(t, nil)
		n := name(t)
		l, err := a.TryAcquire(ctx, n, b.ttl)
		require.NoError(t, err)
		first := l.Expires
		for i := 0; i < 5; i++ {
			time.Sleep(b.ttl / 4)
			require.NoError(t, a.Renew(ctx, l))
			_, err := c.TryAcquire(ctx, n, b.ttl)
			require.ErrorIs(t, err, ErrHeld, "after renewal %d", i)
		}
		require.True(t, l.Expires.After(first), "Renew moves Expires")
		require.NoError(t, a.Release(ctx, l))
	})

	t.Run("BlockingAcquire", func(t *testing.T) {
		t.Parallel()
		ctx := ctxFor(t, 30*time.Second)
		a, c := b.newLocker(t, nil), b.newLocker(t, nil)
		n := name(t)
		l, err := a.TryAcquire(ctx, n, 10*b.ttl)
		require.NoError(t, err)
		short, cancel := context.WithTimeout(ctx, b.ttl/2)
		_, err = c.Acquire(short, n, b.ttl)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "Acquire gives up with its ctx")
		got := make(chan *Lease, 1)
		go func() {
			l, err := c.Acquire(ctx, n, b.ttl)
			if err != nil {
				t.Error(err)
			}
			got <- l
		}()
		time.Sleep(b.ttl / 4)
		require.NoError(t, a.Release(ctx, l))
		l2 := <-got
		require.NotNil(t, l2)
		require.Greater(t, l2.Token, l.Token)
		require.NoError(t, c.Release(ctx, l2))
	})

	t.Run("BadInput", func(t *testing.T) {
		t.Parallel()
		ctx := ctxFor(t, 30*time.Second)
		a := b.newLocker(t, nil)
		for _, n := range []string{"", strings.Repeat("x", MaxNameLen+1), "a\nb", "a\x00b", "\xff\xfe"} {
			_, err := a.TryAcquire(ctx, n, b.ttl)
			require.ErrorIs(t, err, ErrInvalid, "name %q", n)
			_, err = a.Acquire(ctx, n, b.ttl)
			require.ErrorIs(t, err, ErrInvalid, "name %q", n)
		}
		for _, ttl := range []time.Duration{0, -time.Second, time.Millisecond, MaxTTL + 1} {
			_, err := a.TryAcquire(ctx, "bad-ttl", ttl)
			require.ErrorIs(t, err, ErrInvalid, "ttl %v", ttl)
		}
		for _, l := range []*Lease{nil, {}, {Name: "x", Holder: "h", TTL: time.Second}, {Name: "x", Token: 1, TTL: time.Second}} {
			require.ErrorIs(t, a.Renew(ctx, l), ErrInvalid, "%v", l)
			require.ErrorIs(t, a.Release(ctx, l), ErrInvalid, "%v", l)
		}
	})

	t.Run("HoldRunsAndReleases", func(t *testing.T) {
		t.Parallel()
		ctx := ctxFor(t, 30*time.Second)
		a, c := b.newLocker(t, nil), b.newLocker(t, nil)
		n := name(t)
		var token uint64
		err := Hold(ctx, a, n, HoldOptions{TTL: b.ttl}, func(ctx context.Context, l Lease) error {
			// t.Errorf, not require: the job runs on a goroutine of Hold's,
			// and a FailNow there ends it without Hold ever hearing back
			// (the test then hung for 6 minutes in CI 22:46).
			token = l.Token
			if _, err := c.TryAcquire(ctx, n, b.ttl); !errors.Is(err, ErrHeld) {
				t.Errorf("another client got the held lock: %v", err)
			}
			time.Sleep(b.ttl) // renewals keep it across its TTL
			if _, err := c.TryAcquire(ctx, n, b.ttl); !errors.Is(err, ErrHeld) {
				t.Errorf("after a TTL, another client got the held lock: %v", err)
			}
			return nil
		})
		require.NoError(t, err)
		require.NotZero(t, token)
		l, err := c.TryAcquire(ctx, n, b.ttl)
		require.NoError(t, err, "Hold released the lease")
		require.NoError(t, c.Release(ctx, l))
	})

	t.Run("HoldRetriesAFailedRenewalSoon", func(t *testing.T) {
		t.Parallel()
		ctx := ctxFor(t, 30*time.Second)
		// The first renewal, at TTL/2, fails as a dropped connection would.
		// Hold must try again well before the next RenewEvery: that one
		// (at TTL) would come after the deadline (TTL less Margin) and the
		// job would be stopped with its lease still good.
		a := &failingRenewals{Locker: b.newLocker(t, nil)}
		a.left.Store(1)
		c := b.newLocker(t, nil)
		n := name(t)
		err := Hold(ctx, a, n, HoldOptions{TTL: b.ttl, RenewEvery: b.ttl / 2}, func(jctx context.Context, l Lease) error {
			time.Sleep(b.ttl)
			if _, err := c.TryAcquire(ctx, n, b.ttl); !errors.Is(err, ErrHeld) {
				t.Errorf("after a TTL with one failed renewal, another client got the lock: %v", err)
			}
			return context.Cause(jctx)
		})
		require.NoError(t, err)
		require.GreaterOrEqual(t, a.calls.Load(), int32(2), "renewals tried")
	})

	t.Run("HoldStopsOnLoss", func(t *testing.T) {
		t.Parallel()
		ctx := ctxFor(t, 30*time.Second)
		a := b.newLocker(t, nil)
		n := name(t)
		var stopped atomic.Bool
		err := Hold(ctx, a, n, HoldOptions{TTL: b.ttl}, func(jctx context.Context, l Lease) error {
			b.breakLease(t, &l)
			<-jctx.Done()
			stopped.Store(true)
			require.ErrorIs(t, context.Cause(jctx), ErrLeaseLost)
			return jctx.Err()
		})
		require.ErrorIs(t, err, ErrLeaseLost)
		require.True(t, stopped.Load())
	})

	t.Run("HoldCommandKillsChild", func(t *testing.T) {
		t.Parallel()
		ctx := ctxFor(t, 30*time.Second)
		a := b.newLocker(t, nil)
		n := name(t)
		dir := t.TempDir()
		pidFile := filepath.Join(dir, "pid")
		// A shell whose own child would outlive a kill of the shell alone.
		cmd := exec.Command("sh", "-c", `sleep 600 & echo $! > `+pidFile+`.tmp; mv `+pidFile+`.tmp `+pidFile+`; wait`)
		errc := make(chan error, 1)
		go func() { errc <- HoldCommand(ctx, a, n, HoldOptions{TTL: b.ttl}, cmd) }()
		var pid int
		require.Eventually(t, func() bool {
			raw, err := os.ReadFile(pidFile)
			if err != nil {
				return false
			}
			pid, err = strconv.Atoi(strings.TrimSpace(string(raw)))
			return err == nil
		}, 20*time.Second, 5*time.Millisecond)
		c := b.newLocker(t, nil)
		_, err := c.TryAcquire(ctx, n, b.ttl)
		require.ErrorIs(t, err, ErrHeld)
		// The lease is taken away on the server: the next renewal fails.
		b.breakLease(t, &Lease{Name: n})
		err = <-errc
		require.ErrorIs(t, err, ErrLeaseLost)
		require.Eventually(t, func() bool {
			return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) || isZombie(pid)
		}, 10*time.Second, 5*time.Millisecond, "the job's child (sleep, pid %d) was killed with its group", pid)
	})

	t.Run("ClientClockJumps", func(t *testing.T) {
		t.Parallel()
		// Expiry is the backend's, on its clock: a client whose clock
		// jumps neither keeps a lease longer nor loses its safety. Its own
		// Expires moves with its clock; Hold stops early when it jumps
		// forward, which is the safe side.
		ctx := ctxFor(t, 30*time.Second)
		var skew atomic.Int64
		jumpy := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
		a, c := b.newLocker(t, jumpy), b.newLocker(t, nil)
		n := name(t)
		skew.Store(int64(-time.Hour))
		l, err := a.TryAcquire(ctx, n, b.ttl)
		require.NoError(t, err)
		skew.Store(int64(time.Hour))
		require.NoError(t, a.Renew(ctx, l))
		skew.Store(int64(-2 * time.Hour)) // now the lease looks valid for 2h to its holder
		lc, err := c.Acquire(ctx, n, b.ttl)
		require.NoError(t, err, "the lease expired on the backend's clock")
		require.Greater(t, lc.Token, l.Token)
		require.ErrorIs(t, a.Renew(ctx, l), ErrNotHeld)
		require.NoError(t, c.Release(ctx, lc))

		// Hold on a client whose clock is an hour off the backend's works
		// as on a true one: its deadline is reckoned in durations between
		// readings of its own clock, and expiry is the backend's. (With
		// time.Now those readings are monotonic, so a jump of the wall
		// clock mid-operation does not reach them at all.)
		skew.Store(int64(time.Hour))
		err = Hold(ctx, a, n, HoldOptions{TTL: b.ttl, Now: jumpy}, func(jctx context.Context, l Lease) error {
			for i := 0; i < 6; i++ {
				time.Sleep(b.ttl / 3)
				if lc, err := c.TryAcquire(ctx, n, b.ttl); !errors.Is(err, ErrHeld) {
					t.Errorf("step %d: another client got the lock: %v", i, err)
					if lc != nil {
						_ = c.Release(ctx, lc)
					}
				}
			}
			return jctx.Err()
		})
		require.NoError(t, err)
	})
}

// isZombie reports whether pid has exited but not been reaped (its parent,
// the killed shell, is gone too, so init reaps it soon).
func isZombie(pid int) bool {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(raw))
	return len(f) > 2 && f[2] == "Z"
}

// failingRenewals fails its Locker's next left Renew calls with an error
// that is not ErrNotHeld, as a dropped connection does.
type failingRenewals struct {
	Locker
	left, calls atomic.Int32
}

func (f *failingRenewals) Renew(ctx context.Context, l *Lease) error {
	f.calls.Add(1)
	if f.left.Add(-1) >= 0 {
		return errors.New("connection reset (injected)")
	}
	return f.Locker.Renew(ctx, l)
}
