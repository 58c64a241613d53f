package runner_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/testserver"
	"github.com/paaskit/paaskit/runner"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// netNames are the bridge and nftables table a runner with this
// CgroupRoot owns (runner/network_linux.go derives them the same way).
func netNames(cgroupRoot string) (bridge, table string) {
	h := fnv.New32a()
	h.Write([]byte(cgroupRoot))
	tag := fmt.Sprintf("%08x", h.Sum32())[:6]
	return "pk" + tag + "br", "paaskit_" + tag
}

// leftovers lists the links and tables of a runner's network that exist.
func leftovers(t *testing.T, cgroupRoot string) []string {
	t.Helper()
	br, table := netNames(cgroupRoot)
	var out []string
	links, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	require.NoError(t, err, "%s (apt-get install iproute2)", links)
	for _, line := range strings.Split(string(links), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], br[:8]) {
			out = append(out, "link "+strings.TrimSuffix(f[1], ":"))
		}
	}
	tables, err := exec.Command("nft", "list", "tables").CombinedOutput()
	require.NoError(t, err, "%s (apt-get install nftables)", tables)
	if strings.Contains(string(tables), table) {
		out = append(out, "table "+table)
	}
	return out
}

// freeHostPort is a TCP port free on the host's loopback right now.
func freeHostPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// hostListener is a server of the host on all addresses: what an app must
// not reach (an admin port, say). It answers every connection.
func hostListener(t *testing.T) int {
	l, err := net.Listen("tcp", "0.0.0.0:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.0 200 OK\r\n\r\nHOST\n"))
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

func TestNetworkPolicyNoneIsLoopbackOnly(t *testing.T) {
	e := newEnv(t, nil)
	iso := e.r.Isolation()
	require.True(t, iso.Network && iso.Egress, "missing: %v", iso.Missing)
	e.put(hostileSpec(t, "netnone"))
	e.put(hostileSpec(t, "neighbour"))
	// A listen on 0.0.0.0 inside is not a port of the host.
	port := freeHostPort(t)
	require.Equal(t, "listening\n", e.mustGet("netnone.example", fmt.Sprintf("/listen?port=%d", port)))
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("the app's listen on 0.0.0.0:%d is reachable from the host", port)
	}
	// The host's loopback services are not there: the node front, an
	// admin port, PostgreSQL, Redis.
	pg := testserver.Postgres(t)
	rd := testserver.Redis(t)
	targets := map[string]string{
		"front": e.front,
		"admin": fmt.Sprintf("127.0.0.1:%d", hostListener(t)),
	}
	for name, dsn := range map[string]string{"postgres": pg, "redis": rd} {
		targets[name] = hostPortOf(t, dsn)
	}
	for name, addr := range targets {
		body := e.mustGet("netnone.example", "/connect?addr="+addr)
		require.True(t, strings.HasPrefix(body, "refused"), "%s at %s: %s", name, addr, body)
	}
	// Only loopback exists.
	dev := e.mustGet("netnone.example", "/addrs")
	require.Contains(t, dev, "lo:")
	require.Equal(t, 3, strings.Count(dev, "\n"), "only lo in /proc/net/dev:\n%s", dev)
	// Abstract sockets: another app's, and the host's, are out of reach.
	require.Equal(t, "listening\n", e.mustGet("neighbour.example", "/abstract?name=paaskit-secret"))
	require.Equal(t, "connected HTTP/1.0 200 abstract\n", e.mustGet("neighbour.example", "/connect?addr=abstract:paaskit-secret"), "the app reaches its own")
	require.Contains(t, e.mustGet("netnone.example", "/connect?addr=abstract:paaskit-secret"), "refused")
	hl, err := net.Listen("unix", "@paaskit-host-secret")
	require.NoError(t, err)
	defer hl.Close()
	require.Contains(t, e.mustGet("netnone.example", "/connect?addr=abstract:paaskit-host-secret"), "refused")
}

