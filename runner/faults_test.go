package runner_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paaskit/paaskit/runner"
	"github.com/stretchr/testify/require"
)

func TestFloodOfOutputKeepsRunnerMemoryBounded(t *testing.T) {
	sink := &memSink{}
	e := newEnv(t, func(c *runner.Config) { c.Sink = sink })
	const total = 1 << 30
	s := spec("flood", "flood="+strconv.Itoa(total))
	s.StartTimeout = runner.Duration(5 * time.Minute)
	e.put(s)
	runtime.GC()
	base := heapInuse()
	var peak uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.mustGet("flood.example", "/")
	}()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(2 * time.Minute)
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-tick.C:
			if h := heapInuse(); h > peak {
				peak = h
			}
		case <-deadline:
			t.Fatalf("flood not through after 2 minutes: %d bytes so far", sink.bytes.Load())
		}
	}
	// Every byte but the newlines reaches the sink. The app's answer can
	// come before the runner has drained the last of its output pipe
	// (CI 22:43: 20 KB short at the answer), so the sink is given time.
	require.Eventually(t, func() bool { return sink.bytes.Load()+sink.count.Load() > int64(total-4096) },
		30*time.Second, 5*time.Millisecond, "the whole flood reached the sink")
	lines := sink.count.Load()
	t.Logf("flood: %d lines, %d bytes; heap in use %d MiB at start, peak %d MiB", lines, sink.bytes.Load(), base>>20, peak>>20)
	require.Less(t, peak, base+32<<20, "a 1 GiB flood must not grow the runner's heap by 32 MiB")
}

func TestLongLinesAreSplitAndMarked(t *testing.T) {
	e := newEnv(t, func(c *runner.Config) { c.MaxLineBytes = 1024 })
	e.put(spec("longline", "flood=1"))
	e.mustGet("longline.example", "/")
	// The app answers once it has written the line; the runner's pump may
	// still be cutting the last pieces, so count until the ending piece.
	count := func() (pieces, marked int) {
		e.sink.mu.Lock()
		defer e.sink.mu.Unlock()
		for _, l := range e.sink.lines {
			if l.App == "longline" && l.Stream == runner.Stdout {
				pieces++
				require.LessOrEqual(t, len(l.Text), 1024)
				if l.Truncated {
					marked++
				}
			}
		}
		return pieces, marked
	}
	require.Eventually(t, func() bool { p, m := count(); return p > m }, 30*time.Second, 5*time.Millisecond,
		"the piece that ends the long line")
	// The 1 MiB line arrives as 1024 full pieces marked as continued,
	// then the empty piece that ends it.
	pieces, marked := count()
	require.Equal(t, 1025, pieces)
	require.Equal(t, 1024, marked)
}

func TestForkBombIsStoppedByProcessLimit(t *testing.T) {
	e := newEnv(t, nil)
	s := spec("bomber")
	s.Limits.Processes = 64
	e.put(s)
	body := e.mustGet("bomber.example", "/forkbomb")
	m := regexp.MustCompile(`started (\d+), stopped by: (.*)`).FindStringSubmatch(body)
	require.NotNil(t, m, body)
	n, _ := strconv.Atoi(m[1])
	require.Less(t, n, 64, body)
	require.Contains(t, m[2], "resource temporarily unavailable", body)
	// The app and the node keep going.
	require.Equal(t, "hello bomber\n", e.mustGet("bomber.example", "/"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, e.r.Stop(ctx, "bomber"))
	st := e.status("bomber")
	require.Greater(t, st.LastExit.ForkRefusals, int64(0), "the pids limit refused forks")
	require.Empty(t, procsOfUID(st.UID))
}

func TestMemoryLimitKillIsReportedAsOOM(t *testing.T) {
	clk := newFakeClock()
	e := newEnv(t, func(c *runner.Config) { c.Clock = clk })
	s := spec("hungry")
	s.Limits.Memory = 128 << 20
	e.put(s)
	e.mustGet("hungry.example", "/")
	code, _, _ := e.get("hungry.example", "/alloc?mb=512")
	require.Equal(t, 502, code, "the instance died under the request")
	require.Eventually(t, func() bool {
		st := e.status("hungry")
		return st.OOMKills == 1 && st.LastExit != nil
	}, 10*time.Second, 10*time.Millisecond)
	st := e.status("hungry")
	require.Equal(t, "oom", st.LastExit.Reason)
	require.True(t, st.LastExit.OOM)
	// The kernel may charge a page or so past the limit before it
	// reclaims or kills (cgroup v1's max_usage_in_bytes showed 4 KiB
	// over), so the peak is checked against the limit plus 1 MiB.
	require.LessOrEqual(t, st.LastExit.PeakMemory, int64(129<<20))
	require.Greater(t, st.LastExit.PeakMemory, int64(64<<20))
	// It restarts after the backoff and serves small requests again.
	clk.Advance(100 * time.Millisecond)
	clk.reapRound(t)
	require.Eventually(t, func() bool { return e.status("hungry").State == "running" }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "allocated 8 MiB\n", e.mustGet("hungry.example", "/alloc?mb=8"))
}

func TestWritesOutsideDataAreRefused(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("writer"))
	for _, p := range []string{"/app/x", "/etc/x", "/usr/x", "/x", "/bin/x", "/run/x", "/etc/passwd"} {
		body := e.mustGet("writer.example", "/write?path="+p)
		require.Contains(t, body, "error:", "writing %s must fail", p)
		require.True(t, strings.Contains(body, "read-only file system") || strings.Contains(body, "permission denied"), "%s: %s", p, body)
	}
	require.Equal(t, "ok\n", e.mustGet("writer.example", "/write?path=/data/ok"))
	require.Equal(t, "ok\n", e.mustGet("writer.example", "/write?path=/tmp/ok"))
	_, err := os.Stat(filepath.Join(e.state, "data", "writer", "ok"))
	require.NoError(t, err, "/data is the app's data directory on the host")
	_, err = os.Stat(filepath.Join(imageDir, "x"))
	require.True(t, os.IsNotExist(err), "the image is untouched")
	// /tmp is private: the host's /tmp did not get the file.
	_, err = os.Stat("/tmp/ok")
	require.True(t, os.IsNotExist(err))
}

