package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestDaemon(t *testing.T, cfg Config) (*Daemon, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg.NoSignals = cfg.Signals == nil
	d, err := New(cfg)
	require.NoError(t, err)
	return d, buf
}

// runAsync runs d and returns a channel with Run's result.
func runAsync(ctx context.Context, d *Daemon) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- d.Run(ctx) }()
	return ch
}

func waitErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func blockUntilDone(ctx context.Context) error { <-ctx.Done(); return nil }

func TestEssentialLoopErrorStopsDaemonAndNamesIt(t *testing.T) {
	d, _ := newTestDaemon(t, Config{})
	boom := errors.New("boom")
	var otherStopped atomic.Bool
	require.NoError(t, d.Add("other", func(ctx context.Context) error {
		<-ctx.Done()
		otherStopped.Store(true)
		return nil
	}))
	require.NoError(t, d.Add("failing", func(ctx context.Context) error { return boom }))
	err := d.Run(context.Background())
	var se *StopError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "failing", se.Loop)
	assert.ErrorIs(t, err, boom)
	assert.Empty(t, se.Stuck)
	assert.True(t, otherStopped.Load(), "the other loop was stopped")
	assert.Contains(t, err.Error(), `loop "failing": boom`)
	st := d.Status()
	assert.Equal(t, StateStopped, st[0].State)
	assert.Equal(t, StateFailed, st[1].State)
}

func TestLoopReturningNilEarlyStopsDaemon(t *testing.T) {
	d, buf := newTestDaemon(t, Config{})
	require.NoError(t, d.Add("server", blockUntilDone))
	require.NoError(t, d.Add("quitter", func(ctx context.Context) error { return nil }))
	err := d.Run(context.Background())
	require.ErrorIs(t, err, ErrExitedEarly)
	var se *StopError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "quitter", se.Loop)
	assert.Contains(t, buf.String(), "loop returned before the daemon was stopped")
}

func TestOptionalLoopMayFinish(t *testing.T) {
	d, _ := newTestDaemon(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	finished := make(chan struct{})
	require.NoError(t, d.Add("server", blockUntilDone))
	require.NoError(t, d.Add("migrate", func(ctx context.Context) error { close(finished); return nil }, Optional()))
	ch := runAsync(ctx, d)
	<-finished
	// The loops start concurrently: "server" may enter running after
	// "migrate" has finished.
	require.Eventually(t, func() bool {
		st := d.Status()
		return st[1].State == StateFinished && st[0].State == StateRunning
	}, 10*time.Second, time.Millisecond)
	select {
	case err := <-ch:
		t.Fatalf("Run returned %v after an optional loop finished; the daemon should go on", err)
	case <-time.After(50 * time.Millisecond):
	}
	assert.Equal(t, StateRunning, d.Status()[0].State, "the daemon goes on")
	cancel()
	require.NoError(t, waitErr(t, ch))
}

func TestPanicInMainLoopIsCaughtLoggedWithStack(t *testing.T) {
	d, buf := newTestDaemon(t, Config{})
	require.NoError(t, d.Add("panicky", func(ctx context.Context) error { panic("kaboom") }))
	err := d.Run(context.Background())
	require.ErrorIs(t, err, ErrPanic)
	var pe *PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "kaboom", pe.Value)
	assert.Contains(t, string(pe.Stack), "daemon_test.go")
	assert.Contains(t, buf.String(), "loop panicked")
	assert.Contains(t, buf.String(), "panic=kaboom")
	assert.Contains(t, buf.String(), "daemon_test.go", "the stack is logged")
}

