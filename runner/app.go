package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// StartError says why an instance did not become ready. The front answers
// 503 with its message; Stderr is the tail of what the app printed.
type StartError struct {
	App      string
	Instance int64
	// Reason says what went wrong, e.g. "exited with status 3 before
	// binding its socket" or "did not bind /run/paaskit/app.sock within 5s".
	Reason string
	// Stderr is the last lines the app wrote to stderr (bounded).
	Stderr string
	// RetryAt is when the next start may be tried (the backoff).
	RetryAt time.Time
	// Err is the underlying error, if any.
	Err error
}

func (e *StartError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "runner: app %q instance %d failed to start: %s", e.App, e.Instance, e.Reason)
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *StartError) Unwrap() error { return e.Err }

// ExitInfo describes how an instance ended.
type ExitInfo struct {
	Instance int64     `json:"instance"`
	Time     time.Time `json:"time"`
	// Reason is "stopped", "reaped", "replaced", "removed", "shutdown"
	// (asked for), "crashed", "oom" (killed for memory) or "start failed".
	Reason string `json:"reason"`
	// Status is the exit status; a process killed by signal N reports
	// 128+N.
	Status     int           `json:"status"`
	CPU        time.Duration `json:"cpu"`
	PeakMemory int64         `json:"peak_memory"`
	OOM        bool          `json:"oom"`
	// ForkRefusals counts forks the process limit refused.
	ForkRefusals int64 `json:"fork_refusals,omitempty"`
}

// StartRecord is what one start cost: the operator's view of cold starts.
type StartRecord struct {
	Time     time.Time `json:"time"`
	Instance int64     `json:"instance"`
	// StartTime is from spawning the process to its socket accepting.
	StartTime time.Duration `json:"start_time"`
	// QueueWait is the longest time a request waited for this start,
	// from its arrival to the instance being ready (or failing).
	QueueWait time.Duration `json:"queue_wait"`
	// Waiters is how many requests waited for it.
	Waiters int    `json:"waiters"`
	Error   string `json:"error,omitempty"`
}

