package runner_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paaskit/paaskit/runner"
	"github.com/stretchr/testify/require"
)

// probeScript is a hostile one-off command: it tries to connect to every
// host:port argument and prints what happened ("sleep" prints "ready" and
// waits to be killed, "links" counts its network devices).
const probeScript = `
import socket, sys, time
for a in sys.argv[1:]:
    if a == "sleep":
        print("ready", flush=True)
        time.sleep(120)
        continue
    if a == "links":
        print("links", len(open("/proc/net/dev").read().splitlines()) - 2, flush=True)
        continue
    h, p = a.rsplit(":", 1)
    try:
        s = socket.create_connection((h, int(p)), timeout=10)  # refusals are active: only a success waits
        first = s.recv(100).decode(errors="replace").split("\r\n")[0]
        print(a, "connected", first, flush=True)
    except OSError as e:
        print(a, "refused", e, flush=True)
`

// probe runs probeScript in a one-off command of app and returns its
// lines by address.
func probe(t *testing.T, r *runner.Runner, app string, opts runner.CommandOptions, args ...string) map[string]string {
	t.Helper()
	cmd, err := r.CommandWith(app, append([]string{"/usr/bin/python3", "-c", probeScript}, args...), opts)
	require.NoError(t, err)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, " ")
		got[k] = v
	}
	return got
}

// publicAddr gives the test's namespace an address outside every range
// the egress filter refuses (192.88.99.0/24, the retired 6to4 relay
// block), routed from the host through its veth: what stands for the
// public internet.
func (ns *testNetns) publicAddr(t *testing.T) string {
	t.Helper()
	n := strings.Split(ns.innerIP, ".")[2]
	ip := "192.88.99." + n
	run := func(args ...string) {
		out, err := exec.Command("ip", args...).CombinedOutput()
		require.NoError(t, err, "ip %v: %s", args, out)
	}
	run("-n", ns.name, "addr", "add", ip+"/32", "dev", "pkt-d-"+n)
	run("route", "replace", ip+"/32", "via", ns.innerIP)
	t.Cleanup(func() { _ = exec.Command("ip", "route", "del", ip+"/32").Run() })
	return ip
}

// egressElements counts the addresses in the runner's egress set: one per
// namespace on the bridge.
func egressElements(t *testing.T, cgroupRoot string) int {
	t.Helper()
	_, table := netNames(cgroupRoot)
	out, err := exec.Command("nft", "list", "set", "inet", table, "egress").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return len(regexp.MustCompile(`\d+\.\d+\.\d+\.\d+`).FindAll(out, -1))
}

// commandLinks lists the veths of one-off commands (named <bridge[:8]>c…).
func commandLinks(t *testing.T, cgroupRoot string) []string {
	t.Helper()
	br, _ := netNames(cgroupRoot)
	var out []string
	for _, l := range leftovers(t, cgroupRoot) {
		if strings.HasPrefix(l, "link "+br[:8]+"c") {
			out = append(out, l)
		}
	}
	return out
}

