package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultStopTimeout is the grace period Run gives its loops to return after
// it cancels them, when Config.StopTimeout is zero.
const DefaultStopTimeout = 10 * time.Second

// Config configures a Daemon. The zero value of every field but Name is a
// documented default.
type Config struct {
	// Name identifies the daemon in logs and errors. Required.
	Name string
	// Logger receives the daemon's and its loops' log lines; nil means
	// slog.Default(). See NewLogger for stderr plus remote syslog.
	Logger *slog.Logger
	// StopTimeout is the grace period, counted from the start of the
	// stop, within which all loops must return. Zero means
	// DefaultStopTimeout; negative is an error.
	StopTimeout time.Duration
	// Signals stop the daemon cleanly when received; nil means SIGTERM and
	// SIGINT. A second signal during the stop ends the wait for loops at
	// once.
	Signals []os.Signal
	// NoSignals disables signal handling, for daemons embedded in a larger
	// program that handles signals itself.
	NoSignals bool
	// Clock is the source of time for backoff and failure windows; nil
	// means the real clock.
	Clock Clock
	// Jitter returns a number in [0, 1) used to spread backoff delays; nil
	// means math/rand/v2.Float64. Tests fix it for exact delays.
	Jitter func() float64
}

// Daemon supervises named main loops. Build one with New, add loops with Add
// and Every, then call Run once.
type Daemon struct {
	cfg    Config
	log    *slog.Logger
	clock  Clock
	jitter func() float64

	mu      sync.Mutex // guards loops before Run; loops is read-only after
	loops   []*loop
	names   map[string]bool
	started atomic.Bool

	ready chan struct{}

	stopOnce  sync.Once
	stopCh    chan struct{}
	stopCause *StopError
}

