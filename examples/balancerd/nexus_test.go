package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/balancer"
	"github.com/paaskit/paaskit/nexus"
	"github.com/paaskit/paaskit/zmqloop"
)

// announceEnv makes the test binary a runner node's announcer:
// "RESOLVERS|ID|ADDR" (for the test that kills one).
const announceEnv = "BALANCERD_TEST_ANNOUNCE"

const testSecret = "balancerd-nexus-test-secret-0123"

func TestMain(m *testing.M) {
	if spec := os.Getenv(announceEnv); spec != "" {
		os.Exit(childAnnouncer(spec))
	}
	os.Exit(m.Run())
}

func testCodec() *zmqloop.Codec {
	ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte(testSecret)})
	if err != nil {
		panic(err)
	}
	c, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	if err != nil {
		panic(err)
	}
	return c
}

func childAnnouncer(spec string) int {
	f := strings.Split(spec, "|")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	a, err := nexus.NewAnnouncer(nexus.AnnouncerConfig{Resolvers: strings.Split(f[0], ","), Codec: testCodec(),
		Instance: nexus.Instance{Kind: "runner", ID: f[1], Endpoints: map[string]string{"http": f[2]}},
		Interval: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("announcing")
	if err := a.Run(ctx); err != nil {
		return 1
	}
	return 0
}

func startAnnouncer(t *testing.T, resolvers []string, id, addr string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), announceEnv+"="+strings.Join(resolvers, ",")+"|"+id+"|"+addr)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	_, err = bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	return cmd
}

// --nexus: the node table follows the runner nodes that announce
// themselves to a resolver pair. A node that stops heartbeating (its
// process killed, no goodbye) leaves after its grace period, and only the
// sites it had move.
func TestNexusNodeLeavesAfterGraceOnlyItsSitesMove(t *testing.T) {
	t.Setenv("NEXUS_SECRET", testSecret)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var resolvers []string
	for i := 0; i < 2; i++ {
		r, err := nexus.NewResolver(nexus.ResolverConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: testCodec(),
			Interval: 100 * time.Millisecond, SuspectAfter: 300 * time.Millisecond, Grace: 300 * time.Millisecond, Logger: quiet})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
		<-r.Ready()
		resolvers = append(resolvers, r.Endpoints()[0])
	}
	kids := map[string]*exec.Cmd{}
	for _, id := range []string{"r1", "r2", "r3"} {
		kids[id] = startAnnouncer(t, resolvers, id, node(t, strings.ToUpper(id)))
	}

	o, err := parseFlags([]string{"--nexus", strings.Join(resolvers, ","), "--listen", "127.0.0.1:0"}, io.Discard)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan *balancer.Proxy, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, o, quiet, func(p *balancer.Proxy) { started <- p }) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	p := <-started
	nodeIDs := func() string {
		var ids []string
		for _, n := range p.Table().Nodes() {
			ids = append(ids, n.ID)
		}
		return strings.Join(ids, ",")
	}
	require.Eventually(t, func() bool { return nodeIDs() == "r1,r2,r3" }, 10*time.Second, 10*time.Millisecond)

	hosts := make([]string, 3000)
	before := map[string]string{}
	for i := range hosts {
		hosts[i] = fmt.Sprintf("site%d.example.com", i)
		n, err := p.Table().Pick(hosts[i])
		require.NoError(t, err)
		before[hosts[i]] = n.ID
	}
	fetch := func(host string) string {
		req, _ := http.NewRequest("GET", "http://"+p.Addr().String()+"/", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, body)
	}
	var onR2 string
	for _, h := range hosts {
		if before[h] == "r2" {
			onR2 = h
			break
		}
	}
	require.Equal(t, "200 R2", fetch(onR2))

	require.NoError(t, kids["r2"].Process.Kill()) // no goodbye: it just stops beating
	_ = kids["r2"].Wait()
	killed := time.Now()
	require.Eventually(t, func() bool { return nodeIDs() == "r1,r3" }, 10*time.Second, 10*time.Millisecond)
	t.Logf("r2 left the table %v after its kill (suspect after 300ms, grace 300ms)", time.Since(killed).Round(time.Millisecond))

	moved, others := 0, 0
	for _, h := range hosts {
		n, err := p.Table().Pick(h)
		require.NoError(t, err)
		if before[h] == "r2" {
			require.NotEqual(t, "r2", n.ID)
			continue
		}
		others++
		if n.ID != before[h] {
			moved++
		}
	}
	t.Logf("removing r2 moved %d of the %d hosts that were not on it", moved, others)
	require.LessOrEqual(t, moved, len(hosts)/50, "hosts of the surviving nodes moved")
	got := fetch(onR2)
	require.True(t, got == "200 R1" || got == "200 R3", "r2's site now served by another node, got %q", got)
}

func TestNexusFlagErrors(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	o, err := parseFlags([]string{"--nexus", "bogus", "--listen", "127.0.0.1:0"}, io.Discard)
	require.NoError(t, err)
	require.ErrorContains(t, serve(context.Background(), o, quiet, nil), "--nexus")
	o, err = parseFlags([]string{"--nexus", "tcp://127.0.0.1:1", "--table", "/nonexistent/table", "--listen", "127.0.0.1:0"}, io.Discard)
	require.NoError(t, err)
	require.ErrorContains(t, serve(context.Background(), o, quiet, nil), "initial table")
}

// With --nexus and --table, the file gives the sites (and may pin a site
// to a static node); fed nodes serve the sites that name no node; a fed
// node with a static node's id is the file's; an empty feed keeps the
// table in force.
func TestComposerJoinsFileSitesWithFedNodes(t *testing.T) {
	p, err := balancer.New(balancer.Config{Addr: "127.0.0.1:0"})
	require.NoError(t, err)
	c := &composer{proxy: p, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		text: "node static1 127.0.0.1:9000\nhost pinned.example static1\nhost *\n"}
	c.setNodes([]balancer.Node{{ID: "r1", Addr: "127.0.0.1:9001"}, {ID: "static1", Addr: "127.0.0.1:9999"}})
	ids := func() (out []string) {
		for _, n := range p.Table().Nodes() {
			out = append(out, n.ID+"="+n.Addr)
		}
		return out
	}
	require.Equal(t, []string{"r1=127.0.0.1:9001", "static1=127.0.0.1:9000"}, ids())
	n, err := p.Table().Pick("pinned.example")
	require.NoError(t, err)
	require.Equal(t, "static1", n.ID)
	require.Equal(t, 2, p.Table().Len())

	c.text = "host *\n"
	c.setNodes(nil)
	require.Equal(t, []string{"r1=127.0.0.1:9001", "static1=127.0.0.1:9000"}, ids(), "no nodes: the table in force stays")
	c.setNodes([]balancer.Node{{ID: "r2", Addr: "127.0.0.1:9002"}})
	require.Equal(t, []string{"r2=127.0.0.1:9002"}, ids())
}
