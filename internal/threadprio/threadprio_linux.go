// Package threadprio runs background work (compression, the forks of
// parked helpers) at a lower CPU priority, so that it takes only CPU time
// nothing else wants.
//
// On Linux the nice value is per thread, so the work runs on a thread of
// its own. That thread is the process's for good: one per nice value,
// started on first use and never ended. A thread must not end while the
// process runs, because a child started with a parent-death signal
// (SysProcAttr.Pdeathsig, which the runner and the build sandbox use) gets
// that signal when the thread that forked it ends, not the process, and
// any goroutine may have forked on a thread before it was taken for such
// work (Go issue 27505). Locking a goroutine to its thread and letting it
// end locked, as this package once did, ended the thread: the children a
// test had started from it were killed at random.
package threadprio

import (
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// worker is the thread of one nice value, fed through jobs.
type worker struct {
	jobs chan func()
	err  error // from setting the priority; the worker runs anyway
}

var (
	mu      sync.Mutex
	workers = map[int]*worker{}
)

// Do runs fn on the process's thread for the given nice value and returns
// once fn has. Calls for one nice value run one at a time, in the order
// they come; fn may block. Processes fn starts inherit the nice value,
// and their parent-death signal (if any) comes only when the process
// ends. A panic in fn is raised again in the caller. The error is the
// one of setting the priority when the thread was made (a seccomp policy,
// say): fn has then run at the process's own priority.
func Do(nice int, fn func()) error {
	w := workerFor(nice)
	done := make(chan any, 1)
	w.jobs <- func() {
		defer func() { done <- recover() }()
		fn()
	}
	if p := <-done; p != nil {
		panic(p)
	}
	return w.err
}

func workerFor(nice int) *worker {
	mu.Lock()
	defer mu.Unlock()
	if w := workers[nice]; w != nil {
		return w
	}
	w := &worker{jobs: make(chan func())}
	ready := make(chan struct{})
	go func() {
		// Locked for good: the thread runs this goroutine only, and the
		// goroutine never ends, so neither does the thread.
		runtime.LockOSThread()
		w.err = unix.Setpriority(unix.PRIO_PROCESS, 0, nice)
		close(ready)
		for job := range w.jobs {
			job()
		}
	}()
	<-ready
	workers[nice] = w
	return w
}