func TestCommandsGetTheAppsNetworkPolicy(t *testing.T) {
	forward := ipForward(t)
	dst := newTestNetns(t)
	dst.listen(t, 8080, "ALLOWED")
	dst.listen(t, 8081, "FORBIDDEN")
	public := dst.publicAddr(t)
	dst.listenAt(t, public, 8082, "PUBLIC")
	subnet := fmt.Sprintf("10.234.%d.0/24", os.Getpid()%200+20)
	var cgroupRoot string
	e := newEnv(t, func(c *runner.Config) { c.EgressSubnet = subnet; cgroupRoot = c.CgroupRoot })
	allowed := dst.innerIP + ":8080"
	e.put(hostileSpec(t, "closed"))
	s := hostileSpec(t, "out")
	s.Network = runner.Network{Policy: runner.PolicyEgress, Allow: []string{allowed}}
	e.put(s)
	s = hostileSpec(t, "other")
	s.Network = runner.Network{Policy: runner.PolicyEgress}
	e.put(s)
	// Another app, listening on all its addresses.
	require.Equal(t, "listening\n", e.mustGet("other.example", "/listen?port=9000"))
	otherApp := strings.TrimSpace(e.mustGet("other.example", "/myip")) + ":9000"
	admin := hostListener(t)
	gw := strings.TrimSuffix(subnet, "0/24") + "1"
	forbidden := map[string]string{
		"another port of the allowed host": dst.innerIP + ":8081",
		"the host's loopback":              fmt.Sprintf("127.0.0.1:%d", admin),
		"the host through the bridge":      fmt.Sprintf("%s:%d", gw, admin),
		"the host through its veth":        fmt.Sprintf("%s:%d", dst.hostIP, admin),
		"the node front":                   e.front,
		"another app":                      otherApp,
		"the cloud metadata address":       "169.254.169.254:80",
	}
	args := []string{"links", allowed, public + ":8082"}
	for _, a := range forbidden {
		args = append(args, a)
	}
	requireRefused := func(got map[string]string, who string) {
		t.Helper()
		for what, a := range forbidden {
			// Refused at once, by a reset or an unreachable network:
			// never a wait (a timeout, an ARP query unanswered).
			require.Regexp(t, `^refused \[Errno (111|101)\]`, got[a], "%s reached %s (%s), or waited: %s", who, what, a, got[a])
		}
	}
	base := egressElements(t, cgroupRoot)

	// Default policy: loopback only, as the app's instances.
	got := probe(t, e.r, "closed", runner.CommandOptions{}, args...)
	require.Equal(t, "1", got["links"], "only lo")
	require.True(t, strings.HasPrefix(got[allowed], "refused"), got[allowed])
	require.True(t, strings.HasPrefix(got[public+":8082"], "refused"), got[public+":8082"])
	requireRefused(got, "a none command")

	// The app's egress policy: its allowed destination and the public
	// address, nothing of the host or the other apps.
	got = probe(t, e.r, "out", runner.CommandOptions{}, args...)
	require.Equal(t, "2", got["links"], "lo and eth0")
	require.Equal(t, "connected HTTP/1.0 200 ALLOWED", got[allowed])
	require.Equal(t, "connected HTTP/1.0 200 PUBLIC", got[public+":8082"])
	requireRefused(got, "an egress command")

	// A policy of the command's own: only the named host:port.
	only := &runner.Network{Policy: runner.PolicyAllowOnly, Allow: []string{allowed}}
	got = probe(t, e.r, "closed", runner.CommandOptions{Network: only}, args...)
	require.Equal(t, "connected HTTP/1.0 200 ALLOWED", got[allowed])
	require.True(t, strings.HasPrefix(got[public+":8082"], "refused"), "allow-only reached a public address: %s", got[public+":8082"])
	requireRefused(got, "an allow-only command")

	// Each command's veth, address and filter entries go when it ends.
	require.Eventually(t, func() bool { return len(commandLinks(t, cgroupRoot)) == 0 && egressElements(t, cgroupRoot) == base },
		10*time.Second, 20*time.Millisecond, "left: %v, %d egress addresses (want %d)", commandLinks(t, cgroupRoot), egressElements(t, cgroupRoot), base)

	// Also when the command is SIGKILLed, children and all.
	cmd, err := e.r.CommandWith("out", []string{"/bin/sh", "-c", "/usr/bin/python3 -c \"$0\" sleep & wait", probeScript}, runner.CommandOptions{})
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)
	require.Len(t, commandLinks(t, cgroupRoot), 1, "the running command's veth")
	require.Equal(t, base+1, egressElements(t, cgroupRoot))
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	require.Eventually(t, func() bool { return len(commandLinks(t, cgroupRoot)) == 0 && egressElements(t, cgroupRoot) == base },
		10*time.Second, 20*time.Millisecond, "after SIGKILL, left: %v", commandLinks(t, cgroupRoot))

	// And when a Cmd is built and never run: its namespace goes with the
	// Cmd.
	cmd, err = e.r.CommandWith("out", []string{"/bin/true"}, runner.CommandOptions{})
	require.NoError(t, err)
	require.Len(t, commandLinks(t, cgroupRoot), 1)
	cmd = nil
	_ = cmd
	require.Eventually(t, func() bool {
		runtime.GC()
		return len(commandLinks(t, cgroupRoot)) == 0 && egressElements(t, cgroupRoot) == base
	},
		10*time.Second, 50*time.Millisecond, "after an unused Cmd, left: %v", commandLinks(t, cgroupRoot))

	// Bad options are clear errors.
	for what, c := range map[string]struct {
		opts runner.CommandOptions
		want string
	}{
		"unknown policy":       {runner.CommandOptions{Network: &runner.Network{Policy: "open"}}, `network.policy "open"`},
		"unresolvable":         {runner.CommandOptions{Network: &runner.Network{Policy: runner.PolicyAllowOnly, Allow: []string{"no-such-host.invalid:443"}}}, "cannot resolve no-such-host.invalid"},
		"mount over /app":      {runner.CommandOptions{Mounts: []runner.Mount{{Host: t.TempDir(), Path: "/app/x"}}}, "/app belongs to the sandbox"},
		"mount over /usr":      {runner.CommandOptions{Mounts: []runner.Mount{{Host: t.TempDir(), Path: "/usr/lib/x"}}}, "/usr belongs to the sandbox"},
		"mount hiding /data":   {runner.CommandOptions{Mounts: []runner.Mount{{Host: t.TempDir(), Path: "/"}}}, "other than /"},
		"mount of nothing":     {runner.CommandOptions{Mounts: []runner.Mount{{Host: "/nonexistent-dir"}}}, "/nonexistent-dir"},
		"PAASKIT_ variable":    {runner.CommandOptions{Env: []string{"PAASKIT_APP=x"}}, "PAASKIT_* variables are the runner's"},
		"relative working dir": {runner.CommandOptions{Dir: "data"}, "is not absolute"},
	} {
		_, err := e.r.CommandWith("closed", []string{"/bin/true"}, c.opts)
		require.ErrorContains(t, err, c.want, what)
	}
	require.Empty(t, commandLinks(t, cgroupRoot), "a refused command leaves nothing")

	stopEnv(t, e)
	require.Empty(t, leftovers(t, cgroupRoot))
	require.Equal(t, forward, ipForward(t), "net.ipv4.ip_forward is given back")
}

