package runner_test

import (
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/testclock"
	"github.com/paaskit/paaskit/runner"
	"github.com/stretchr/testify/require"
)

// fakeClock is a runner.Clock that moves only when the test says
// (internal/testclock). Its timers fire when Advance moves the clock past
// them. Its ticker (Run's reap ticker) delivers only on Tick, so a tick
// is taken only once Run is back at its select: the reap round the
// previous tick began has finished.
type fakeClock struct{ *testclock.Clock }

func newFakeClock() *fakeClock { return &fakeClock{testclock.New()} }

func (c *fakeClock) NewTimer(d time.Duration) runner.Timer   { return c.Clock.NewTimer(d) }
func (c *fakeClock) NewTicker(d time.Duration) runner.Ticker { return c.Clock.NewTicker(d) }

// reapRound runs one whole reap round (idle instances reaped, due
// restarts begun) at the clock's present time.
func (c *fakeClock) reapRound(t testing.TB) { t.Helper(); c.Round(t) }

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
