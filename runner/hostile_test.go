package runner_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/paaskit/paaskit/runner"
	"github.com/stretchr/testify/require"
)

// The tests in this file run a hostile tenant (testdata/hostile.py, under
// Debian's /usr/bin/python3) in a real sandbox, each trying one escape.

var (
	hostileOnce sync.Once
	hostileDir  string
	hostileErr  error
)

// hostileImage is an image holding testdata/hostile.py.
func hostileImage(t testing.TB) string {
	t.Helper()
	hostileOnce.Do(func() {
		if _, err := os.Stat("/usr/bin/python3"); err != nil {
			hostileErr = err
			return
		}
		b, err := os.ReadFile("testdata/hostile.py")
		if err != nil {
			hostileErr = err
			return
		}
		d := filepath.Join(imageDir, "hostile")
		if err = os.MkdirAll(d, 0o755); err == nil {
			err = os.WriteFile(filepath.Join(d, "hostile.py"), b, 0o644)
		}
		hostileDir, hostileErr = imageDir, err
	})
	require.NoError(t, hostileErr, "the hostile app needs Debian's python3 (apt-get install python3)")
	return hostileDir
}

// hostileSpec is a spec running the hostile app.
func hostileSpec(t testing.TB, name string, args ...string) runner.Spec {
	return runner.Spec{
		Name:    name,
		Hosts:   []string{name + ".example"},
		Image:   hostileImage(t),
		Command: append([]string{"/usr/bin/python3", "/app/hostile/hostile.py"}, args...),
	}
}

// rootSocket is a unix socket owned by root, in a root-only directory,
// that records every connection it gets: what a hostile app would aim the
// front at (docker.sock, say).
type rootSocket struct {
	path  string
	conns atomic.Int64
}

func newRootSocket(t *testing.T) *rootSocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "rootsock")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o700))
	rs := &rootSocket{path: filepath.Join(dir, "root.sock")}
	l, err := net.Listen("unix", rs.path)
	require.NoError(t, err)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			rs.conns.Add(1)
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nROOT\n"))
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); os.RemoveAll(dir) })
	return rs
}

func TestAppSocketSwappedForSymlinkReachesNothingOfRoot(t *testing.T) {
	for _, f := range fronts {
		t.Run(f.name, func(t *testing.T) {
			rs := newRootSocket(t)
			e := newEnvFront(t, f.tweak, f.handler)
			e.put(hostileSpec(t, "swapper"))
			uid := e.status("swapper").UID
			body := e.mustGet("swapper.example", "/")
			require.NotContains(t, body, "ROOT")
			require.Equal(t, "swapped\n", e.mustGet("swapper.example", "/swap?target="+rs.path))
			fi, err := os.Lstat(filepath.Join(e.state, "run"))
			require.NoError(t, err)
			require.True(t, fi.IsDir())
			// Every answer closes its connection: each request below is
			// a new connection to the app, made after the swap.
			for k := 0; k < 20; k++ {
				code, body, _ := e.get("swapper.example", "/")
				require.Equal(t, 200, code, body)
				require.NotContains(t, body, "ROOT")
				require.Contains(t, body, "hostile")
			}
			require.Zero(t, rs.conns.Load(), "the root-owned socket got a connection from the front")
			_ = uid
		})
	}
}

func TestAppSocketThatIsASymlinkFailsTheStart(t *testing.T) {
	rs := newRootSocket(t)
	e := newEnv(t, nil)
	s := hostileSpec(t, "linker", "symlink-first")
	s.Env = map[string]string{"HOSTILE_TARGET": rs.path}
	e.put(s)
	code, body, _ := e.get("linker.example", "/")
	require.Equal(t, 503, code)
	require.Contains(t, body, "symlink")
	require.NotContains(t, body, "ROOT")
	require.Zero(t, rs.conns.Load(), "the root-owned socket got a connection from the front")
	require.Contains(t, e.status("linker").LastError, "not to be trusted")
}

func TestPlatformFieldsAreStrippedFromAppResponses(t *testing.T) {
	for _, f := range fronts {
		t.Run(f.name, func(t *testing.T) {
			e := newEnvFront(t, f.tweak, f.handler)
			e.put(hostileSpec(t, "forger"))
			for _, path := range []string{"/forge", "/?forge=1", "/nothing?forge=1"} {
				_, body, h := e.get("forger.example", path)
				for k := range h {
					require.False(t, strings.HasPrefix(strings.ToLower(k), "x-paaskit-"), "%s: the app's %s reached the client (%q)", path, k, body)
				}
			}
			// The front's own miss answer keeps it.
			code, _, h := e.get("nobody.example", "/")
			require.Equal(t, 404, code)
			require.Equal(t, "1", h.Get(runner.MissHeader))
		})
	}
}

// statusField returns a field of a /proc/<pid>/status text.
func statusField(t *testing.T, status, name string) string {
	t.Helper()
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in status:\n%s", name, status)
	return ""
}

func TestSandboxHoldsNoCapabilityAndNoNewPrivs(t *testing.T) {
	e := newEnv(t, nil)
	e.put(hostileSpec(t, "capless"))
	iso := e.r.Isolation()
	require.True(t, iso.Capabilities, "missing: %v", iso.Missing)
	require.True(t, iso.Seccomp, "missing: %v", iso.Missing)
	// The app itself, and PID 1 of its sandbox (the init helper).
	for _, path := range []string{"/status", "/initstatus"} {
		st := e.mustGet("capless.example", path)
		for _, set := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
			require.Equal(t, "0000000000000000", statusField(t, st, set), "%s %s", path, set)
		}
		require.Equal(t, "1", statusField(t, st, "NoNewPrivs"), path)
		require.Equal(t, "2", statusField(t, st, "Seccomp"), path, "filter mode")
		uid := strings.Fields(statusField(t, st, "Uid"))
		require.Len(t, uid, 4)
		for _, u := range uid {
			require.NotEqual(t, "0", u, "%s: nothing in the sandbox runs as root", path)
		}
	}
}

func TestDeniedSystemCallsFailWithEPERM(t *testing.T) {
	e := newEnv(t, nil)
	e.put(hostileSpec(t, "syscaller"))
	for _, name := range []string{"unshare", "mount", "keyctl", "ptrace", "bpf", "add_key", "setns",
		"perf_event_open", "kexec_load", "open_by_handle_at", "userfaultfd", "pivot_root"} {
		require.Equal(t, "errno EPERM\n", e.mustGet("syscaller.example", "/syscall?name="+name), name)
	}
	// An ordinary call still works.
	require.Contains(t, e.mustGet("syscaller.example", "/syscall?name=getpid"), "ok ")
}

func TestSeccompCanBeSwitchedOffAndIsReported(t *testing.T) {
	e := newEnv(t, func(c *runner.Config) { c.Isolation.NoSeccomp = true })
	iso := e.r.Isolation()
	require.False(t, iso.Seccomp)
	require.Contains(t, strings.Join(iso.Missing, "\n"), "seccomp: switched off")
	e.put(hostileSpec(t, "noseccomp"))
	st := e.mustGet("noseccomp.example", "/status")
	require.Equal(t, "0", statusField(t, st, "Seccomp"))
	// Without the filter, capabilities still stop what they stop.
	require.Equal(t, "errno EPERM\n", e.mustGet("noseccomp.example", "/syscall?name=mount"))
}
