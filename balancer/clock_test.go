package balancer

import (
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/testclock"
)

// fakeClock is a Clock that moves only when the test says
// (internal/testclock). Its tickers deliver only on Tick, so a tick is
// taken only once the probe loop is back at its select: the previous
// probe round has finished.
type fakeClock struct{ *testclock.Clock }

func newFakeClock() *fakeClock { return &fakeClock{testclock.New()} }

func (c *fakeClock) NewTicker(d time.Duration) Ticker { return c.Clock.NewTicker(d) }

// probeRound runs one whole probe round: it ticks twice, so that the
// round the first tick began is over when it returns.
func (c *fakeClock) probeRound(t testing.TB) { t.Helper(); c.Round(t) }
