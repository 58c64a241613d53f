package balancer

import (
	"errors"
	"fmt"
	"math/rand"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func nodesN(n int) []Node {
	out := make([]Node, n)
	for i := range out {
		out[i] = Node{ID: fmt.Sprintf("node-%02d", i), Addr: fmt.Sprintf("10.0.%d.%d:80", i/250, i%250+1)}
	}
	return out
}

func hostsN(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("site%d.example.com", i)
	}
	return out
}

func picks(t testing.TB, tb *Table, hosts []string) map[string]string {
	out := make(map[string]string, len(hosts))
	for _, h := range hosts {
		n, err := tb.Pick(h)
		require.NoError(t, err)
		out[h] = n.ID
	}
	return out
}

func mustTable(t testing.TB, cfg TableConfig) *Table {
	t.Helper()
	tb, err := NewTable(cfg)
	require.NoError(t, err)
	return tb
}

func moved(a, b map[string]string) int {
	n := 0
	for h, id := range a {
		if b[h] != id {
			n++
		}
	}
	return n
}

// Adding an 11th node to 10 moves at most 1/11 + 2% of 10,000 hosts with
// Maglev; modulo's movement is printed for comparison.
func TestAddEleventhNodeMovement(t *testing.T) {
	hosts := hostsN(10000)
	for _, pol := range []Policy{Maglev, Modulo} {
		ten := mustTable(t, TableConfig{Nodes: nodesN(10), Sites: []Site{{Host: "*"}}, Policy: pol})
		eleven := mustTable(t, TableConfig{Nodes: nodesN(11), Sites: []Site{{Host: "*"}}, Policy: pol})
		a, b := picks(t, ten, hosts), picks(t, eleven, hosts)
		m := moved(a, b)
		frac := float64(m) / float64(len(hosts))
		t.Logf("%s: adding an 11th node moved %d of %d hosts (%.1f%%; ideal %.1f%%)", pol, m, len(hosts), 100*frac, 100.0/11)
		if pol == Maglev {
			require.LessOrEqual(t, frac, 1.0/11+0.02, "maglev moved too many hosts")
			// Maglev shuffles a few hosts between old nodes too; count them.
			between := 0
			for h, id := range b {
				if a[h] != id && id != "node-10" {
					between++
				}
			}
			t.Logf("maglev: %d hosts moved between old nodes", between)
			require.LessOrEqual(t, between, len(hosts)/50)
		} else {
			require.Greater(t, frac, 0.5, "modulo is expected to move most hosts")
		}
	}
}

// Removing a node moves only the hosts it had.
func TestRemoveNodeMovesOnlyItsHosts(t *testing.T) {
	hosts := hostsN(10000)
	all := nodesN(10)
	before := picks(t, mustTable(t, TableConfig{Nodes: all, Sites: []Site{{Host: "*"}}}), hosts)
	without := append(append([]Node(nil), all[:3]...), all[4:]...)
	after := picks(t, mustTable(t, TableConfig{Nodes: without, Sites: []Site{{Host: "*"}}}), hosts)
	extra := 0
	for h, id := range before {
		if id != "node-03" && after[h] != id {
			extra++
		}
	}
	t.Logf("removing node-03 moved %d hosts that were not on it", extra)
	require.LessOrEqual(t, extra, len(hosts)/50, "removal disturbed other nodes' hosts")
}

// The most loaded node carries at most 1.15x the mean.
func TestBalance(t *testing.T) {
	hosts := hostsN(10000)
	for _, n := range []int{10, 11, 100} {
		tb := mustTable(t, TableConfig{Nodes: nodesN(n), Sites: []Site{{Host: "*"}}})
		count := map[string]int{}
		for _, id := range picks(t, tb, hosts) {
			count[id]++
		}
		mx := 0
		for _, c := range count {
			mx = max(mx, c)
		}
		mean := float64(len(hosts)) / float64(n)
		t.Logf("%d nodes: most loaded %d hosts, mean %.1f, ratio %.3f", n, mx, mean, float64(mx)/mean)
		if n <= 11 {
			require.LessOrEqual(t, float64(mx)/mean, 1.15)
		} else {
			// 100 hosts a node: the binomial spread alone is ~10%.
			require.LessOrEqual(t, float64(mx)/mean, 1.45)
		}
	}
}

