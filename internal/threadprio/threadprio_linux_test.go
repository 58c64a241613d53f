package threadprio

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestDoRunsOnOneLowThread: fn runs at the nice value asked for, on the
// same thread every time, and the lowered priority reaches no other
// goroutine's thread.
func TestDoRunsOnOneLowThread(t *testing.T) {
	const nice = 10
	before, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	require.NoError(t, err)
	var tids []int
	for range 5 {
		var got int
		require.NoError(t, Do(nice, func() {
			// getpriority returns 20-nice for PRIO_PROCESS on Linux.
			p, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
			if err != nil {
				p = -1
			}
			got = 20 - p
			tids = append(tids, unix.Gettid())
		}))
		require.Equal(t, nice, got)
	}
	for _, tid := range tids {
		require.Equal(t, tids[0], tid, "every call runs on the one thread")
	}
	for range 50 {
		done := make(chan int, 1)
		go func() {
			p, _ := unix.Getpriority(unix.PRIO_PROCESS, 0)
			done <- p
		}()
		require.Equal(t, before, <-done, "a goroutine ran on a lowered thread")
	}
}

// TestDoEndsNoThread: work done through Do ends no thread of the
// process, so a child started with a parent-death signal, from whatever
// thread, lives on. The package once locked a goroutine to its thread and
// let it end locked, which ended the thread and killed the children it
// had forked (a stats test's collector process died that way mid-run).
func TestDoEndsNoThread(t *testing.T) {
	threads := func() map[string]bool {
		ents, err := os.ReadDir("/proc/self/task")
		require.NoError(t, err)
		m := map[string]bool{}
		for _, e := range ents {
			m[e.Name()] = true
		}
		return m
	}
	// Children from many goroutines, so from many of the runtime's
	// threads, each to be killed if its thread ends.
	var kids []*exec.Cmd
	for range 8 {
		c := exec.Command("sleep", "30")
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		errc := make(chan error, 1)
		go func() { errc <- c.Start() }()
		require.NoError(t, <-errc)
		kids = append(kids, c)
	}
	t.Cleanup(func() {
		for _, c := range kids {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	})
	before := threads()
	for i := range 20 {
		done := make(chan error, 1)
		go func() { done <- Do(5+i%3, func() { time.Sleep(time.Millisecond) }) }()
		require.NoError(t, <-done)
	}
	after := threads()
	for tid := range before {
		require.True(t, after[tid], "thread %s ended", tid)
	}
	for _, c := range kids {
		require.NoError(t, c.Process.Signal(syscall.Signal(0)), "child %d was killed", c.Process.Pid)
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(c.Process.Pid) + "/stat")
		require.NoError(t, err)
		require.NotContains(t, string(raw), ") Z ", "child %d was killed", c.Process.Pid)
	}
}

// TestDoPanicReachesTheCaller: a panic in fn is the caller's, and the
// thread goes on serving.
func TestDoPanicReachesTheCaller(t *testing.T) {
	require.PanicsWithValue(t, "boom", func() { _ = Do(7, func() { panic("boom") }) })
	ran := false
	require.NoError(t, Do(7, func() { ran = true }))
	require.True(t, ran)
}