func TestSignallingAnotherAppIsRefused(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("victim"))
	e.put(spec("attacker"))
	e.mustGet("victim.example", "/")
	e.mustGet("attacker.example", "/")
	vuid := e.status("victim").UID
	pids := procsOfUID(vuid)
	require.NotEmpty(t, pids)
	for _, pid := range append(pids, e.status("victim").Instance.PID) {
		body := e.mustGet("attacker.example", "/kill?pid="+strconv.Itoa(pid))
		require.Contains(t, body, "error:", "killing pid %d of another app must fail", pid)
	}
	require.Equal(t, "hello victim\n", e.mustGet("victim.example", "/"))
	require.Equal(t, pids, procsOfUID(vuid))
}

func TestSignallingAnotherAppIsRefusedWithoutPIDNamespace(t *testing.T) {
	// With namespaces off the UIDs alone must keep apps apart.
	e := newEnv(t, func(c *runner.Config) { c.Isolation.NoNamespaces = true })
	e.put(spec("victim2"))
	e.put(spec("attacker2"))
	e.mustGet("victim2.example", "/")
	e.mustGet("attacker2.example", "/")
	pids := procsOfUID(e.status("victim2").UID)
	require.NotEmpty(t, pids)
	for _, pid := range pids {
		body := e.mustGet("attacker2.example", "/kill?pid="+strconv.Itoa(pid))
		require.Contains(t, body, "operation not permitted")
	}
	require.Equal(t, "hello victim2\n", e.mustGet("victim2.example", "/"))
	require.Contains(t, e.r.Isolation().Missing, "namespaces: switched off by Config")
}

func writeSpec(t *testing.T, dir, file, body string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+file+".tmp")
	require.NoError(t, os.WriteFile(tmp, []byte(body), 0o644))
	require.NoError(t, os.Rename(tmp, filepath.Join(dir, file)))
}

func specJSON(name, extra string) string {
	return fmt.Sprintf(`{"name": %q, "hosts": [%q], "image": %q, "command": ["/app/testapp"]%s}`,
		name, name+".example", imageDir, extra)
}