// Node identity is the id: any order of the same nodes, and other
// addresses, give the same pick for every host.
func TestNodeOrderDoesNotMatter(t *testing.T) {
	hosts := hostsN(2000)
	nodes := nodesN(12)
	want := picks(t, mustTable(t, TableConfig{Nodes: nodes, Sites: []Site{{Host: "*"}}}), hosts)
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 5; i++ {
		sh := append([]Node(nil), nodes...)
		r.Shuffle(len(sh), func(a, b int) { sh[a], sh[b] = sh[b], sh[a] })
		for k := range sh {
			sh[k].Addr = fmt.Sprintf("192.168.1.%d:8%d", k+1, i)
		}
		got := picks(t, mustTable(t, TableConfig{Nodes: sh, Sites: []Site{{Host: "*"}}}), hosts)
		require.Equal(t, want, got, "shuffle %d changed picks", i)
	}
}

func TestOrderIsDistinctAndStartsWithPick(t *testing.T) {
	tb := mustTable(t, TableConfig{Nodes: nodesN(5), Sites: []Site{{Host: "*"}}})
	for _, h := range hostsN(200) {
		order, err := tb.Order(h, 5)
		require.NoError(t, err)
		require.Len(t, order, 5)
		seen := map[string]bool{}
		for _, n := range order {
			require.False(t, seen[n.ID], "node %s twice in order of %s", n.ID, h)
			seen[n.ID] = true
		}
		p, err := tb.Pick(h)
		require.NoError(t, err)
		require.Equal(t, p, order[0])
	}
}

func TestHostMatching(t *testing.T) {
	nodes := []Node{{ID: "a", Addr: "127.0.0.1:1"}, {ID: "b", Addr: "127.0.0.1:2"}, {ID: "c", Addr: "127.0.0.1:3"}}
	tb := mustTable(t, TableConfig{Nodes: nodes, Sites: []Site{
		{Host: "Example.com", Nodes: []string{"a"}},
		{Host: "*.apps.example.com", Nodes: []string{"b"}},
		{Host: "*.example.com", Nodes: []string{"c"}},
	}})
	for host, want := range map[string]string{
		"example.com": "a", "EXAMPLE.COM": "a", "example.com.": "a", "example.com:8080": "a", "Example.Com.:443": "a",
		"x.apps.example.com": "b", "y.x.APPS.example.com": "b", "apps.example.com": "c", "www.example.com": "c",
	} {
		n, err := tb.Pick(host)
		require.NoError(t, err, host)
		require.Equal(t, want, n.ID, host)
	}
	for _, host := range []string{"example.org", "com", "xexample.com"} {
		_, err := tb.Pick(host)
		require.ErrorIs(t, err, ErrUnknownHost, host)
	}
	for _, host := range []string{"", "exa mple.com", "a:b", "example.com:80x", "[::1"} {
		_, err := tb.Pick(host)
		require.Error(t, err, host)
		require.NotErrorIs(t, err, ErrUnknownHost, host)
	}
}

func TestNewTableRejects(t *testing.T) {
	ok := []Node{{ID: "a", Addr: "127.0.0.1:1"}}
	for name, cfg := range map[string]TableConfig{
		"duplicate node":   {Nodes: []Node{{ID: "a", Addr: "127.0.0.1:1"}, {ID: "a", Addr: "127.0.0.1:2"}}},
		"empty id":         {Nodes: []Node{{ID: "", Addr: "127.0.0.1:1"}}},
		"id with comma":    {Nodes: []Node{{ID: "a,b", Addr: "127.0.0.1:1"}}},
		"bad address":      {Nodes: []Node{{ID: "a", Addr: "nowhere"}}},
		"unknown node":     {Nodes: ok, Sites: []Site{{Host: "x.com", Nodes: []string{"zz"}}}},
		"duplicate host":   {Nodes: ok, Sites: []Site{{Host: "x.com"}, {Host: "X.com."}}},
		"duplicate *":      {Nodes: ok, Sites: []Site{{Host: "*"}, {Host: "*"}}},
		"bad host":         {Nodes: ok, Sites: []Site{{Host: "x y.com"}}},
		"bad wildcard":     {Nodes: ok, Sites: []Site{{Host: "*.x/y"}}},
		"site, no nodes":   {Sites: []Site{{Host: "x.com"}}},
		"not prime size":   {Nodes: ok, MaglevSize: 1000},
		"repeated node id": {Nodes: ok, Sites: []Site{{Host: "x.com", Nodes: []string{"a", "a"}}}},
	} {
		_, err := NewTable(cfg)
		require.Error(t, err, name)
		require.True(t, strings.HasPrefix(err.Error(), "balancer:"), "%s: %v", name, err)
	}
}

