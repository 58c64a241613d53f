// Package threadprio lowers the CPU priority of the calling goroutine's
// thread, for background work (compression, parked helpers) that should
// take only CPU time nothing else wants.
package threadprio

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// Lower locks the calling goroutine to its OS thread and sets that
// thread's nice value (nice is per thread on Linux; processes the thread
// starts inherit it). The goroutine must never unlock: a goroutine that
// ends locked ends its thread, so the lowered priority reaches no other
// goroutine. On error (a seccomp policy, say) the priority is unchanged
// and the goroutine is still locked.
func Lower(nice int) error {
	runtime.LockOSThread()
	return unix.Setpriority(unix.PRIO_PROCESS, 0, nice)
}