// InstanceStatus is a running (or starting) instance.
type InstanceStatus struct {
	ID      int64     `json:"id"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Ready   bool      `json:"ready"`
	Active  int64     `json:"active"`
	// IdleFor is how long it has had nothing in flight (0 while busy).
	IdleFor  Duration `json:"idle_for"`
	CPU      Duration `json:"cpu"`
	Memory   int64    `json:"memory"`
	PeakMem  int64    `json:"peak_memory"`
	OOMKills int64    `json:"oom_kills"`
}

// AppStatus is one app's state and counters.
type AppStatus struct {
	Name  string   `json:"name"`
	Hosts []string `json:"hosts"`
	UID   int      `json:"uid,omitempty"`
	// State is "stopped", "starting", "running", "stopping" (no current
	// instance, but one is still draining) or "backoff" (a start failed;
	// the next is not tried before RetryAt).
	State string `json:"state"`
	// Draining counts instances taken out of service (reaped, replaced,
	// stopped) that have not ended yet.
	Draining     int             `json:"draining,omitempty"`
	RetryAt      time.Time       `json:"retry_at,omitzero"`
	Instance     *InstanceStatus `json:"instance,omitempty"`
	Starts       int64           `json:"starts"`
	FailedStarts int64           `json:"failed_starts"`
	Crashes      int64           `json:"crashes"`
	OOMKills     int64           `json:"oom_kills"`
	// CPU is the CPU time of all instances so far, the running one
	// included.
	CPU time.Duration `json:"cpu"`
	// Requests counts the requests the node front passed to one of the
	// app's instances since the app was added, each once: on the
	// goroutine paths when an instance was taken for it, on the event
	// loops when the instance answered it (or timed out or broke on
	// it); a request an event loop hands to the goroutine path is
	// counted there. Start and the front's misses and refusals (unknown
	// host, failed start) count nothing. For usage billing.
	Requests uint64    `json:"requests"`
	LastExit *ExitInfo `json:"last_exit,omitempty"`
	// LastError is the last start failure.
	LastError string `json:"last_error,omitempty"`
	// Recent holds the last starts, oldest first; MaxStartTime and
	// MaxQueueWait are the worst since the app was added.
	Recent       []StartRecord `json:"recent,omitempty"`
	MaxStartTime time.Duration `json:"max_start_time"`
	MaxQueueWait time.Duration `json:"max_queue_wait"`
}

const keepRecords = 32

// app is one configured app. Its mutex guards everything below it; an
// instance's state fields are guarded by its app's mutex too.
type app struct {
	r    *Runner
	name string

	mu             sync.Mutex
	spec           Spec
	uid            int
	cur            *instance
	removed        bool
	failures       int
	failedUntil    time.Time
	lastStartErr   *StartError
	restartAt      time.Time
	pendingRestart bool
	records        []StartRecord
	starts         int64
	failedStarts   int64
	crashes        int64
	oomKills       int64
	cpuDone        time.Duration
	lastExit       *ExitInfo
	attached       int
	waits          map[int64]time.Duration // longest queue wait per recent instance
	draining       map[*instance]struct{}  // taken off cur, not yet ended
	maxStartTime   time.Duration
	maxQueueWait   time.Duration

	// requests counts the requests the front passed to an instance (see
	// AppStatus.Requests); atomic, so the hot path takes no lock for it.
	requests atomic.Uint64
}

// detachLocked notes that i, just taken off a.cur, is being stopped; a.mu
// is held.
func (a *app) detachLocked(i *instance) {
	if i == nil {
		return
	}
	if a.draining == nil {
		a.draining = map[*instance]struct{}{}
	}
	a.draining[i] = struct{}{}
}

func (a *app) currentSpec() Spec {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.spec
}

// newInstanceLocked creates and launches an instance; a.mu is held.
func (a *app) newInstanceLocked(ctx context.Context, notBefore time.Time) *instance {
	r := a.r
	i := &instance{
		app:       a,
		id:        r.instSeq.Add(1),
		spec:      a.spec,
		notBefore: notBefore,
		ready:     make(chan struct{}),
		exited:    make(chan struct{}),
		finished:  make(chan struct{}),
		stopCh:    make(chan struct{}),
		tail:      &tail{},
		created:   r.cfg.Clock.Now(),
		sockDirFd: -1,
		sockFd:    -1,
		netns:     -1,
	}
	a.cur = i
	a.pendingRestart = false
	a.starts++
	r.wg.Add(1)
	go i.run(ctx)
	return i
}

// acquire returns a ready instance with its active count raised, starting
// one if there is none. Concurrent callers share one start. arrival is
// when the request came in, for the queue-wait record.
func (a *app) acquire(ctx context.Context, arrival time.Time) (*instance, error) {
	for {
		runCtx, ok := a.r.running()
		if !ok {
			return nil, ErrNotRunning
		}
		a.mu.Lock()
		if a.removed {
			a.mu.Unlock()
			return nil, fmt.Errorf("%w %q", ErrUnknownApp, a.name)
		}
		i := a.cur
		if i == nil {
			if a.r.cfg.Clock.Now().Before(a.failedUntil) && a.lastStartErr != nil {
				err := a.lastStartErr
				a.mu.Unlock()
				return nil, err
			}
			i = a.newInstanceLocked(runCtx, a.restartAt)
		}
		if i.isReady {
			i.active.Add(1)
			a.mu.Unlock()
			return i, nil
		}
		if i.failed != nil {
			a.mu.Unlock()
			return nil, i.failed
		}
		i.waiters++
		a.mu.Unlock()
		select {
		case <-i.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("runner: waiting for app %q to start: %w", a.name, ctx.Err())
		}
		wait := a.r.cfg.Clock.Now().Sub(arrival)
		a.mu.Lock()
		if a.waits == nil {
			a.waits = map[int64]time.Duration{}
		}
		if wait > a.waits[i.id] {
			a.waits[i.id] = wait
		}
		if wait > a.maxQueueWait {
			a.maxQueueWait = wait
		}
		if len(a.waits) > 4*keepRecords {
			for k := range a.waits {
				if k < i.id-2*keepRecords {
					delete(a.waits, k)
				}
			}
		}
		if i.failed != nil {
			err := i.failed
			a.mu.Unlock()
			if errors.Is(err, errStopped) {
				// Replaced or stopped while starting: not a failure of
				// the app. Go round: a new instance serves us.
				continue
			}
			return nil, err
		}
		if i.isReady && a.cur == i {
			i.active.Add(1)
			a.mu.Unlock()
			return i, nil
		}
		a.mu.Unlock()
		// Replaced or reaped in between: go round again.
	}
}

// tryAcquire returns the app's ready instance with its active count
// raised, or nil when there is none; it never waits or starts one.
func (a *app) tryAcquire() *instance {
	if _, ok := a.r.running(); !ok {
		return nil
	}
	a.mu.Lock()
	i := a.cur
	if a.removed || i == nil || !i.isReady {
		a.mu.Unlock()
		return nil
	}
	i.active.Add(1)
	a.mu.Unlock()
	return i
}

// release ends one use of i.
func (a *app) release(i *instance) {
	i.lastActive.Store(a.r.cfg.Clock.Now().UnixNano())
	i.active.Add(-1)
}

// Attach marks the app as having an attached command (a pty session, say)
// until the returned function is called, so its instance is not reaped as
// idle meanwhile. The release function is idempotent.
func (r *Runner) Attach(name string) (release func(), err error) {
	a, err := r.app(name)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.attached++
	a.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			a.attached--
			if i := a.cur; i != nil {
				i.lastActive.Store(r.cfg.Clock.Now().UnixNano())
			}
			a.mu.Unlock()
		})
	}, nil
}

// detach takes the current instance away from the app, so that new
// requests start a fresh one; the caller stops it.
func (a *app) detach() *instance {
	a.mu.Lock()
	defer a.mu.Unlock()
	i := a.cur
	a.cur = nil
	a.detachLocked(i)
	a.pendingRestart = false
	return i
}

func (a *app) replace(s Spec) {
	a.mu.Lock()
	a.spec = s
	old := a.cur
	a.cur = nil
	a.detachLocked(old)
	a.failures = 0
	a.failedUntil = time.Time{}
	a.lastStartErr = nil
	a.restartAt = time.Time{}
	a.pendingRestart = false
	if old != nil && old.isReady {
		if ctx, ok := a.r.running(); ok {
			a.newInstanceLocked(ctx, time.Time{})
		}
	}
	a.mu.Unlock()
	a.r.log.Info("runner: app changed; restarting gracefully", "app", a.name, "was_running", old != nil)
	if old != nil {
		old.stop("replaced")
	}
}

func (a *app) remove() {
	a.mu.Lock()
	a.removed = true
	i := a.cur
	a.cur = nil
	a.detachLocked(i)
	a.pendingRestart = false
	a.mu.Unlock()
	if i != nil {
		i.stop("removed")
	}
}

func (a *app) shutdown() {
	if i := a.detach(); i != nil {
		i.stop("shutdown")
	}
}

// maintain reaps an idle instance and starts a due crash restart.
func (a *app) maintain(now time.Time) {
	a.mu.Lock()
	if a.removed {
		a.mu.Unlock()
		return
	}
	if a.pendingRestart && a.cur == nil && !now.Before(a.restartAt) {
		if ctx, ok := a.r.running(); ok {
			a.newInstanceLocked(ctx, time.Time{})
		}
	}
	var reap *instance
	if i := a.cur; i != nil && i.isReady && i.active.Load() == 0 && a.attached == 0 {
		idle := time.Duration(a.spec.IdleTimeout)
		if idle == 0 {
			idle = a.r.cfg.DefaultIdleTimeout
		}
		if now.Sub(time.Unix(0, i.lastActive.Load())) >= idle {
			a.cur = nil
			a.detachLocked(i)
			reap = i
		}
	}
	a.mu.Unlock()
	if reap != nil {
		a.r.log.Info("runner: reaping idle instance", "app", a.name, "instance", reap.id)
		reap.stop("reaped")
	}
}

// startedOK is called by i's goroutine when its socket accepts.
func (a *app) startedOK(i *instance, took time.Duration) {
	now := a.r.cfg.Clock.Now()
	i.lastActive.Store(now.UnixNano())
	a.mu.Lock()
	i.isReady = true
	a.failedUntil = time.Time{}
	a.lastStartErr = nil
	close(i.ready)
	if took > a.maxStartTime {
		a.maxStartTime = took
	}
	a.addRecord(StartRecord{Time: i.created, Instance: i.id, StartTime: took, Waiters: i.waiters})
	a.mu.Unlock()
}

// startFailed is called by i's goroutine when its start failed.
func (a *app) startFailed(i *instance, err *StartError, asked bool) {
	now := a.r.cfg.Clock.Now()
	a.mu.Lock()
	if !asked {
		a.failures++
		a.failedStarts++
		err.RetryAt = now.Add(a.r.backoff(a.failures))
		a.failedUntil = err.RetryAt
		a.lastStartErr = err
	}
	if a.cur == i {
		a.cur = nil
	}
	delete(a.draining, i)
	i.failed = err
	close(i.ready)
	a.addRecord(StartRecord{Time: i.created, Instance: i.id, StartTime: now.Sub(i.created), Waiters: i.waiters, Error: err.Error()})
	a.mu.Unlock()
}

// addRecord appends a start record; a.mu is held. The queue wait is filled
// in later by the waiters themselves, so records point at the instance.
func (a *app) addRecord(rec StartRecord) {
	if len(a.records) >= keepRecords {
		copy(a.records, a.records[1:])
		a.records = a.records[:keepRecords-1]
	}
	a.records = append(a.records, rec)
}

// exitedAfterReady is called by i's goroutine once a ready instance ended.
func (a *app) exitedAfterReady(i *instance, info ExitInfo) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.account(info)
	if a.cur == i {
		a.cur = nil
	}
	delete(a.draining, i)
	if info.Reason != "crashed" && info.Reason != "oom" {
		return
	}
	a.crashes++
	if info.Time.Sub(i.created) > 30*time.Second {
		a.failures = 0
	}
	a.failures++
	a.restartAt = info.Time.Add(a.r.backoff(a.failures))
	if !a.removed && a.cur == nil {
		a.pendingRestart = true
	}
}

// account adds a finished instance's figures; a.mu is held.
func (a *app) account(info ExitInfo) {
	a.cpuDone += info.CPU
	if info.OOM {
		a.oomKills++
	}
	in := info
	a.lastExit = &in
}

func (a *app) status() AppStatus {
	a.mu.Lock()
	st := AppStatus{
		Name:         a.name,
		Hosts:        append([]string(nil), a.spec.Hosts...),
		UID:          a.uid,
		State:        "stopped",
		Starts:       a.starts,
		FailedStarts: a.failedStarts,
		Crashes:      a.crashes,
		OOMKills:     a.oomKills,
		CPU:          a.cpuDone,
		Recent:       append([]StartRecord(nil), a.records...),
		Draining:     len(a.draining),
		MaxStartTime: a.maxStartTime,
		MaxQueueWait: a.maxQueueWait,
		Requests:     a.requests.Load(),
	}
	if st.Draining > 0 {
		st.State = "stopping"
	}
	if a.lastExit != nil {
		e := *a.lastExit
		st.LastExit = &e
	}
	if a.lastStartErr != nil {
		st.LastError = a.lastStartErr.Error()
	}
	now := a.r.cfg.Clock.Now()
	if now.Before(a.failedUntil) {
		st.State, st.RetryAt = "backoff", a.failedUntil
	}
	i := a.cur
	var is *InstanceStatus
	if i != nil {
		st.State = "starting"
		if i.isReady {
			st.State = "running"
		}
		is = &InstanceStatus{ID: i.id, Started: i.created, Ready: i.isReady, Active: i.active.Load(), PID: i.pid}
		if i.isReady && is.Active == 0 {
			is.IdleFor = Duration(now.Sub(time.Unix(0, i.lastActive.Load())))
		}
	}
	// Queue waits are filled in as waiters wake up: copy them now.
	for k := range st.Recent {
		if in := a.findInstanceWait(st.Recent[k].Instance); in > 0 {
			st.Recent[k].QueueWait = in
		}
	}
	a.mu.Unlock()
	if is != nil {
		if cg := i.cgroup(); cg != nil {
			s := cg.stats()
			is.CPU, is.Memory, is.PeakMem, is.OOMKills = Duration(s.CPU), s.Memory, s.PeakMemory, s.OOMKills
			st.CPU += s.CPU
		}
		st.Instance = is
	}
	return st
}

// findInstanceWait returns the longest queue wait for instance id; a.mu
// is held.
func (a *app) findInstanceWait(id int64) time.Duration {
	if a.waits == nil {
		return 0
	}
	return a.waits[id]
}

var errStopped = errors.New("stopped while starting")
