package runner_test

import (
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/runner"
)

// parkedHelpers lists this process's children that are init helpers still
// waiting for a sandbox: argv[0] paaskit-init, in no app's cgroup, and no
// child of their own (a helper given its sandbox forks the app at once).
func parkedHelpers(t *testing.T) []int {
	t.Helper()
	var pids []int
	for _, pid := range childrenOf(os.Getpid()) {
		dir := "/proc/" + strconv.Itoa(pid)
		cmdline, err := os.ReadFile(dir + "/cmdline")
		if err != nil || !bytes.HasPrefix(cmdline, []byte("paaskit-init\x00")) {
			continue
		}
		status, err := os.ReadFile(dir + "/status")
		if err != nil || strings.Contains(string(status), "\nState:\tZ") {
			continue
		}
		// A given helper is in its app's cgroup, even while it ends.
		cg, _ := os.ReadFile(dir + "/cgroup")
		if strings.Contains(string(cg), "paaskit-test-") {
			continue
		}
		if len(childrenOf(pid)) == 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestInitHelperPool: instances start from parked helpers; a parked helper
// that died (killed by anyone) costs a fresh start, never a failed one;
// the pool refills; nothing of it outlives Run.
func TestInitHelperPool(t *testing.T) {
	// The pool fills at nice 19, from idle CPU only: on a machine the
	// rest of the suite keeps busy, a helper (this race-built binary,
	// ~90 ms of CPU) takes seconds to park, so the waits for a full pool
	// are long (one CI run took more than 10 s to refill two).
	const refill = 60 * time.Second
	// The default helper, this binary re-executed, as in production.
	e := newEnv(t, func(c *runner.Config) { c.InitPath = "" })
	require.Eventually(t, func() bool { return len(parkedHelpers(t)) == runner.DefaultInitPool },
		refill, 10*time.Millisecond, "the pool never filled")

	// A parked helper waits at the lowest priority, on every thread.
	parked := parkedHelpers(t)
	for _, pid := range parked {
		for _, n := range niceOf(t, pid) {
			require.Equal(t, 19, n, "parked helper %d", pid)
		}
	}

	// A start takes one of the parked helpers: the instance's PID is one
	// that was parked, and it and the app run at the runner's priority.
	e.put(spec("pooled"))
	e.mustGet("pooled.example", "/")
	st := e.status("pooled")
	require.NotNil(t, st.Instance)
	require.Contains(t, parked, st.Instance.PID, "the instance did not start from a parked helper")
	apps := childrenOf(st.Instance.PID)
	require.NotEmpty(t, apps)
	for _, pid := range append(apps, st.Instance.PID) {
		for _, n := range niceOf(t, pid) {
			require.Equal(t, 0, n, "process %d of the instance", pid)
		}
	}
	require.NoError(t, e.r.Stop(t.Context(), "pooled"))

	// Every parked helper killed: the next start execs a fresh one and
	// answers.
	require.Eventually(t, func() bool { return len(parkedHelpers(t)) == runner.DefaultInitPool },
		refill, 10*time.Millisecond, "the pool never refilled")
	dead := parkedHelpers(t)
	t.Logf("killing parked helpers %v", dead)
	for _, pid := range dead {
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	}
	// Dead, not merely signalled (a process on its way out has already
	// lost its cmdline but not yet its descriptors): a helper killed
	// while it builds a sandbox fails that start, as a fresh one would.
	for _, pid := range dead {
		require.Eventually(t, func() bool {
			// A zombie leader whose other threads still run holds
			// the descriptors: dead is no thread but the leader left.
			tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
			if err != nil || len(tasks) == 0 {
				return true
			}
			stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
			if err != nil {
				return true
			}
			// pid (comm) state ...
			rest := stat[bytes.LastIndexByte(stat, ')')+1:]
			return len(tasks) == 1 && (bytes.HasPrefix(rest, []byte(" Z")) || bytes.HasPrefix(rest, []byte(" X")))
		}, 10*time.Second, time.Millisecond, "helper %d did not die", pid)
	}
	e.mustGet("pooled.example", "/")
	st = e.status("pooled")
	require.NotNil(t, st.Instance)
	require.NotContains(t, dead, st.Instance.PID)
	require.NoError(t, e.r.Stop(t.Context(), "pooled"))

	// And it refills after that, with live helpers.
	require.Eventually(t, func() bool {
		now := parkedHelpers(t)
		for _, pid := range now {
			if slices.Contains(dead, pid) {
				return false
			}
		}
		return len(now) == runner.DefaultInitPool
	}, refill, 10*time.Millisecond, "the pool never refilled after its helpers were killed")

	// Nothing parked outlives Run, not even as a zombie.
	e.stop()
	require.Empty(t, parkedHelpers(t))
	// A helper's command name is its executable's, /proc/self/exe.
	require.Empty(t, childrenNamed(t, "exe"))
}

// TestInitPoolOffAndBounds: InitPool -1 parks nothing and starts still
// work; a size out of range is refused.
func TestInitPoolOffAndBounds(t *testing.T) {
	for _, n := range []int{-2, 65} {
		_, err := runner.New(runner.Config{StateDir: t.TempDir(), InitPool: n})
		require.ErrorContains(t, err, "InitPool")
	}
	e := newEnv(t, func(c *runner.Config) { c.InitPool = -1 })
	e.put(spec("unpooled"))
	e.mustGet("unpooled.example", "/")
	require.Empty(t, parkedHelpers(t))
}

// niceOf returns the nice value of each thread of process pid.
func niceOf(t *testing.T, pid int) []int {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	require.NoError(t, err)
	var nices []int
	for _, task := range tasks {
		stat, err := os.ReadFile(dir + task.Name() + "/stat")
		require.NoError(t, err)
		// pid (comm) state ppid ...: nice is the 19th field.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		n, err := strconv.Atoi(f[16])
		require.NoError(t, err)
		nices = append(nices, n)
	}
	require.NotEmpty(t, nices)
	return nices
}

// childrenNamed lists this process's children (zombies included) whose
// command name (zombies keep it) is name.
func childrenNamed(t *testing.T, name string) []int {
	t.Helper()
	var pids []int
	for _, pid := range childrenOf(os.Getpid()) {
		status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err == nil && strings.HasPrefix(string(status), "Name:\t"+name+"\n") {
			pids = append(pids, pid)
		}
	}
	return pids
}