func TestSpecDirectory(t *testing.T) {
	specs := t.TempDir()
	writeSpec(t, specs, "good.json", specJSON("good", ""))
	writeSpec(t, specs, "broken.json", `{"name": "broken", "hosts": [`)
	writeSpec(t, specs, "noimage.json", `{"name": "noimage", "hosts": ["noimage.example"], "image": "/nonexistent/image", "command": ["/app/x"]}`)
	writeSpec(t, specs, "typo.json", `{"name": "typo", "hosts": ["typo.example"], "image": "/", "command": ["/x"], "limits": {"memroy": "1G"}}`)
	e := newEnv(t, func(c *runner.Config) { c.SpecDir = specs })

	require.Eventually(t, func() bool { _, ok := e.r.App("good"); return ok }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "hello good\n", e.mustGet("good.example", "/"))
	errs := e.r.Status().SpecErrors
	require.Contains(t, errs[filepath.Join(specs, "broken.json")], "malformed JSON")
	require.Contains(t, errs[filepath.Join(specs, "noimage.json")], "image /nonexistent/image")
	require.Contains(t, errs[filepath.Join(specs, "typo.json")], `unknown field "memroy"`)
	for _, h := range []string{"broken.example", "noimage.example", "typo.example"} {
		code, _, _ := e.get(h, "/")
		require.Equal(t, 404, code)
	}

	// Adding a file makes its app startable.
	writeSpec(t, specs, "second.json", specJSON("second", ""))
	require.Eventually(t, func() bool { _, ok := e.r.App("second"); return ok }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "hello second\n", e.mustGet("second.example", "/"))

	// Changing a file restarts its app gracefully with the new spec.
	first := e.status("good").Instance.ID
	writeSpec(t, specs, "good.json", specJSON("good", `, "env": {"PAASKIT_APP_EXTRA": "1"}, "idle_timeout": "1h"`))
	require.Eventually(t, func() bool {
		s, _ := e.r.App("good")
		return time.Duration(s.IdleTimeout) == time.Hour
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "hello good\n", e.mustGet("good.example", "/"))
	require.NotEqual(t, first, e.status("good").Instance.ID)

	// Breaking a good file keeps the app on its last good spec.
	writeSpec(t, specs, "good.json", `{"name": "good", `)
	require.Eventually(t, func() bool {
		return e.r.Status().SpecErrors[filepath.Join(specs, "good.json")] != ""
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "hello good\n", e.mustGet("good.example", "/"))

	// Removing a file stops and removes its app.
	uid := e.status("second").UID
	require.NoError(t, os.Remove(filepath.Join(specs, "second.json")))
	require.Eventually(t, func() bool { _, ok := e.r.App("second"); return !ok }, 10*time.Second, 10*time.Millisecond)
	code, _, h := e.get("second.example", "/")
	require.Equal(t, 404, code)
	require.Equal(t, "1", h.Get(runner.MissHeader))
	require.Eventually(t, func() bool { return len(procsOfUID(uid)) == 0 }, 10*time.Second, 10*time.Millisecond)

	// Fixing the broken file adds its app.
	writeSpec(t, specs, "broken.json", specJSON("broken", ""))
	require.Eventually(t, func() bool { _, ok := e.r.App("broken"); return ok }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "hello broken\n", e.mustGet("broken.example", "/"))
}

func TestUIDsAreStableAcrossRestarts(t *testing.T) {
	state, err := os.MkdirTemp("", "rt")
	require.NoError(t, err)
	defer os.RemoveAll(state)
	uidOf := func(names ...string) map[string]int {
		r, err := runner.New(runner.Config{StateDir: state, CgroupRoot: fmt.Sprintf("paaskit-test-%d-%d", os.Getpid(), cgroupSeq.Add(1)), UIDMin: 50000, UIDMax: 50009, Sink: &memSink{}})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()
		uids := map[string]int{}
		for _, n := range names {
			require.NoError(t, r.Put(spec(n)))
			cmd, err := r.Command(n, []string{"/bin/true"})
			require.NoError(t, err)
			out, err := quickExit(cmd).CombinedOutput()
			require.NoError(t, err, "%s", out)
			st, err := r.AppStatus(n)
			require.NoError(t, err)
			uids[n] = st.UID
		}
		cancel()
		require.NoError(t, <-done)
		return uids
	}
	first := uidOf("alpha", "beta")
	require.NotEqual(t, first["alpha"], first["beta"])
	for _, u := range first {
		require.True(t, u >= 50000 && u <= 50009)
	}
	second := uidOf("beta", "gamma", "alpha")
	require.Equal(t, first["alpha"], second["alpha"])
	require.Equal(t, first["beta"], second["beta"])
	require.NotContains(t, []int{first["alpha"], first["beta"]}, second["gamma"])
	b, err := os.ReadFile(filepath.Join(state, "uids.json"))
	require.NoError(t, err)
	require.Contains(t, string(b), `"gamma"`)
}

func TestUIDRangeExhausted(t *testing.T) {
	e := newEnv(t, func(c *runner.Config) { c.UIDMin, c.UIDMax = 60000, 60000 })
	e.put(spec("one"))
	e.put(spec("two"))
	e.mustGet("one.example", "/")
	code, body, _ := e.get("two.example", "/")
	require.Equal(t, 503, code)
	require.Contains(t, body, "no free UID")
}

func TestCommandRunsInTheAppSandbox(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("cmdapp"))
	cmd, err := e.r.Command("cmdapp", []string{"/bin/sh", "-c", "id -u; id -g; hostname; echo $HOME; echo hi > /data/from-cmd; touch /app/x 2>&1 || true; ls /proc | grep -c '^[0-9]'"})
	require.NoError(t, err)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, quickExit(cmd).Run(), out.String())
	uid := strconv.Itoa(e.status("cmdapp").UID)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.GreaterOrEqual(t, len(lines), 6, out.String())
	require.Equal(t, uid, lines[0])
	require.Equal(t, uid, lines[1])
	require.Equal(t, "cmdapp", lines[2])
	require.Equal(t, "/data", lines[3])
	require.Contains(t, lines[4], "Read-only file system")
	n, _ := strconv.Atoi(lines[len(lines)-1])
	require.Less(t, n, 10, "own PID namespace: only the command's few processes")
	b, err := os.ReadFile(filepath.Join(e.state, "data", "cmdapp", "from-cmd"))
	require.NoError(t, err)
	require.Equal(t, "hi\n", string(b))

	_, err = e.r.Command("nosuch", []string{"/bin/true"})
	require.ErrorIs(t, err, runner.ErrUnknownApp)
	_, err = e.r.Command("cmdapp", nil)
	require.Error(t, err)
}

