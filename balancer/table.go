package balancer

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
)

// ErrUnknownHost is returned by Table.Pick for a host that matches no site
// and when the table has no default.
var ErrUnknownHost = errors.New("balancer: unknown host")

// Node is one backend the balancer forwards to. ID is its stable identity:
// the hash works on ids, so the same set of ids picks the same node for a
// host on every balancer, whatever order the nodes are listed in and
// whatever their addresses are.
type Node struct {
	ID string
	// Addr is host:port, the host an IP address or a DNS name (looked
	// up at each table load, off the request path: Config.Resolve).
	Addr string
}

// Site maps a host pattern to a set of nodes.
type Site struct {
	// Host is an exact name ("example.com"), a wildcard suffix
	// ("*.example.com", matching any name ending in ".example.com" but not
	// "example.com" itself; the longest suffix wins), or "*" for the
	// default site used when nothing else matches. Matching ignores case,
	// a port and a trailing dot.
	Host string
	// Nodes are the ids of the nodes serving the site; empty means every
	// node in the table.
	Nodes []string
}

// TableConfig describes a routing table.
type TableConfig struct {
	Nodes []Node
	Sites []Site
	// Policy is the hash policy; the zero value is Maglev.
	Policy Policy
	// MaglevSize is the Maglev lookup-table size (a prime); 0 means
	// DefaultMaglevSize. It is raised to at least 100 slots per node.
	// Keep it fixed across reloads: a different size remaps every host.
	MaglevSize int
	// Reuse, if set, is a previous table whose pools (node sets with their
	// lookup tables) are reused when unchanged, which makes reloading a
	// large table cheap.
	Reuse *Table
}

// Table is an immutable routing table: host patterns to pools of nodes.
// It is safe for concurrent use. Build a new one to change routing.
type Table struct {
	nodes  []Node // sorted by id
	index  map[string]int32
	exact  map[string]*pool
	suffix map[string]*pool // keys start with '.'
	def    *pool
	all    *pool
	pools  map[string]*pool
	policy Policy
	sites  int
}

