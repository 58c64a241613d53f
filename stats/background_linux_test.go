package stats

import (
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestCompressorThreadIsNiced: the goroutine that gzips chunks runs on a
// thread of its own at backgroundNice, and the lowered priority does not
// leak to the thread of any other goroutine.
func TestCompressorThreadIsNiced(t *testing.T) {
	before, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	require.NoError(t, err)
	got := make(chan int, 1)
	go func() {
		lowerThreadPriority()
		// getpriority returns 20-nice for PRIO_PROCESS on Linux.
		p, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
		if err != nil {
			p = -1
		}
		got <- 20 - p
	}()
	require.Equal(t, backgroundNice, <-got)
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
