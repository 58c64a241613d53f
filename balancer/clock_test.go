package balancer

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock that moves only when the test says. Its tickers
// deliver only on tick, on an unbuffered channel, so a tick is taken only
// once the probe loop is back at its select: the previous probe round has
// finished. So tick, then tick again, and the round the first began is
// over (the second begins another, which finds the same state).
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	tickers []*fakeTicker
	added   chan struct{} // closed and replaced when a ticker is made
}

type fakeTicker struct {
	c    chan time.Time
	stop chan struct{}
	once sync.Once
}

func (t *fakeTicker) C() <-chan time.Time { return t.c }
func (t *fakeTicker) Stop()               { t.once.Do(func() { close(t.stop) }) }

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), added: make(chan struct{})}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTicker(time.Duration) Ticker {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTicker{c: make(chan time.Time), stop: make(chan struct{})}
	c.tickers = append(c.tickers, t)
	close(c.added)
	c.added = make(chan struct{})
	return t
}

// advance moves the clock on by d (no tick is delivered).
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// tick delivers one tick to the (one) live ticker, waiting for it to be
// made and for its loop to take the tick: that loop's previous round is
// then over.
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
		now, added := c.now, c.added
		c.mu.Unlock()
		if live == nil {
			select {
			case <-added:
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

// probeRound runs one whole probe round: it ticks twice, so that the
// round the first tick began is over when it returns.
func (c *fakeClock) probeRound(t testing.TB) {
	t.Helper()
	c.tick(t)
	c.tick(t)
}
