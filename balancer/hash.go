package balancer

import (
	"fmt"
	"sort"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// Policy chooses how a host is mapped onto a pool of nodes.
type Policy int

const (
	// Maglev is the default: Google's Maglev consistent hash over the node
	// ids. Adding a node moves only about the new node's share of hosts;
	// removing one moves only its own hosts. Lookup is O(1).
	Maglev Policy = iota
	// Modulo is the classic hash(host) mod len(nodes) over the nodes
	// sorted by id: even, but adding or removing a node moves almost
	// every host. Kept to compare with, and for fixed pools.
	Modulo
)

func (p Policy) String() string {
	switch p {
	case Maglev:
		return "maglev"
	case Modulo:
		return "modulo"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// ParsePolicy parses "maglev" or "modulo".
func ParsePolicy(s string) (Policy, error) {
	switch strings.ToLower(s) {
	case "", "maglev":
		return Maglev, nil
	case "modulo", "mod":
		return Modulo, nil
	}
	return 0, fmt.Errorf("balancer: unknown hash policy %q (want maglev or modulo)", s)
}

// DefaultMaglevSize is the default Maglev lookup-table size: a prime with
// at least 100 slots per node for up to 655 nodes. Larger pools get the
// smallest prime of at least 100 slots per node.
const DefaultMaglevSize = 65537

// hostHash is the hash of a normalized host name.
func hostHash(host []byte) uint64 { return xxhash.Sum64(host) }

// mix derives the i-th probe hash of a host hash (splitmix64 finalizer),
// used to find the next node in a host's order.
func mix(h uint64, i int) uint64 {
	z := h + uint64(i)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// pool is one set of nodes with its lookup structure. It is immutable once
// built and shared by every site that names the same set of nodes.
type pool struct {
	nodes  []int32 // table node indexes, in node id order
	policy Policy
	lut    []uint16 // Maglev: slot -> position in nodes
}

// at returns the table node index of the i-th probe for host hash h.
// Probe 0 is the host's node; later probes walk its order of fallbacks.
func (p *pool) at(h uint64, i int) int32 {
	n := len(p.nodes)
	if p.policy == Modulo {
		return p.nodes[(h%uint64(n)+uint64(i))%uint64(n)]
	}
	if i > 0 {
		h = mix(h, i)
	}
	return p.nodes[p.lut[h%uint64(len(p.lut))]]
}

// buildPool builds the pool for nodes (table node indexes) whose ids are
// ids[k] for nodes[k], already sorted by id.
func buildPool(nodes []int32, ids []string, policy Policy, size int) (*pool, error) {
	if len(nodes) == 0 {
		return nil, fmt.Errorf("balancer: empty node set")
	}
	if len(nodes) > 65535 {
		return nil, fmt.Errorf("balancer: %d nodes in one pool (max 65535)", len(nodes))
	}
	p := &pool{nodes: nodes, policy: policy}
	if policy == Modulo {
		return p, nil
	}
	m := size
	if m == 0 {
		m = DefaultMaglevSize
	}
	if m < 100*len(nodes) {
		m = nextPrime(100 * len(nodes))
	}
	p.lut = maglevTable(ids, m)
	return p, nil
}

// maglevTable fills a Maglev lookup table of size m (a prime) for the
// given node ids, which must be sorted (the fill order breaks ties, so a
// fixed order makes the table independent of how nodes were listed).
func maglevTable(ids []string, m int) []uint16 {
	n := len(ids)
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	for i, id := range ids {
		h1 := xxhash.Sum64String(id)
		h2 := mix(h1, 1)
		offset[i] = h1 % uint64(m)
		skip[i] = h2%uint64(m-1) + 1
	}
	const empty = 0xffff
	lut := make([]uint16, m)
	for i := range lut {
		lut[i] = empty
	}
	filled := 0
	for {
		for i := 0; i < n; i++ {
			c := (offset[i] + next[i]*skip[i]) % uint64(m)
			for lut[c] != empty {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % uint64(m)
			}
			lut[c] = uint16(i)
			next[i]++
			filled++
			if filled == m {
				return lut
			}
		}
	}
}

func nextPrime(n int) int {
	if n < 2 {
		return 2
	}
	for ; ; n++ {
		if isPrime(n) {
			return n
		}
	}
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// poolKey is the identity of a node set: its sorted ids joined.
func poolKey(ids []string, policy Policy, size int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d", policy, size)
	for _, id := range ids {
		b.WriteByte(0)
		b.WriteString(id)
	}
	return b.String()
}

func sortedCopy(ids []string) []string {
	out := append([]string(nil), ids...)
	sort.Strings(out)
	return out
}