func TestEveryRecoversFromErrorsAndPanics(t *testing.T) {
	d, buf := newTestDaemon(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int64
	require.NoError(t, d.Every("flaky", time.Millisecond, func(ctx context.Context) error {
		switch calls.Add(1) {
		case 1:
			panic("first call panics")
		case 2:
			return errors.New("second call fails")
		case 3:
			var m map[string]int
			m["nil map write"] = 1 // a runtime panic
		}
		return nil
	}, Restart(Policy{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})))
	ch := runAsync(ctx, d)
	require.Eventually(t, func() bool { return calls.Load() >= 6 }, 10*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, waitErr(t, ch))
	st := d.Status()[0]
	assert.Equal(t, int64(3), st.Failures)
	assert.Equal(t, int64(3), st.Restarts, "each call after a failure is a restart")
	assert.GreaterOrEqual(t, st.Runs, int64(6))
	assert.ErrorIs(t, st.LastError, ErrPanic)
	assert.Contains(t, buf.String(), "first call panics")
	assert.Contains(t, buf.String(), "second call fails")
	assert.Contains(t, buf.String(), "assignment to entry in nil map")
}

// fakeClock hands every timer to the test, which fires it by hand.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers chan *fakeTimer
}

type fakeTimer struct {
	d time.Duration
	c chan time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }
func (t *fakeTimer) Stop() bool          { return true }

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1e9, 0), timers: make(chan *fakeTimer, 100)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{d: d, c: make(chan time.Time, 1)}
	c.timers <- t
	return t
}

// next waits for the next timer, advances time by its duration and fires it.
func (c *fakeClock) next(t *testing.T) time.Duration {
	t.Helper()
	select {
	case tm := <-c.timers:
		c.mu.Lock()
		c.now = c.now.Add(tm.d)
		now := c.now
		c.mu.Unlock()
		tm.c <- now
		return tm.d
	case <-time.After(10 * time.Second):
		t.Fatal("no timer was started")
		return 0
	}
}

func TestBackoffDoublesWithJitterAndResetsAfterSuccess(t *testing.T) {
	clock := newFakeClock()
	d, _ := newTestDaemon(t, Config{Clock: clock, Jitter: func() float64 { return 0 }, StopTimeout: time.Hour})
	// Fails three times, succeeds once, fails once more, then succeeds.
	results := []error{errors.New("1"), errors.New("2"), errors.New("3"), nil, errors.New("4"), nil, nil}
	var i atomic.Int64
	require.NoError(t, d.Every("job", time.Second, func(ctx context.Context) error {
		n := i.Add(1) - 1
		if int(n) < len(results) {
			return results[n]
		}
		return nil
	}, Restart(Policy{MaxBackoff: 5 * time.Second})))
	ctx, cancel := context.WithCancel(context.Background())
	ch := runAsync(ctx, d)
	var waits []time.Duration
	for range 6 {
		waits = append(waits, clock.next(t))
	}
	// Failures back off 1s, 2s, 4s (from the interval), success waits the
	// interval, the next failure starts again at 1s.
	assert.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, time.Second, time.Second, time.Second}, waits)
	cancel()
	require.NoError(t, waitErr(t, ch))
}

func TestPolicyBackoffBoundsAndJitter(t *testing.T) {
	p := Policy{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	assert.Equal(t, 100*time.Millisecond, p.Backoff(1, 0))
	assert.Equal(t, 200*time.Millisecond, p.Backoff(2, 0))
	assert.Equal(t, 800*time.Millisecond, p.Backoff(4, 0))
	assert.Equal(t, time.Second, p.Backoff(5, 0), "capped at MaxBackoff")
	assert.Equal(t, time.Second, p.Backoff(1000, 0), "no overflow after many failures")
	assert.InDelta(t, float64(500*time.Millisecond), float64(p.Backoff(1000, 0.9999999999)), float64(time.Microsecond))
	assert.Equal(t, 750*time.Millisecond, p.Backoff(1000, 0.5), "jitter spreads down to half")
}

func TestGiveUpAfterMaxFailuresStopsDaemonNamingLoop(t *testing.T) {
	d, _ := newTestDaemon(t, Config{})
	var runs atomic.Int64
	require.NoError(t, d.Add("server", blockUntilDone))
	require.NoError(t, d.Add("worker", func(ctx context.Context) error {
		runs.Add(1)
		return fmt.Errorf("connect to queue: refused")
	}, Restart(Policy{MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxFailures: 5, Window: time.Hour})))
	err := d.Run(context.Background())
	require.ErrorIs(t, err, ErrGaveUp)
	var se *StopError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "worker", se.Loop)
	assert.Equal(t, int64(5), runs.Load())
	assert.Contains(t, err.Error(), "connect to queue: refused")
	assert.Equal(t, int64(4), d.Status()[1].Restarts)
}