// New validates cfg and returns a Daemon with no loops.
func New(cfg Config) (*Daemon, error) {
	if cfg.Name == "" {
		return nil, errors.New("daemon: Config.Name is required")
	}
	if cfg.StopTimeout < 0 {
		return nil, fmt.Errorf("daemon %q: StopTimeout %v is negative", cfg.Name, cfg.StopTimeout)
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.Signals == nil {
		cfg.Signals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	}
	d := &Daemon{
		cfg:    cfg,
		log:    cfg.Logger,
		clock:  cfg.Clock,
		jitter: cfg.Jitter,
		names:  map[string]bool{},
		ready:  make(chan struct{}),
		stopCh: make(chan struct{}),
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.log = d.log.With("daemon", cfg.Name)
	if d.clock == nil {
		d.clock = realClock{}
	}
	if d.jitter == nil {
		d.jitter = rand.Float64
	}
	return d, nil
}

// Name returns the daemon's name.
func (d *Daemon) Name() string { return d.cfg.Name }

// Add adds a main loop: run is called once with a context that is cancelled
// when the daemon stops, and must return promptly after that.
//
// By default the loop is essential: if it returns (an error, a panic, or nil
// before the daemon was asked to stop), the daemon stops and Run's error
// names it. Restart makes a failing loop restart with backoff instead;
// Optional lets it finish without stopping the daemon.
//
// Loops start in the order they were added and stop in the reverse order,
// each one's context cancelled only after every later loop has returned, so
// a loop may use what an earlier loop provides until it returns.
func (d *Daemon) Add(name string, run func(ctx context.Context) error, opts ...LoopOption) error {
	if run == nil {
		return fmt.Errorf("daemon %q: loop %q: nil function", d.cfg.Name, name)
	}
	l := &loop{name: name, kind: kindMain, run: run}
	for _, o := range opts {
		o(l)
	}
	if l.policySet {
		l.kind = kindRestart
	}
	return d.add(l)
}

// Every adds a resilient loop (ep.io's @resilient_loop): fn runs now and
// then every interval until the daemon stops. An error or panic from fn is
// logged with its stack and the loop goes on; while fn keeps failing, the
// wait before the next call grows exponentially with jitter from the
// interval up to Policy.MaxBackoff, and a success resets it. With a Policy
// whose MaxFailures is set (via Restart), failing that often within its
// window stops the daemon with ErrGaveUp.
//
// The interval must be positive.
func (d *Daemon) Every(name string, interval time.Duration, fn func(ctx context.Context) error, opts ...LoopOption) error {
	if interval <= 0 {
		return fmt.Errorf("daemon %q: loop %q: interval %v must be positive", d.cfg.Name, name, interval)
	}
	if fn == nil {
		return fmt.Errorf("daemon %q: loop %q: nil function", d.cfg.Name, name)
	}
	l := &loop{name: name, kind: kindEvery, run: fn, interval: interval}
	for _, o := range opts {
		o(l)
	}
	return d.add(l)
}

func (d *Daemon) add(l *loop) error {
	if l.name == "" {
		return fmt.Errorf("daemon %q: a loop needs a name", d.cfg.Name)
	}
	if err := l.policy.validate(); err != nil {
		return fmt.Errorf("daemon %q: loop %q: %w", d.cfg.Name, l.name, err)
	}
	l.policy = l.policy.withDefaults(l.interval)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started.Load() {
		return fmt.Errorf("daemon %q: loop %q: %w", d.cfg.Name, l.name, ErrRunning)
	}
	if d.names[l.name] {
		return fmt.Errorf("daemon %q: a loop named %q was already added", d.cfg.Name, l.name)
	}
	d.names[l.name] = true
	l.d = d
	l.log = d.log.With("loop", l.name)
	l.done = make(chan struct{})
	l.status.Name = l.name
	l.status.State = StateIdle
	d.loops = append(d.loops, l)
	return nil
}

// Ready returns a channel that is closed once Run has started every loop
// (or gave up starting them because a stop came first).
func (d *Daemon) Ready() <-chan struct{} { return d.ready }

// Status returns a snapshot of every loop's state, in the order they were
// added, for status pages.
func (d *Daemon) Status() []LoopStatus {
	d.mu.Lock()
	loops := d.loops
	d.mu.Unlock()
	out := make([]LoopStatus, len(loops))
	for i, l := range loops {
		out[i] = l.snapshot()
	}
	return out
}

// requestStop records the first reason to stop and wakes Run.
func (d *Daemon) requestStop(cause *StopError) {
	d.stopOnce.Do(func() {
		d.stopCause = cause
		close(d.stopCh)
	})
}

// Run starts every loop and blocks until the daemon stops: ctx is
// cancelled, one of the configured signals arrives, or an essential loop
// returns. It then stops the loops in the reverse of the order they were
// added and waits for them up to the grace period.
//
// Run returns nil after a clean stop asked for by ctx or a signal. It
// returns a *StopError when a loop caused the stop (naming it and wrapping
// its error) or when loops did not return in time (naming them). A Daemon
// runs once: a second call returns ErrAlreadyRun.
func (d *Daemon) Run(ctx context.Context) error {
	d.mu.Lock()
	if !d.started.CompareAndSwap(false, true) {
		d.mu.Unlock()
		return ErrAlreadyRun
	}
	loops := d.loops
	d.mu.Unlock()

	// Signals are watched before any loop starts, so a SIGTERM during
	// start-up is a clean stop, never the default kill.
	var sigs chan os.Signal
	if !d.cfg.NoSignals && len(d.cfg.Signals) > 0 {
		sigs = make(chan os.Signal, 2)
		signal.Notify(sigs, d.cfg.Signals...)
		defer signal.Stop(sigs)
	}
	watchDone := make(chan struct{})
	defer close(watchDone)
	go d.watch(ctx, sigs, watchDone)

	// Loop contexts keep ctx's values but not its cancellation: loops are
	// cancelled one by one in reverse order during the stop.
	base := context.WithoutCancel(ctx)
	d.log.Info("daemon starting", "loops", len(loops))
	launched := 0
	for _, l := range loops {
		if d.stopping() {
			break
		}
		l.ctx, l.cancel = context.WithCancel(base)
		go l.supervise()
		launched++
	}
	close(d.ready)
	if launched == len(loops) {
		d.log.Info("daemon running", "loops", launched)
	}

	<-d.stopCh
	cause := d.stopCause
	d.log.Info("daemon stopping", "reason", cause.reason())
	cause.Stuck = d.stopLoops(loops[:launched], sigs)
	for _, l := range loops[launched:] {
		l.setState(StateStopped)
	}
	if cause.Loop == "" && len(cause.Stuck) == 0 {
		d.log.Info("daemon stopped")
		return nil
	}
	d.log.Error("daemon stopped", "error", cause)
	return cause
}

func (d *Daemon) stopping() bool {
	select {
	case <-d.stopCh:
		return true
	default:
		return false
	}
}

// watch turns ctx cancellation and signals into a stop request.
func (d *Daemon) watch(ctx context.Context, sigs chan os.Signal, done chan struct{}) {
	select {
	case <-ctx.Done():
		d.requestStop(&StopError{Err: context.Cause(ctx)})
	case s := <-sigs:
		d.log.Info("signal received", "signal", s.String())
		d.requestStop(&StopError{Signal: s})
	case <-d.stopCh:
	case <-done:
	}
}

// stopLoops cancels loops last-added first, waiting for each before the
// next, and returns the names of those that outlived the grace period. Once
// the grace period is spent (or a second signal arrives) the remaining loops
// are cancelled together and given a short final allowance.
func (d *Daemon) stopLoops(loops []*loop, sigs chan os.Signal) []string {
	deadline := d.clock.NewTimer(d.cfg.StopTimeout)
	defer deadline.Stop()
	var stuck []string
	expired := false
	i := len(loops) - 1
	for ; i >= 0 && !expired; i-- {
		l := loops[i]
		l.cancel()
		select {
		case <-l.done:
			continue
		default:
		}
		select {
		case <-l.done:
		case <-deadline.C():
			expired = true
			stuck = append(stuck, l.name)
		case s := <-sigs:
			d.log.Warn("second signal: not waiting for loops any longer", "signal", s.String())
			expired = true
			i++ // wait briefly for this loop with the rest
		}
	}
	if i < 0 {
		return stuck
	}
	// Out of time: cancel all that remain at once, then give them a brief
	// allowance so loops that stop promptly are not reported stuck.
	rest := loops[:i+1]
	for _, l := range rest {
		l.cancel()
	}
	final := d.clock.NewTimer(finalAllowance(d.cfg.StopTimeout))
	defer final.Stop()
	timedOut := false
	for j := len(rest) - 1; j >= 0; j-- {
		l := rest[j]
		if !timedOut {
			select {
			case <-l.done:
				continue
			case <-final.C():
				timedOut = true
			}
		}
		select {
		case <-l.done:
		default:
			stuck = append(stuck, l.name)
		}
	}
	for _, name := range stuck {
		d.log.Error("loop did not stop within the grace period", "loop", name, "grace", d.cfg.StopTimeout)
	}
	return stuck
}

func finalAllowance(grace time.Duration) time.Duration {
	return max(min(grace/10, time.Second), 10*time.Millisecond)
}

func (c *StopError) reason() string {
	switch {
	case c.Loop != "":
		return fmt.Sprintf("loop %q: %v", c.Loop, c.Err)
	case c.Signal != nil:
		return "signal " + c.Signal.String()
	case c.Err != nil:
		return c.Err.Error()
	}
	return "stop requested"
}
