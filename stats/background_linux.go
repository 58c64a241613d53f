package stats

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// backgroundNice is the nice value of the goroutine that gzips rotated
// chunks: ingestion (the collector's receive, journal and sink writes)
// comes first when the cores are busy, and compression, which only has to
// keep up on average, takes what is left.
const backgroundNice = 10

// lowerThreadPriority locks the calling goroutine to its OS thread and
// lowers that thread's scheduling priority (nice is per thread on Linux).
// The goroutine must not unlock it: when it returns, the runtime ends the
// thread rather than hand a lowered one to other goroutines. Failure
// (a seccomp policy, say) leaves the priority as it was.
func lowerThreadPriority() {
	runtime.LockOSThread()
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), backgroundNice)
}