func TestCommandMountsAndEnvironment(t *testing.T) {
	e := newEnv(t, nil)
	e.put(hostileSpec(t, "mounter"))
	uid, gid, err := e.r.AppUser("mounter")
	require.NoError(t, err)
	// Under /tmp on purpose: the sandbox's own /tmp must not hide it.
	rw, err := os.MkdirTemp("", "cmd-rw-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(rw) })
	require.NoError(t, os.Chown(rw, uid, gid))
	ro := t.TempDir()
	require.NoError(t, os.WriteFile(ro+"/seen", []byte("from the host\n"), 0o644))
	require.NoError(t, os.Chmod(ro, 0o755))
	cmd, err := e.r.CommandWith("mounter", []string{"/bin/sh", "-c", `pwd; echo "$HOME $EXTRA"; cat ` + ro + `/seen; echo made > ` + rw + `/out && echo wrote; (echo x > ` + ro + `/nope) 2>&1 | grep -o "Read-only file system"`},
		runner.CommandOptions{Dir: rw, Env: []string{"HOME=" + rw, "EXTRA=yes"}, Mounts: []runner.Mount{{Host: rw, Writable: true}, {Host: ro}}})
	require.NoError(t, err)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, rw+"\n"+rw+" yes\nfrom the host\nwrote\nRead-only file system\n", string(out))
	b, err := os.ReadFile(rw + "/out")
	require.NoError(t, err)
	require.Equal(t, "made\n", string(b))
	fi, err := os.Stat(rw + "/out")
	require.NoError(t, err)
	require.Equal(t, uint32(uid), fi.Sys().(*syscall.Stat_t).Uid, "written by the app's UID")

	// Without the data directory there is no /data to write to.
	cmd, err = e.r.CommandWith("mounter", []string{"/bin/sh", "-c", `echo $HOME; test -e /data && echo data || echo no data`}, runner.CommandOptions{NoDataDir: true})
	require.NoError(t, err)
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, "/tmp\nno data\n", string(out))
}
