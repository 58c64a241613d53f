package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"
)

// Policy says how a loop is restarted after failures.
type Policy struct {
	// MinBackoff is the wait before the first restart after a failure.
	// Zero means 100ms for a main loop and the interval for an Every loop.
	MinBackoff time.Duration
	// MaxBackoff caps the wait, which doubles with each consecutive
	// failure. Zero means 30s (or MinBackoff if that is larger).
	MaxBackoff time.Duration
	// MaxFailures is how many failures within Window make the daemon give
	// up on the loop and stop with ErrGaveUp. Zero means never give up.
	MaxFailures int
	// Window is the span over which failures are counted for MaxFailures.
	// Zero means one minute.
	Window time.Duration
}

func (p Policy) validate() error {
	switch {
	case p.MinBackoff < 0:
		return fmt.Errorf("policy MinBackoff %v is negative", p.MinBackoff)
	case p.MaxBackoff < 0:
		return fmt.Errorf("policy MaxBackoff %v is negative", p.MaxBackoff)
	case p.MaxFailures < 0:
		return fmt.Errorf("policy MaxFailures %d is negative", p.MaxFailures)
	case p.Window < 0:
		return fmt.Errorf("policy Window %v is negative", p.Window)
	case p.MaxBackoff > 0 && p.MinBackoff > p.MaxBackoff:
		return fmt.Errorf("policy MinBackoff %v exceeds MaxBackoff %v", p.MinBackoff, p.MaxBackoff)
	}
	return nil
}

func (p Policy) withDefaults(interval time.Duration) Policy {
	if p.MinBackoff == 0 {
		p.MinBackoff = 100 * time.Millisecond
		if interval > 0 {
			p.MinBackoff = interval
		}
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = max(30*time.Second, p.MinBackoff)
	}
	if p.Window == 0 {
		p.Window = time.Minute
	}
	return p
}

// Backoff returns the wait before the next attempt after failures
// consecutive failures (failures >= 1): MinBackoff doubled per failure,
// capped at MaxBackoff, then spread by jitter (a number in [0, 1)) down to
// as little as half, so that many loops failing together do not retry in
// lockstep.
func (p Policy) Backoff(failures int, jitter float64) time.Duration {
	p = p.withDefaults(0)
	d := p.MinBackoff
	for i := 1; i < failures && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	return d - time.Duration(float64(d)/2*jitter)
}

// LoopOption adjusts a loop added with Add or Every.
type LoopOption func(*loop)

// Restart makes a main loop restart with backoff when it fails (returns an
// error, panics, or returns nil early) instead of stopping the daemon, and
// sets the backoff and give-up policy of any loop.
func Restart(p Policy) LoopOption {
	return func(l *loop) { l.policy, l.policySet = p, true }
}

// Optional lets a loop return nil without stopping the daemon: it is then
// done, and the daemon goes on. Errors still stop the daemon (or restart
// the loop under Restart).
func Optional() LoopOption {
	return func(l *loop) { l.optional = true }
}

// State is where a loop is in its life.
type State string

// Loop states, as Status reports them.
const (
	StateIdle     State = "idle"     // added, Run not started
	StateRunning  State = "running"  // its function is running
	StateWaiting  State = "waiting"  // an Every loop between calls
	StateBackoff  State = "backoff"  // waiting to retry after a failure
	StateStopped  State = "stopped"  // returned after the daemon stopped it
	StateFinished State = "finished" // an Optional loop that returned nil
	StateFailed   State = "failed"   // its failure stopped the daemon
)

// LoopStatus is a snapshot of one loop, for status pages.
type LoopStatus struct {
	Name  string
	State State
	// Runs counts calls of the loop's function (starts, for main loops).
	Runs int64
	// Restarts counts calls made after a failure.
	Restarts int64
	// Failures counts errors and panics, ever.
	Failures int64
	// LastError is the most recent failure, and LastErrorAt its time.
	LastError   error
	LastErrorAt time.Time
	// StartedAt is when the current or last call began.
	StartedAt time.Time
}

type loopKind int

const (
	kindMain    loopKind = iota // run once; its return stops the daemon
	kindRestart                 // run; restart on failure
	kindEvery                   // run every interval
)

