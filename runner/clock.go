package runner

import "time"

// Clock is the time an app's life runs on: when an instance was last
// active and so when it is idle (IdleTimeout, looked for every
// ReapInterval), when a failed start may be tried again and when a crashed
// instance is restarted (the backoff), how long a start may take
// (StartTimeout), how long a stopping instance drains and has between
// SIGTERM and SIGKILL (StopGrace), and the times in Status, ExitInfo and
// StartRecord (so with a clock that stands still, start times and queue
// waits read zero). Tests give the runner a clock they move by hand, so
// that an instance is reaped, restarted or killed as soon as the test says,
// without waiting in real time.
//
// Some waits stay on real time whatever the Clock: the poll of a starting
// app's socket, connection deadlines (ResponseTimeout and the front's idle
// and header timeouts, kept by the kernel and the runtime), the quiet
// period after a change in SpecDir before it is scanned, the refill of the
// pool of network namespaces, the front's back-off when it cannot accept,
// how long Serve's event loops let exchanges in flight finish when it
// stops (up to StopGrace, kept by internal/evproxy's epoll waits), and the
// bounds on clean-up (killing what is left in a cgroup, waiting for output
// capture to end); output lines are stamped on real time too. Its methods
// may be called from any goroutine.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer that fires once, d from now, as
	// time.NewTimer does.
	NewTimer(d time.Duration) Timer
	// NewTicker returns a ticker that delivers a tick every d, as
	// time.NewTicker does; Run stops it when it returns.
	NewTicker(d time.Duration) Ticker
}

// Timer is a Clock's one-shot timer.
type Timer interface {
	// C delivers the time once the timer fires.
	C() <-chan time.Time
	// Stop turns the timer off, as time.Timer's Stop does: it reports
	// whether it stopped the timer before it fired.
	Stop() bool
}

// Ticker is a Clock's ticker.
type Ticker interface {
	// C delivers the ticks.
	C() <-chan time.Time
	// Stop turns the ticker off; no tick is delivered after it returns.
	Stop()
}

// systemClock is the default Clock: the time package.
type systemClock struct{}

func (systemClock) Now() time.Time                   { return time.Now() }
func (systemClock) NewTimer(d time.Duration) Timer   { return systemTimer{time.NewTimer(d)} }
func (systemClock) NewTicker(d time.Duration) Ticker { return systemTicker{time.NewTicker(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time { return t.t.C }
func (t systemTimer) Stop() bool          { return t.t.Stop() }

type systemTicker struct{ t *time.Ticker }

func (t systemTicker) C() <-chan time.Time { return t.t.C }
func (t systemTicker) Stop()               { t.t.Stop() }
