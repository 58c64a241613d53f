package threadprio

import (
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestLowerEndsWithItsGoroutine: the goroutine runs on a thread of its
// own at the nice value asked for, and the lowered priority does not leak
// to the thread of any other goroutine.
func TestLowerEndsWithItsGoroutine(t *testing.T) {
	const nice = 10
	before, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	require.NoError(t, err)
	got := make(chan int, 1)
	go func() {
		if err := Lower(nice); err != nil {
			got <- -100
			return
		}
		// getpriority returns 20-nice for PRIO_PROCESS on Linux.
		p, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
		if err != nil {
			p = -1
		}
		got <- 20 - p
	}()
	require.Equal(t, nice, <-got)
	// Goroutines that run later land on threads at the old priority: the
	// lowered thread ended with its goroutine.
	for range 50 {
		done := make(chan int, 1)
		go func() {
			p, _ := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
			done <- p
		}()
		require.Equal(t, before, <-done, "a goroutine ran on the lowered thread")
	}
}