func TestCPUAndMemoryAreAccounted(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("busy"))
	e.mustGet("busy.example", "/alloc?mb=64")
	st := e.status("busy")
	require.NotNil(t, st.Instance)
	require.Greater(t, time.Duration(st.Instance.CPU), time.Duration(0))
	require.Greater(t, st.Instance.PeakMem, int64(64<<20))
	require.Greater(t, st.CPU, time.Duration(0))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, e.r.Stop(ctx, "busy"))
	st = e.status("busy")
	require.Greater(t, st.LastExit.CPU, time.Duration(0))
	require.Greater(t, st.LastExit.PeakMemory, int64(64<<20))
	require.Greater(t, st.CPU, time.Duration(0), "CPU of finished instances is kept")
}

func TestTCPApp(t *testing.T) {
	e := newEnv(t, nil)
	s := spec("tcpapp")
	s.Listen = "tcp"
	e.put(s)
	require.Equal(t, "hello tcpapp\n", e.mustGet("tcpapp.example", "/"))
	require.Equal(t, "", e.whoami("tcpapp.example").Socket)
}

func TestIsolationOff(t *testing.T) {
	e := newEnv(t, func(c *runner.Config) { c.Isolation.Off = true })
	iso := e.r.Isolation()
	require.False(t, iso.User || iso.Namespaces || iso.Cgroup || iso.SandboxRoot || iso.Rlimits)
	require.NotEmpty(t, iso.Missing)
	e.put(spec("plain"))
	w := e.whoami("plain.example")
	require.Equal(t, os.Getuid(), w.UID)
	require.Equal(t, filepath.Join(e.state, "run"), filepath.Dir(filepath.Dir(w.Socket)))
}

func TestPutRejectsBadSpecsAndHostClashes(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("owner"))
	clash := spec("clash")
	clash.Hosts = []string{"OWNER.example"}
	err := e.r.Put(clash)
	require.ErrorIs(t, err, runner.ErrBadSpec)
	require.Contains(t, err.Error(), `already routed to app "owner"`)
	bad := spec("Bad_Name")
	require.ErrorIs(t, e.r.Put(bad), runner.ErrBadSpec)
	noimg := spec("noimg")
	noimg.Image = "/nonexistent"
	require.ErrorIs(t, e.r.Put(noimg), runner.ErrBadSpec)
	// The good app is unaffected.
	require.Equal(t, "hello owner\n", e.mustGet("owner.example", "/"))
}

func TestRemoveStopsInstance(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("gone"))
	e.mustGet("gone.example", "/")
	uid := e.status("gone").UID
	require.NoError(t, e.r.Remove("gone"))
	require.ErrorIs(t, e.r.Remove("gone"), runner.ErrUnknownApp)
	code, _, _ := e.get("gone.example", "/")
	require.Equal(t, 404, code)
	require.Eventually(t, func() bool { return len(procsOfUID(uid)) == 0 }, 10*time.Second, 10*time.Millisecond)
}