// hostPortOf pulls host:port out of a PostgreSQL or Redis URL.
func hostPortOf(t *testing.T, dsn string) string {
	t.Helper()
	s := dsn
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	if i := strings.LastIndex(s, "@"); i >= 0 {
		s = s[i+1:]
	}
	if i := strings.IndexAny(s, "/?"); i >= 0 {
		s = s[:i]
	}
	_, _, err := net.SplitHostPort(s)
	require.NoError(t, err, "address in %q", dsn)
	return s
}

func TestTCPAppsGetTheirPortInTheirOwnNamespace(t *testing.T) {
	for _, f := range fronts {
		t.Run(f.name, func(t *testing.T) {
			e := newEnvFront(t, f.tweak, f.handler)
			for _, n := range []string{"tcpone", "tcptwo"} {
				s := hostileSpec(t, n)
				s.Listen = "tcp"
				e.put(s)
			}
			// Both bind 127.0.0.1:8000, each in its own namespace.
			for k := 0; k < 3; k++ {
				require.Contains(t, e.mustGet("tcpone.example", "/"), "hostile")
				require.Contains(t, e.mustGet("tcptwo.example", "/"), "hostile")
			}
			c, err := net.DialTimeout("tcp", "127.0.0.1:8000", time.Second)
			if err == nil {
				c.Close()
			}
		})
	}
}

func TestBadNetworkSpecsAreRefusedAndOthersUnaffected(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("bystander"))
	e.mustGet("bystander.example", "/")
	for name, c := range map[string]struct {
		net  runner.Network
		want string
	}{
		"unknown policy":             {runner.Network{Policy: "open"}, `network.policy "open": want "none", "egress" or "allow-only"`},
		"allow-only, no destination": {runner.Network{Policy: runner.PolicyAllowOnly}, `network.policy "allow-only" needs at least one network.allow destination`},
		"allow with none":            {runner.Network{Allow: []string{"1.2.3.4"}}, `network.allow needs network.policy "egress"`},
		"unresolvable":               {runner.Network{Policy: "egress", Allow: []string{"no-such-host.invalid:5432"}}, `cannot resolve no-such-host.invalid`},
		"bad port":                   {runner.Network{Policy: "egress", Allow: []string{"1.2.3.4:99999"}}, `port "99999" is not 1-65535`},
		"ipv6":                       {runner.Network{Policy: "egress", Allow: []string{"[::1]:80"}}, `only IPv4`},
	} {
		s := spec("badnet")
		s.Network = c.net
		err := e.r.Put(s)
		require.ErrorIs(t, err, runner.ErrBadSpec, name)
		require.ErrorContains(t, err, c.want, name)
	}
	_, ok := e.r.App("badnet")
	require.False(t, ok, "a refused spec is not added")
	require.Equal(t, "hello bystander\n", e.mustGet("bystander.example", "/"))
}

// testNetns is a network namespace of the test's own, linked to the host
// by a veth: 10.250.N.1 on the host, 10.250.N.2 inside, where servers
// listen. It stands for a database or an outside service.
type testNetns struct {
	name, hostIP, innerIP string
}

func newTestNetns(t *testing.T) *testNetns {
	t.Helper()
	n := os.Getpid()%200 + 20
	ns := &testNetns{name: fmt.Sprintf("pkt-dst-%d", n), hostIP: fmt.Sprintf("10.250.%d.1", n), innerIP: fmt.Sprintf("10.250.%d.2", n)}
	hv, dv := fmt.Sprintf("pkt-h-%d", n), fmt.Sprintf("pkt-d-%d", n)
	run := func(args ...string) {
		out, err := exec.Command("ip", args...).CombinedOutput()
		require.NoError(t, err, "ip %v: %s (apt-get install iproute2)", args, out)
	}
	_ = exec.Command("ip", "netns", "del", ns.name).Run()
	_ = exec.Command("ip", "link", "del", hv).Run()
	run("netns", "add", ns.name)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", hv).Run()
		_ = exec.Command("ip", "netns", "del", ns.name).Run()
	})
	run("link", "add", hv, "type", "veth", "peer", "name", dv, "netns", ns.name)
	run("addr", "add", ns.hostIP+"/30", "dev", hv)
	run("link", "set", hv, "up")
	run("-n", ns.name, "addr", "add", ns.innerIP+"/30", "dev", dv)
	run("-n", ns.name, "link", "set", dv, "up")
	run("-n", ns.name, "link", "set", "lo", "up")
	return ns
}