type loop struct {
	d         *Daemon
	name      string
	kind      loopKind
	run       func(context.Context) error
	interval  time.Duration
	policy    Policy
	policySet bool
	optional  bool
	log       *slog.Logger

	ctx    context.Context // cancelled by the daemon's ordered stop
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	status LoopStatus
	recent []time.Time // failure times within the policy window
	streak int         // consecutive failures, for backoff
}

func (l *loop) snapshot() LoopStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

func (l *loop) setState(s State) {
	l.mu.Lock()
	l.status.State = s
	l.mu.Unlock()
}

// call runs the loop's function once, turning a panic into a *PanicError.
func (l *loop) call() (err error) {
	l.mu.Lock()
	l.status.State = StateRunning
	l.status.Runs++
	if l.streak > 0 {
		l.status.Restarts++
	}
	l.status.StartedAt = l.d.clock.Now()
	l.mu.Unlock()
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return l.run(l.ctx)
}

// failed records a failure and reports whether the policy gives up.
func (l *loop) failed(err error) (giveUp bool) {
	now := l.d.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status.Failures++
	l.status.LastError = err
	l.status.LastErrorAt = now
	// A main loop that stayed up for a whole window was healthy: its
	// failure starts a new streak rather than extending the backoff.
	if l.kind == kindRestart && now.Sub(l.status.StartedAt) >= l.policy.Window {
		l.streak = 0
	}
	l.streak++
	if l.policy.MaxFailures == 0 {
		return false
	}
	cutoff := now.Add(-l.policy.Window)
	kept := l.recent[:0]
	for _, t := range l.recent {
		if t.After(cutoff) {
			kept = append(kept, t)
		}
	}
	l.recent = append(kept, now)
	return len(l.recent) >= l.policy.MaxFailures
}

func (l *loop) logFailure(err error) {
	var p *PanicError
	if errors.As(err, &p) {
		l.log.Error("loop panicked", "panic", fmt.Sprint(p.Value), "stack", string(p.Stack))
		return
	}
	l.log.Error("loop failed", "error", err)
}

// wait sleeps for d or until the loop is cancelled; it reports whether the
// loop should go on.
func (l *loop) wait(d time.Duration, state State) bool {
	l.setState(state)
	t := l.d.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-l.ctx.Done():
		return false
	}
}

// supervise is the goroutine of one loop.
func (l *loop) supervise() {
	defer close(l.done)
	for {
		err := l.call()
		stopped := l.ctx.Err() != nil
		if stopped {
			// Whatever it returned, the daemon asked it to stop.
			if err != nil && !errors.Is(err, context.Canceled) {
				l.log.Debug("loop returned while stopping", "error", err)
			}
			l.setState(StateStopped)
			return
		}
		if err == nil {
			switch {
			case l.kind == kindEvery:
				l.mu.Lock()
				l.streak = 0
				l.mu.Unlock()
				if !l.wait(l.interval, StateWaiting) {
					l.setState(StateStopped)
					return
				}
				continue
			case l.optional:
				l.log.Info("loop finished")
				l.setState(StateFinished)
				return
			}
			err = ErrExitedEarly
		}
		l.logFailure(err)
		giveUp := l.failed(err)
		if l.kind == kindMain {
			l.setState(StateFailed)
			l.d.requestStop(&StopError{Loop: l.name, Err: err})
			return
		}
		if giveUp {
			l.setState(StateFailed)
			l.d.requestStop(&StopError{Loop: l.name, Err: fmt.Errorf("%w (%d failures within %v): last error: %w",
				ErrGaveUp, l.policy.MaxFailures, l.policy.Window, err)})
			return
		}
		l.mu.Lock()
		streak := l.streak
		l.mu.Unlock()
		delay := l.policy.Backoff(streak, l.d.jitter())
		if l.kind == kindEvery {
			delay = max(delay, l.interval/2)
		}
		l.log.Info("loop will retry", "after", delay, "failures", streak)
		if !l.wait(delay, StateBackoff) {
			l.setState(StateStopped)
			return
		}
	}
}
