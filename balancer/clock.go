package balancer

import "time"

// Clock is the time the proxy's health machinery runs on: when a node's
// failures began, whether its grace period (EjectAfter) is over, and when
// the next probe round (ProbeInterval) is due. Tests give the proxy a clock
// they move by hand, so that a node is ejected or back as soon as the test
// says, without waiting in real time. Connection deadlines
// (ReadHeaderTimeout, IdleTimeout, DialTimeout, ResponseHeaderTimeout) and
// ShutdownTimeout are kept by the kernel and the runtime on real time,
// whatever the Clock. Its methods may be called from any goroutine.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTicker returns a ticker that delivers a tick every d, as
	// time.NewTicker does; the proxy stops it when Run returns.
	NewTicker(d time.Duration) Ticker
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
func (systemClock) NewTicker(d time.Duration) Ticker { return systemTicker{time.NewTicker(d)} }

type systemTicker struct{ t *time.Ticker }

func (t systemTicker) C() <-chan time.Time { return t.t.C }
func (t systemTicker) Stop()               { t.t.Stop() }