// listen starts a server inside the namespace on innerIP:port that
// answers "HTTP/1.0 200 OK" and tag.
func (ns *testNetns) listen(t *testing.T, port int, tag string) {
	t.Helper()
	ns.listenAt(t, ns.innerIP, port, tag)
}

// listenAt is listen on another address of the namespace.
func (ns *testNetns) listenAt(t *testing.T, ip string, port int, tag string) {
	t.Helper()
	errc := make(chan error, 1)
	var l net.Listener
	go func() {
		runtime.LockOSThread()
		host, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(host)
		fd, err := unix.Open("/run/netns/"+ns.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		l, err = net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
		if serr := unix.Setns(host, unix.CLONE_NEWNET); serr != nil {
			errc <- serr
			return // the thread stays locked and dies
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	require.NoError(t, <-errc)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.0 200 " + tag + "\r\n\r\n"))
			c.Close()
		}
	}()
}

func TestEgressReachesAllowedDestinationsOnly(t *testing.T) {
	forward := ipForward(t)
	dst := newTestNetns(t)
	dst.listen(t, 8080, "ALLOWED")
	dst.listen(t, 8081, "FORBIDDEN")
	subnet := fmt.Sprintf("10.238.%d.0/24", os.Getpid()%200+20)
	var cgroupRoot string
	e := newEnv(t, func(c *runner.Config) { c.EgressSubnet = subnet; cgroupRoot = c.CgroupRoot })
	egress := func(name string, allow ...string) {
		s := hostileSpec(t, name)
		s.Network = runner.Network{Policy: runner.PolicyEgress, Allow: allow}
		e.put(s)
	}
	egress("out", dst.innerIP+":8080")
	egress("other")
	e.put(hostileSpec(t, "closed"))
	adminPort := hostListener(t)
	gw := strings.TrimSuffix(subnet, "0/24") + "1"

	require.Equal(t, "connected HTTP/1.0 200 ALLOWED\n", e.mustGet("out.example", "/connect?addr="+dst.innerIP+":8080"))
	refused := map[string]string{
		"another port of the allowed host":  dst.innerIP + ":8081",
		"the host through its veth address": fmt.Sprintf("%s:%d", dst.hostIP, adminPort),
		"the host through the bridge":       fmt.Sprintf("%s:%d", gw, adminPort),
		"the host's loopback":               fmt.Sprintf("127.0.0.1:%d", adminPort),
		"the node front":                    e.front,
		"the cloud metadata address":        "169.254.169.254:80",
	}
	// Another app, even one listening on all its addresses.
	require.Equal(t, "listening\n", e.mustGet("other.example", "/listen?port=9000"))
	otherIP := strings.TrimSpace(e.mustGet("other.example", "/myip"))
	require.True(t, strings.HasPrefix(otherIP, strings.TrimSuffix(subnet, "0/24")), otherIP)
	refused["another app"] = otherIP + ":9000"
	for what, addr := range refused {
		body := e.mustGet("out.example", "/connect?addr="+addr)
		require.True(t, strings.HasPrefix(body, "refused"), "%s (%s): %s", what, addr, body)
	}
	// The allowed destination is the spec's: the other egress app and
	// the loopback-only app do not reach it.
	require.True(t, strings.HasPrefix(e.mustGet("other.example", "/connect?addr="+dst.innerIP+":8080"), "refused"))
	require.True(t, strings.HasPrefix(e.mustGet("closed.example", "/connect?addr="+dst.innerIP+":8080"), "refused"))
	require.NotEmpty(t, leftovers(t, cgroupRoot), "the bridge and table exist while egress apps run")
	// Stopping the runner leaves nothing of the network set-up.
	stopEnv(t, e)
	require.Empty(t, leftovers(t, cgroupRoot))
	require.Equal(t, forward, ipForward(t), "net.ipv4.ip_forward is given back")
}

// stopEnv runs the env's cleanups now (they are idempotent).
func stopEnv(t *testing.T, e *env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, e.shutdown(ctx))
}