func TestRestartedMainLoopRecoversAndFailuresOutsideWindowAreForgotten(t *testing.T) {
	clock := newFakeClock()
	d, _ := newTestDaemon(t, Config{Clock: clock, Jitter: func() float64 { return 0 }, StopTimeout: time.Hour})
	var runs atomic.Int64
	require.NoError(t, d.Add("worker", func(ctx context.Context) error {
		if runs.Add(1) <= 4 {
			return errors.New("transient")
		}
		<-ctx.Done()
		return nil
	}, Restart(Policy{MinBackoff: time.Minute, MaxBackoff: time.Minute, MaxFailures: 3, Window: 90 * time.Second})))
	ctx, cancel := context.WithCancel(context.Background())
	ch := runAsync(ctx, d)
	// Each failure is a minute after the last, so at most two fall within
	// any 90 s window and the policy never gives up.
	for range 4 {
		assert.Equal(t, time.Minute, clock.next(t))
	}
	require.Eventually(t, func() bool { return runs.Load() == 5 }, 10*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, waitErr(t, ch))
	assert.Equal(t, int64(4), d.Status()[0].Failures)
}

func TestLoopsStopInReverseOrderEachAfterLaterOnesReturned(t *testing.T) {
	d, _ := newTestDaemon(t, Config{})
	const n = 6
	var mu sync.Mutex
	var order []int
	returned := make([]atomic.Bool, n)
	violations := make(chan string, n)
	for i := range n {
		require.NoError(t, d.Add(fmt.Sprintf("loop%d", i), func(ctx context.Context) error {
			<-ctx.Done()
			for j := i + 1; j < n; j++ {
				if !returned[j].Load() {
					violations <- fmt.Sprintf("loop%d cancelled before loop%d returned", i, j)
				}
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			returned[i].Store(true)
			return nil
		}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := runAsync(ctx, d)
	<-d.Ready()
	cancel()
	require.NoError(t, waitErr(t, ch))
	close(violations)
	for v := range violations {
		t.Error(v)
	}
	assert.Equal(t, []int{5, 4, 3, 2, 1, 0}, order)
}

func TestLoopIgnoringCancellationIsNamedAndRunDoesNotHang(t *testing.T) {
	d, buf := newTestDaemon(t, Config{StopTimeout: 50 * time.Millisecond})
	release := make(chan struct{})
	defer close(release)
	var firstStopped atomic.Bool
	require.NoError(t, d.Add("first", func(ctx context.Context) error {
		<-ctx.Done()
		firstStopped.Store(true)
		return nil
	}))
	require.NoError(t, d.Add("stubborn", func(ctx context.Context) error { <-release; return nil }))
	require.NoError(t, d.Add("last", blockUntilDone))
	ctx, cancel := context.WithCancel(context.Background())
	ch := runAsync(ctx, d)
	<-d.Ready()
	cancel()
	err := waitErr(t, ch)
	var se *StopError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, []string{"stubborn"}, se.Stuck)
	assert.Empty(t, se.Loop)
	assert.True(t, firstStopped.Load(), "loops before the stuck one are still stopped")
	assert.Contains(t, err.Error(), "did not stop in time: stubborn")
	assert.Contains(t, buf.String(), "loop did not stop within the grace period")
}

func TestRunTwice(t *testing.T) {
	d, _ := newTestDaemon(t, Config{})
	require.NoError(t, d.Add("server", blockUntilDone))
	ctx, cancel := context.WithCancel(context.Background())
	ch := runAsync(ctx, d)
	<-d.Ready()
	require.ErrorIs(t, d.Run(ctx), ErrAlreadyRun, "while running")
	require.ErrorIs(t, d.Add("late", blockUntilDone), ErrRunning)
	cancel()
	require.NoError(t, waitErr(t, ch))
	require.ErrorIs(t, d.Run(context.Background()), ErrAlreadyRun, "after running")
}

func TestConfigAndLoopValidation(t *testing.T) {
	_, err := New(Config{})
	assert.ErrorContains(t, err, "Name is required")
	_, err = New(Config{Name: "x", StopTimeout: -time.Second})
	assert.ErrorContains(t, err, "negative")

	d, _ := newTestDaemon(t, Config{})
	f := func(ctx context.Context) error { return nil }
	assert.ErrorContains(t, d.Every("zero", 0, f), "interval 0s must be positive")
	assert.ErrorContains(t, d.Every("neg", -time.Second, f), "interval -1s must be positive")
	assert.ErrorContains(t, d.Every("nilfn", time.Second, nil), "nil function")
	assert.ErrorContains(t, d.Add("nilfn", nil), "nil function")
	assert.ErrorContains(t, d.Add("", f), "needs a name")
	assert.ErrorContains(t, d.Add("bad", f, Restart(Policy{MinBackoff: -1})), "MinBackoff -1ns is negative")
	assert.ErrorContains(t, d.Add("bad", f, Restart(Policy{MinBackoff: 2 * time.Second, MaxBackoff: time.Second})), "exceeds MaxBackoff")
	assert.ErrorContains(t, d.Add("bad", f, Restart(Policy{MaxFailures: -1})), "MaxFailures -1 is negative")
	require.NoError(t, d.Add("ok", f))
	assert.ErrorContains(t, d.Add("ok", f), `a loop named "ok" was already added`)
}

func TestNoLoopsStopsOnCancel(t *testing.T) {
	d, _ := newTestDaemon(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, d.Run(ctx))
}

// Signal tests send real signals to the test process; the daemon's handler
// is installed before any loop starts, so the default action (exit) never
// runs.
func TestSIGTERMDuringStartupStopsCleanly(t *testing.T) {
	d, _ := newTestDaemon(t, Config{Signals: []os.Signal{syscall.SIGTERM, syscall.SIGINT}})
	require.NoError(t, d.Add("first", func(ctx context.Context) error {
		// The signal arrives while the daemon is still starting its loops.
		require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
		<-ctx.Done()
		return nil
	}))
	for i := range 100 {
		require.NoError(t, d.Add(fmt.Sprintf("worker%d", i), blockUntilDone))
	}
	ch := runAsync(context.Background(), d)
	require.NoError(t, waitErr(t, ch), "a signal is a clean stop")
	for _, st := range d.Status() {
		assert.Contains(t, []State{StateStopped}, st.State, st.Name)
	}
}

func TestSecondSignalEndsTheWait(t *testing.T) {
	d, _ := newTestDaemon(t, Config{Signals: []os.Signal{syscall.SIGUSR1}, StopTimeout: time.Hour})
	release := make(chan struct{})
	defer close(release)
	stopping := make(chan struct{})
	require.NoError(t, d.Add("stubborn", func(ctx context.Context) error {
		<-ctx.Done()
		close(stopping)
		<-release
		return nil
	}))
	ch := runAsync(context.Background(), d)
	<-d.Ready()
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGUSR1))
	<-stopping
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGUSR1))
	err := waitErr(t, ch)
	var se *StopError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, []string{"stubborn"}, se.Stuck)
	assert.Equal(t, syscall.SIGUSR1, se.Signal)
}

