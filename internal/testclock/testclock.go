// Package testclock is a clock for tests that moves only when the test
// says, shared by the tests of the packages that take an injected clock
// (balancer, runner): each wraps it in a small adapter whose NewTimer and
// NewTicker return its own Timer and Ticker interfaces. It is imported
// only by tests: its waits fail the test they are given.
//
// Its timers fire when Advance moves the clock past them. Its tickers
// deliver only on Tick, on an unbuffered channel, so a tick is taken only
// once the loop that reads the ticker is back at its select: the round
// the previous tick began has finished. So Round (Tick, then Tick again)
// returns once one whole round has looked at the clock's present time.
package testclock

import (
	"sync"
	"testing"
	"time"
)

// Clock is the clock. Its methods may be called from any goroutine.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  map[*Timer]struct{} // pending
	tickers []*Ticker
	changed chan struct{} // closed and replaced when a timer or ticker is made
}

// Timer is a Clock's one-shot timer.
type Timer struct {
	clock *Clock
	c     chan time.Time
	at    time.Time
	d     time.Duration
}

// C delivers the time once the timer fires.
func (t *Timer) C() <-chan time.Time { return t.c }

// Stop turns the timer off and reports whether it was pending.
func (t *Timer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	_, pending := t.clock.timers[t]
	delete(t.clock.timers, t)
	return pending
}

// Ticker is a Clock's ticker.
type Ticker struct {
	c    chan time.Time
	stop chan struct{}
	once sync.Once
}

// C delivers the ticks.
func (t *Ticker) C() <-chan time.Time { return t.c }

// Stop turns the ticker off.
func (t *Ticker) Stop() { t.once.Do(func() { close(t.stop) }) }

// New returns a clock standing at 2026-01-01 00:00 UTC.
func New() *Clock {
	return &Clock{
		now:     time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		timers:  map[*Timer]struct{}{},
		changed: make(chan struct{}),
	}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires once the clock has moved d on (at
// once when d is not positive).
func (c *Clock) NewTimer(d time.Duration) *Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &Timer{clock: c, c: make(chan time.Time, 1), at: c.now.Add(d), d: d}
	if d <= 0 {
		t.c <- c.now
		return t
	}
	c.timers[t] = struct{}{}
	c.changedLocked()
	return t
}

// NewTicker returns a ticker that delivers only on Tick, whatever d.
func (c *Clock) NewTicker(time.Duration) *Ticker {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &Ticker{c: make(chan time.Time), stop: make(chan struct{})}
	c.tickers = append(c.tickers, t)
	c.changedLocked()
	return t
}

func (c *Clock) changedLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Advance moves the clock on by d and fires the timers it passes (no
// tick is delivered).
func (c *Clock) Advance(d time.Duration) {
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

// WaitTimer waits until a timer of duration d is pending: the code under
// test has begun the wait the test means to end.
func (c *Clock) WaitTimer(t testing.TB, d time.Duration) {
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

// Tick delivers one tick to the (one) live ticker, waiting for it to be
// made and for its loop to take the tick: that loop's previous round is
// then over.
func (c *Clock) Tick(t testing.TB) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		var live *Ticker
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

// Round runs one whole round of the ticker's loop at the clock's present
// time: it ticks twice, so that the round the first tick began is over
// when it returns.
func (c *Clock) Round(t testing.TB) {
	t.Helper()
	c.Tick(t)
	c.Tick(t)
}