// childEnv selects a child mode of the test binary (see TestMain).
const childEnv = "PAASKIT_RUNNER_TEST_CHILD"

// runChild runs a child mode and exits; it returns only when the process
// is not a child.
func runChild() {
	switch os.Getenv(childEnv) {
	case "":
		return
	case "egress":
		childEgress()
	case "isolation":
		childIsolation()
	}
	os.Exit(3)
}

// childEgress runs a runner with an egress app started, says so, and
// waits to be killed.
func childEgress() {
	state, root, subnet := os.Getenv("CHILD_STATE"), os.Getenv("CHILD_CGROUP_ROOT"), os.Getenv("CHILD_SUBNET")
	r, err := runner.New(runner.Config{StateDir: state, CgroupRoot: root, EgressSubnet: subnet, Sink: &memSink{}})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	go r.Run(context.Background())
	<-r.Ready()
	s := runner.Spec{Name: "victim", Hosts: []string{"victim.example"}, Image: os.Getenv("CHILD_IMAGE"),
		Command: []string{"/usr/bin/python3", "/app/hostile/hostile.py"}, Network: runner.Network{Policy: runner.PolicyEgress}}
	if err := r.Put(s); err == nil {
		err = r.Start(context.Background(), "victim")
	}
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	select {}
}

// childIsolation prints the isolation a runner finds, as JSON.
func childIsolation() {
	state, err := os.MkdirTemp("", "rt")
	if err != nil {
		os.Exit(1)
	}
	defer os.RemoveAll(state)
	r, err := runner.New(runner.Config{StateDir: state, CgroupRoot: fmt.Sprintf("paaskit-test-child-%d", os.Getpid()), Sink: &memSink{}})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	<-r.Ready()
	b, _ := json.Marshal(r.Isolation())
	fmt.Println(string(b))
	cancel()
	<-done
	os.Exit(0)
}

// ipForward reads net.ipv4.ip_forward, which an egress runner sets while
// it runs and must give back.
func ipForward(t *testing.T) string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

func TestNothingOfTheNetworkOutlivesASIGKILLedRunner(t *testing.T) {
	forward := ipForward(t)
	state := newStateDir(t)
	root := fmt.Sprintf("paaskit-test-%d-%d", os.Getpid(), cgroupSeq.Add(1))
	subnet := fmt.Sprintf("10.239.%d.0/24", os.Getpid()%200+20)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=egress", "CHILD_STATE="+state, "CHILD_CGROUP_ROOT="+root,
		"CHILD_SUBNET="+subnet, "CHILD_IMAGE="+hostileImage(t))
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)
	left := leftovers(t, root)
	require.Len(t, left, 3, "a bridge, a veth and a table while the child runs: %v", left)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	// The app dies with the runner (the init helper's parent-death
	// signal), its namespace with it, and the veth with the namespace;
	// the bridge and table stay until a runner of the same name starts.
	require.Eventually(t, func() bool { return len(leftovers(t, root)) == 2 }, 10*time.Second, 20*time.Millisecond,
		"left: %v", leftovers(t, root))
	r, err := runner.New(runner.Config{StateDir: state, CgroupRoot: root, EgressSubnet: subnet, Sink: &memSink{}})
	require.NoError(t, err)
	require.Empty(t, leftovers(t, root), "New removes what the killed runner left")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	<-r.Ready()
	cancel()
	require.NoError(t, <-done)
	require.Empty(t, leftovers(t, root))
	require.Equal(t, forward, ipForward(t), "net.ipv4.ip_forward is given back")
}

func TestRunnerWithoutCapNetAdminReportsWhatIsMissing(t *testing.T) {
	capsh, err := exec.LookPath("capsh")
	require.NoError(t, err, "the test drops CAP_NET_ADMIN with capsh (apt-get install libcap2-bin)")
	cmd := exec.Command(capsh, "--drop=cap_net_admin", "--", "-c", `exec "$0" -test.run='^$'`, os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=isolation")
	out, err := cmd.Output()
	require.NoError(t, err, "%s", out)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var iso runner.IsolationStatus
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &iso), "%s", out)
	require.False(t, iso.Network)
	require.False(t, iso.Egress)
	missing := strings.Join(iso.Missing, "\n")
	require.Contains(t, missing, "network: the runner lacks CAP_NET_ADMIN, so apps share the host's network")
	require.Contains(t, missing, "egress: needs the network namespaces")
	// What does not need the capability is still in force.
	require.True(t, iso.User && iso.Namespaces && iso.Capabilities && iso.Seccomp, "%+v", iso)
	_ = strconv.Itoa
}