func TestCrashingLoopRestarted1000TimesLeaksNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fdsBefore := countFDs(t)
	d, err := New(Config{Name: "crashy", Logger: slog.New(slog.NewTextHandler(discard{}, nil)), NoSignals: true})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var runs atomic.Int64
	require.NoError(t, d.Add("crasher", func(ctx context.Context) error {
		if runs.Add(1) >= 1001 {
			cancel()
			<-ctx.Done()
			return nil
		}
		f, err := os.Open("/dev/null")
		if err != nil {
			return err
		}
		f.Close()
		if runs.Load()%2 == 0 {
			panic("crash")
		}
		return errors.New("crash")
	}, Restart(Policy{MinBackoff: time.Nanosecond, MaxBackoff: time.Microsecond})))
	require.NoError(t, d.Run(ctx))
	assert.Equal(t, int64(1000), d.Status()[0].Restarts)
	assert.Equal(t, int64(1000), d.Status()[0].Failures)
	assert.Equal(t, fdsBefore, countFDs(t), "file descriptors before and after")
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func countFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(es)
}

func TestTenThousandLoopsStartRunAndStop(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d, err := New(Config{Name: "many", Logger: slog.New(slog.NewTextHandler(discard{}, nil)), NoSignals: true})
	require.NoError(t, err)
	const n = 10000
	var running atomic.Int64
	for i := range n {
		require.NoError(t, d.Add(fmt.Sprintf("loop%05d", i), func(ctx context.Context) error {
			running.Add(1)
			<-ctx.Done()
			running.Add(-1)
			return nil
		}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := runAsync(ctx, d)
	<-d.Ready()
	require.Eventually(t, func() bool { return running.Load() == n }, 30*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, waitErr(t, ch))
	assert.Equal(t, int64(0), running.Load())
	for _, st := range d.Status() {
		if st.State != StateStopped {
			t.Fatalf("%s is %s", st.Name, st.State)
		}
	}
}

func TestStopErrorMessages(t *testing.T) {
	assert.Equal(t, "daemon stopped on terminated", (&StopError{Signal: syscall.SIGTERM}).Error())
	assert.Equal(t, `daemon stopped: loop "a": x; loops that did not stop in time: b, c`,
		(&StopError{Loop: "a", Err: errors.New("x"), Stuck: []string{"b", "c"}}).Error())
	assert.True(t, strings.HasPrefix((&PanicError{Value: 3}).Error(), "loop panicked: 3"))
}

func TestEveryLoopGivesUpUnderPolicy(t *testing.T) {
	d, buf := newTestDaemon(t, Config{})
	require.NoError(t, d.Add("server", blockUntilDone))
	require.NoError(t, d.Every("poller", time.Millisecond, func(ctx context.Context) error {
		return errors.New("upstream gone")
	}, Restart(Policy{MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxFailures: 3, Window: time.Hour})))
	err := d.Run(context.Background())
	require.ErrorIs(t, err, ErrGaveUp)
	assert.Contains(t, err.Error(), `loop "poller"`)
	assert.Contains(t, err.Error(), "upstream gone")
	assert.Equal(t, int64(3), d.Status()[1].Failures)
	assert.Equal(t, StateFailed, d.Status()[1].State)
	assert.Contains(t, buf.String(), "loop will retry")
}

func TestStatusHandlerServesJSON(t *testing.T) {
	d, _ := newTestDaemon(t, Config{Name: "web"})
	require.NoError(t, d.Every("job", time.Millisecond, func(ctx context.Context) error { return errors.New("no disk") }))
	ctx, cancel := context.WithCancel(context.Background())
	ch := runAsync(ctx, d)
	require.Eventually(t, func() bool { return d.Status()[0].Failures > 0 }, 10*time.Second, time.Millisecond)
	rec := httptest.NewRecorder()
	d.StatusHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
	cancel()
	require.NoError(t, waitErr(t, ch))
	var got struct {
		Daemon string
		Loops  []map[string]any
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
	assert.Equal(t, "web", got.Daemon)
	require.Len(t, got.Loops, 1)
	assert.Equal(t, "job", got.Loops[0]["name"])
	assert.Equal(t, "no disk", got.Loops[0]["last_error"])
	assert.NotEmpty(t, got.Loops[0]["last_error_at"])
}