func TestOutputIsCapturedWithTags(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("talker"))
	e.mustGet("talker.example", "/stderr?s=hello-stderr")
	require.Eventually(t, func() bool {
		return strings.Contains(e.sink.text("talker", runner.Stderr), "hello-stderr")
	}, 10*time.Second, 10*time.Millisecond)
	e.sink.mu.Lock()
	defer e.sink.mu.Unlock()
	for _, l := range e.sink.lines {
		if string(l.Text) == "hello-stderr" {
			require.Equal(t, "talker", l.App)
			require.Equal(t, e.status("talker").Instance.ID, l.Instance)
			require.Equal(t, runner.Stderr, l.Stream)
			require.WithinDuration(t, time.Now(), l.Time, time.Minute)
			return
		}
	}
	t.Fatal("line not found")
}

func TestHundredAppsActiveAtOnce(t *testing.T) {
	e := newEnv(t, func(c *runner.Config) { c.DefaultStartTimeout = 2 * time.Minute })
	const n = 100
	for k := 0; k < n; k++ {
		e.put(spec(fmt.Sprintf("many%d", k)))
	}
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for k := 0; k < n; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			code, body, _ := e.get(fmt.Sprintf("many%d.example", k), "/")
			if code != 200 || body != fmt.Sprintf("hello many%d\n", k) {
				errs <- fmt.Sprintf("many%d: %d %s", k, code, body)
			}
		}(k)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	running := 0
	for _, a := range e.r.Status().Apps {
		if a.State == "running" {
			running++
		}
	}
	require.Equal(t, n, running)
}

func TestLimitsApplyInsideTheSandbox(t *testing.T) {
	e := newEnv(t, nil)
	s := spec("limited")
	s.Limits = runner.Limits{Memory: 64 << 20, Processes: 77, OpenFiles: 123, CPUWeight: 50, CPUs: 0.5}
	e.put(s)
	cmd, err := e.r.Command("limited", []string{"/usr/bin/awk", "/Max (core file size|processes|open files)/ { print $(NF-2) }", "/proc/self/limits"})
	require.NoError(t, err)
	out, err := quickExit(cmd).CombinedOutput()
	require.NoError(t, err, "%s", out)
	// RLIMIT_NPROC is a backstop 32 above the cgroup's pids.max, which
	// refuses first (the init helper's threads run as the app's UID too).
	require.Equal(t, "0\n109\n123\n", string(out), "core, processes, open files")
	// The instance's cgroup carries the same limits.
	e.mustGet("limited.example", "/")
	id := e.status("limited").Instance.ID
	cg := fmt.Sprintf("%s/limited-%d", e.cfg.CgroupRoot, id)
	if e.r.Isolation().CgroupVersion == 1 {
		requireFile(t, "/sys/fs/cgroup/memory/"+cg+"/memory.limit_in_bytes", strconv.Itoa(64<<20))
		requireFile(t, "/sys/fs/cgroup/pids/"+cg+"/pids.max", "77")
		requireFile(t, "/sys/fs/cgroup/cpu/"+cg+"/cpu.shares", strconv.Itoa(50*1024/100))
		requireFile(t, "/sys/fs/cgroup/cpu/"+cg+"/cpu.cfs_quota_us", "50000")
	} else {
		requireFile(t, "/sys/fs/cgroup/"+cg+"/memory.max", strconv.Itoa(64<<20))
		requireFile(t, "/sys/fs/cgroup/"+cg+"/pids.max", "77")
		requireFile(t, "/sys/fs/cgroup/"+cg+"/cpu.weight", "50")
		requireFile(t, "/sys/fs/cgroup/"+cg+"/cpu.max", "50000 100000")
	}
}

func requireFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, want, strings.TrimSpace(string(b)), path)
}

func TestHungAppGetsGatewayTimeout(t *testing.T) {
	for _, handler := range []bool{false, true} {
		// 1 s: a 100 ms answer must fit with room for a loaded machine (with
		// 300 ms one came late in CI).
		e := newEnvFront(t, func(c *runner.Config) { c.ResponseTimeout = time.Second }, handler)
		e.put(spec("hung"))
		e.mustGet("hung.example", "/")
		code, body, _ := e.get("hung.example", "/hold?ms=5000")
		require.Equal(t, 504, code, "handler path %v: %s", handler, body)
		require.Contains(t, body, "timeout")
		// The app and the front go on; nothing stays in flight.
		require.Equal(t, "hello hung\n", e.mustGet("hung.example", "/"))
		require.Eventually(t, func() bool {
			st := e.status("hung")
			return st.Instance != nil && st.Instance.Active == 0
		}, 10*time.Second, 10*time.Millisecond)
		// A slow answer within the bound is not cut.
		require.Equal(t, "held\n", e.mustGet("hung.example", "/hold?ms=100"))
	}
}