func TestTwoRunnersOnOneEgressSubnetIsAClearError(t *testing.T) {
	subnet := fmt.Sprintf("10.236.%d.0/24", os.Getpid()%200+20)
	a := newEnv(t, func(c *runner.Config) { c.EgressSubnet = subnet })
	b := newEnv(t, func(c *runner.Config) { c.EgressSubnet = subnet })
	for _, e := range []*env{a, b} {
		s := hostileSpec(t, "egressor")
		s.Network = runner.Network{Policy: runner.PolicyEgress}
		e.put(s)
	}
	require.Contains(t, a.mustGet("egressor.example", "/"), "hostile")
	code, body, _ := b.get("egressor.example", "/")
	require.Equal(t, 503, code)
	require.Contains(t, body, "egress subnet "+subnet+" overlaps")
	require.Contains(t, body, "give this runner another Config.EgressSubnet")
	require.Contains(t, a.mustGet("egressor.example", "/"), "hostile", "the first runner's app is unaffected")
}

// TestTwoRunnersShareIPForward: net.ipv4.ip_forward is one setting for the
// host. Two runners with egress apps both reach their destination; the
// first to stop leaves the setting (and so the other's egress) alone, and
// the last puts back what the host had. While the host's own value was
// off, each runner's rules refuse forwarding that touches no runner's
// bridge, so the survivor keeps the host from routing between its other
// links.
func TestTwoRunnersShareIPForward(t *testing.T) {
	forward := ipForward(t)
	// From "off", as on a host that never routed.
	require.NoError(t, os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0"), 0))
	t.Cleanup(func() { _ = os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(forward), 0) })
	dst := newTestNetns(t)
	dst.listen(t, 8080, "ALLOWED")
	n := os.Getpid()%200 + 20
	var roots [2]string
	envs := make([]*env, 2)
	for k := range envs {
		envs[k] = newEnv(t, func(c *runner.Config) {
			c.EgressSubnet = fmt.Sprintf("10.%d.%d.0/24", 241+k, n)
			roots[k] = c.CgroupRoot
		})
		s := hostileSpec(t, "out")
		s.Network = runner.Network{Policy: runner.PolicyEgress, Allow: []string{dst.innerIP + ":8080"}}
		envs[k].put(s)
	}
	reach := func(e *env) string { return e.mustGet("out.example", "/connect?addr="+dst.innerIP+":8080") }
	for _, e := range envs {
		require.Equal(t, "connected HTTP/1.0 200 ALLOWED\n", reach(e))
	}
	require.Equal(t, "1", ipForward(t))
	for _, root := range roots {
		_, table := netNames(root)
		out, err := exec.Command("nft", "list", "table", "inet", table).CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), `iifname != "pk*" oifname != "pk*" drop`, "table %s", table)
	}

	// The first runner stops: the second still forwards.
	stopEnv(t, envs[0])
	require.Empty(t, leftovers(t, roots[0]))
	require.Equal(t, "1", ipForward(t), "the other runner's apps still need forwarding")
	require.Equal(t, "connected HTTP/1.0 200 ALLOWED\n", reach(envs[1]))

	// The last one out puts back the host's value, and leaves no record.
	stopEnv(t, envs[1])
	require.Empty(t, leftovers(t, roots[1]))
	require.Equal(t, "0", ipForward(t))
	users, err := os.ReadDir("/run/paaskit/ip_forward.users")
	require.NoError(t, err)
	for _, u := range users {
		br0, _ := netNames(roots[0])
		br1, _ := netNames(roots[1])
		require.NotContains(t, []string{br0, br1}, u.Name(), "a stopped runner's marker")
	}
	_, err = os.Stat("/run/paaskit/ip_forward.orig")
	require.ErrorIs(t, err, os.ErrNotExist)
}
