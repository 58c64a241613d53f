package runner_test

import (
	"sync"
	"testing"
	"time"

	"github.com/paaskit/paaskit/runner"
	"github.com/stretchr/testify/require"
)

// fakeClock is a runner.Clock that moves only when the test says. Its
// timers fire when advance moves the clock past them. Its ticker (Run's
// reap ticker) delivers only on tick, on an unbuffered channel, so a tick
// is taken only once Run is back at its select: the reap round the
// previous tick began has finished. So reapRound (tick, then tick again)
// returns once one whole round has looked at the clock's present time.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  map[*fakeTimer]struct{} // pending
	tickers []*fakeTicker
	changed chan struct{} // closed and replaced when a timer or ticker is made
}

type fakeTimer struct {
	clock *fakeClock
	c     chan time.Time
	at    time.Time
	d     time.Duration
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	_, pending := t.clock.timers[t]
	delete(t.clock.timers, t)
	return pending
}

type fakeTicker struct {
	c    chan time.Time
	stop chan struct{}
	once sync.Once
}

func (t *fakeTicker) C() <-chan time.Time { return t.c }
func (t *fakeTicker) Stop()               { t.once.Do(func() { close(t.stop) }) }

func newFakeClock() *fakeClock {
	return &fakeClock{
		now:     time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		timers:  map[*fakeTimer]struct{}{},
		changed: make(chan struct{}),
	}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) runner.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clock: c, c: make(chan time.Time, 1), at: c.now.Add(d), d: d}
	if d <= 0 {
		t.c <- c.now
		return t
	}
	c.timers[t] = struct{}{}
	c.changedLocked()
	return t
}

func (c *fakeClock) NewTicker(time.Duration) runner.Ticker {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTicker{c: make(chan time.Time), stop: make(chan struct{})}
	c.tickers = append(c.tickers, t)
	c.changedLocked()
	return t
}

func (c *fakeClock) changedLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// advance moves the clock on by d and fires the timers it passes (no
// tick is delivered).
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for t := range c.timers {
		if !t.at.After(c.now) {
			delete(c.timers, t)
			t.c <- c.now
		}
	}
}

// waitTimer waits until a timer of duration d is pending: the runner has
// begun the wait the test means to end (a start timeout, a stop grace).
func (c *fakeClock) waitTimer(t testing.TB, d time.Duration) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		changed := c.changed
		for tm := range c.timers {
			if tm.d == d {
				c.mu.Unlock()
				return
			}
		}
		c.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("fake clock: no %v timer made within 10s", d)
		}
	}
}

// tick delivers one tick to the (one) live ticker, waiting for it to be
// made and for Run to take the tick: Run's previous round is then over.
func (c *fakeClock) tick(t testing.TB) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		var live *fakeTicker
		for _, tk := range c.tickers {
			select {
			case <-tk.stop:
			default:
				live = tk
			}
		}
		now, changed := c.now, c.changed
		c.mu.Unlock()
		if live == nil {
			select {
			case <-changed:
				continue
			case <-deadline:
				t.Fatal("fake clock: no ticker made within 10s")
			}
		}
		select {
		case live.c <- now:
			return
		case <-live.stop:
		case <-deadline:
			t.Fatal("fake clock: tick not taken within 10s")
		}
	}
}

// reapRound runs one whole reap round (idle instances reaped, due
// restarts begun) at the clock's present time.
func (c *fakeClock) reapRound(t testing.TB) {
	t.Helper()
	c.tick(t)
	c.tick(t)
}

// waitIdle waits until app's instance has nothing in flight. The front
// lets go of an instance just after the client has the whole response, so
// a test that moves the clock to make an instance idle first waits for
// that: its idle time then runs from the clock's present time.
func (e *env) waitIdle(app string) {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		st := e.status(app)
		return st.Instance != nil && st.Instance.Ready && st.Instance.Active == 0
	}, 20*time.Second, time.Millisecond, "app %s still has requests in flight", app)
}