// NewTable validates cfg and builds its table.
func NewTable(cfg TableConfig) (*Table, error) {
	if cfg.Policy != Maglev && cfg.Policy != Modulo {
		return nil, fmt.Errorf("balancer: unknown policy %d", cfg.Policy)
	}
	if cfg.MaglevSize != 0 && (cfg.MaglevSize < 2 || !isPrime(cfg.MaglevSize)) {
		return nil, fmt.Errorf("balancer: MaglevSize %d is not a prime", cfg.MaglevSize)
	}
	t := &Table{
		nodes:  append([]Node(nil), cfg.Nodes...),
		index:  make(map[string]int32, len(cfg.Nodes)),
		exact:  make(map[string]*pool, len(cfg.Sites)),
		suffix: make(map[string]*pool),
		pools:  make(map[string]*pool),
		policy: cfg.Policy,
	}
	sort.Slice(t.nodes, func(i, j int) bool { return t.nodes[i].ID < t.nodes[j].ID })
	for i, n := range t.nodes {
		if n.ID == "" || strings.ContainsAny(n.ID, " \t\r\n,") {
			return nil, fmt.Errorf("balancer: node id %q: empty or contains space or comma", n.ID)
		}
		if _, _, err := net.SplitHostPort(n.Addr); err != nil {
			return nil, fmt.Errorf("balancer: node %q address %q: %w", n.ID, n.Addr, err)
		}
		if _, dup := t.index[n.ID]; dup {
			return nil, fmt.Errorf("balancer: node id %q listed twice", n.ID)
		}
		t.index[n.ID] = int32(i)
	}
	var reuse map[string]*pool
	if cfg.Reuse != nil && cfg.Reuse.policy == cfg.Policy {
		reuse = cfg.Reuse.pools
	}
	getPool := func(ids []string) (*pool, error) {
		if len(ids) == 0 && t.all != nil {
			return t.all, nil
		}
		if len(ids) == 0 {
			if len(t.nodes) == 0 {
				return nil, fmt.Errorf("no nodes in the table")
			}
			ids = make([]string, len(t.nodes))
			for i, n := range t.nodes {
				ids[i] = n.ID
			}
		} else {
			ids = sortedCopy(ids)
			for i := 1; i < len(ids); i++ {
				if ids[i] == ids[i-1] {
					return nil, fmt.Errorf("node %q listed twice", ids[i])
				}
			}
		}
		key := poolKey(ids, cfg.Policy, cfg.MaglevSize)
		if p := t.pools[key]; p != nil {
			return p, nil
		}
		idx := make([]int32, len(ids))
		for i, id := range ids {
			k, ok := t.index[id]
			if !ok {
				return nil, fmt.Errorf("unknown node %q", id)
			}
			idx[i] = k
		}
		if old := reuse[key]; old != nil && equalIdx(old.nodes, idx) {
			t.pools[key] = old
			return old, nil
		}
		p, err := buildPool(idx, ids, cfg.Policy, cfg.MaglevSize)
		if err != nil {
			return nil, err
		}
		t.pools[key] = p
		return p, nil
	}
	var scratch []byte
	for _, s := range cfg.Sites {
		p, err := getPool(s.Nodes)
		if err != nil {
			return nil, fmt.Errorf("balancer: site %q: %w", s.Host, err)
		}
		if len(s.Nodes) == 0 {
			t.all = p
		}
		switch {
		case s.Host == "*":
			if t.def != nil {
				return nil, fmt.Errorf("balancer: default site \"*\" listed twice")
			}
			t.def = p
		case strings.HasPrefix(s.Host, "*."):
			norm, ok := normalizeHost(scratch[:0], []byte(s.Host[2:]))
			if !ok || norm[0] == '[' {
				return nil, fmt.Errorf("balancer: site %q: invalid host pattern", s.Host)
			}
			key := "." + string(norm)
			if _, dup := t.suffix[key]; dup {
				return nil, fmt.Errorf("balancer: site %q listed twice", s.Host)
			}
			t.suffix[key] = p
		default:
			norm, ok := normalizeHost(scratch[:0], []byte(s.Host))
			if !ok {
				return nil, fmt.Errorf("balancer: site %q: invalid host name", s.Host)
			}
			key := string(norm)
			if _, dup := t.exact[key]; dup {
				return nil, fmt.Errorf("balancer: site %q listed twice", s.Host)
			}
			t.exact[key] = p
		}
		t.sites++
	}
	return t, nil
}

func equalIdx(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Nodes returns the table's nodes, sorted by id.
func (t *Table) Nodes() []Node { return append([]Node(nil), t.nodes...) }

// Len returns the number of sites (exact, wildcard and default).
func (t *Table) Len() int { return t.sites }

// Policy returns the table's hash policy.
func (t *Table) Policy() Policy { return t.policy }

// lookup finds the pool for a normalized host.
func (t *Table) lookup(host []byte) *pool {
	if p := t.exact[string(host)]; p != nil {
		return p
	}
	if len(t.suffix) > 0 {
		for i := 0; i < len(host); i++ {
			if host[i] == '.' {
				if p := t.suffix[string(host[i:])]; p != nil {
					return p
				}
			}
		}
	}
	return t.def
}

// Pick returns the node a request for host goes to when every node is
// healthy. host may carry a port, upper case and a trailing dot.
func (t *Table) Pick(host string) (Node, error) {
	order, err := t.Order(host, 1)
	if err != nil {
		return Node{}, err
	}
	return order[0], nil
}

// Order returns up to n distinct nodes in the order the balancer tries
// them for host: the first is the host's node, the others are where it
// goes when the earlier ones are ejected or over their load bound.
func (t *Table) Order(host string, n int) ([]Node, error) {
	var buf [256]byte
	norm, ok := normalizeHost(buf[:0], []byte(host))
	if !ok {
		return nil, fmt.Errorf("balancer: host %q: invalid", host)
	}
	p := t.lookup(norm)
	if p == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownHost, host)
	}
	h := hostHash(norm)
	var out []Node
	seen := make(map[int32]bool)
	for i := 0; len(out) < n && len(out) < len(p.nodes) && i < 64*len(p.nodes)+64; i++ {
		k := p.at(h, i)
		if !seen[k] {
			seen[k] = true
			out = append(out, t.nodes[k])
		}
	}
	return out, nil
}