func TestParseTable(t *testing.T) {
	tb, err := ParseTable(strings.NewReader("# nodes\nnode a 127.0.0.1:1\nnode b 127.0.0.1:2\n\nhost example.com a\nhost *.example.com\nhost * b\npolicy modulo\n"), nil)
	require.NoError(t, err)
	require.Equal(t, 3, tb.Len())
	require.Equal(t, Modulo, tb.Policy())
	n, err := tb.Pick("example.com")
	require.NoError(t, err)
	require.Equal(t, "a", n.ID)
	n, err = tb.Pick("unknown.org")
	require.NoError(t, err)
	require.Equal(t, "b", n.ID)

	_, err = ParseTable(strings.NewReader(""), nil)
	require.ErrorIs(t, err, ErrEmptyTable)
	_, err = ParseTable(strings.NewReader("# only comments\n"), nil)
	require.ErrorIs(t, err, ErrEmptyTable)
	for _, bad := range []string{
		"node a\n", "node a 127.0.0.1:1\nhost\n", "node a 127.0.0.1:1\nfrobnicate x\n",
		"node a 127.0.0.1:1\nhost x.com a,,b\n", "node a 127.0.0.1:1\npolicy ring\n",
		"node a 127.0.0.1:1\nhost x.com b\n",
	} {
		_, err := ParseTable(strings.NewReader(bad), nil)
		require.Error(t, err, "%q", bad)
	}
	_, err = ParseTable(strings.NewReader("node a 127.0.0.1:1\nbogus line here\n"), nil)
	require.ErrorContains(t, err, "line 2")
}

// Reuse shares unchanged pools between reloads.
func TestTableReusePools(t *testing.T) {
	cfg := TableConfig{Nodes: nodesN(20), Sites: []Site{{Host: "*"}}}
	a := mustTable(t, cfg)
	cfg.Reuse = a
	b := mustTable(t, cfg)
	require.Same(t, a.def, b.def)
	cfg.Nodes = nodesN(21)
	c := mustTable(t, cfg)
	require.NotSame(t, a.def, c.def)
}

func TestParsePolicy(t *testing.T) {
	p, err := ParsePolicy("MODULO")
	require.NoError(t, err)
	require.Equal(t, Modulo, p)
	_, err = ParsePolicy("ring")
	require.Error(t, err)
	require.False(t, errors.Is(err, ErrUnknownHost))
}

// BenchmarkLookup measures the route lookup (normalize, table, hash,
// Maglev) at 100,000 hosts and reports the table's memory per host.
func BenchmarkLookup(b *testing.B) {
	const nHosts = 100000
	hosts := hostsN(nHosts)
	sites := make([]Site, len(hosts))
	for i, h := range hosts {
		sites[i] = Site{Host: h}
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	tb := mustTable(b, TableConfig{Nodes: nodesN(10), Sites: sites})
	runtime.GC()
	runtime.ReadMemStats(&m1)
	perHost := float64(m1.HeapAlloc-m0.HeapAlloc) / nHosts
	runtime.KeepAlive(sites)
	raw := make([][]byte, 1024)
	for i := range raw {
		raw[i] = []byte(strings.ToUpper(hosts[(i*7919)%nHosts]) + ":443")
	}
	var buf []byte
	b.ReportAllocs()
	b.ResetTimer()
	var sink int32
	for i := 0; i < b.N; i++ {
		r := raw[i&1023]
		norm, ok := normalizeHost(buf[:0], r)
		if !ok {
			b.Fatal("normalize")
		}
		buf = norm
		p := tb.lookup(norm)
		if p == nil {
			b.Fatal("no site")
		}
		sink += p.at(hostHash(norm), 0)
	}
	_ = sink
	b.ReportMetric(perHost, "bytes/host")
	runtime.KeepAlive(tb)
}

// BenchmarkBuildTable3000x10000 is the cost of a reload of 3,000 nodes and
// 10,000 hosts, fresh and when the node set is unchanged (pools reused).
func BenchmarkBuildTable3000x10000(b *testing.B) {
	nodes := make([]Node, 3000)
	for i := range nodes {
		nodes[i] = Node{ID: fmt.Sprintf("n%d", i), Addr: "127.0.0.1:80"}
	}
	sites := make([]Site, 10000)
	for i := range sites {
		sites[i] = Site{Host: fmt.Sprintf("h%d.example.com", i)}
	}
	b.Run("fresh", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			mustTable(b, TableConfig{Nodes: nodes, Sites: sites})
		}
	})
	b.Run("reuse", func(b *testing.B) {
		prev := mustTable(b, TableConfig{Nodes: nodes, Sites: sites})
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			prev = mustTable(b, TableConfig{Nodes: nodes, Sites: sites, Reuse: prev})
		}
	})
}
