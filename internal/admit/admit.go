package admit

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Config is a Gate's limits. Zero values mean the documented defaults.
type Config struct {
	// MaxConns caps the client connections held at once. 0 means half
	// the process's open-file limit (RLIMIT_NOFILE, soft) when the gate
	// is made, at least 64: each client may need a node connection too,
	// and the process must keep descriptors for its own files. Negative:
	// no cap.
	MaxConns int
	// MaxConnsPerIP caps the connections held at once from one client
	// address (an IPv4 address, or an IPv6 /64, the block one subscriber
	// gets). 0 means 1024, room for a large office behind one NAT;
	// negative: no cap. Connections from TrustedProxies count toward the
	// address their PROXY header names, not the proxy's own.
	MaxConnsPerIP int
	// TrustedProxies are the sources whose PROXY protocol header (v1 or
	// v2) is believed: a connection from one of them must start with
	// one, and the address it names is the client's (X-Forwarded-For,
	// MaxConnsPerIP). A connection from anyone else that starts with a
	// PROXY header is closed. Empty: no source is trusted.
	TrustedProxies []netip.Prefix
	// SocketBuffer, if positive, is set as SO_RCVBUF and SO_SNDBUF of
	// each admitted TCP connection (the kernel doubles it for its own
	// bookkeeping), bounding what the kernel holds for a client that
	// reads or sends slowly. 0 leaves the kernel's autotuning
	// (net.ipv4.tcp_rmem and tcp_wmem: several MB per socket at most).
	SocketBuffer int
	// Logger receives a warning for each connection refused for its
	// PROXY header; nil means slog.Default().
	Logger *slog.Logger
}

// Gate admits connections; it is safe for concurrent use.
type Gate struct {
	maxConns, maxPerIP int
	trusted            []netip.Prefix
	log                *slog.Logger
	sockBuf            int

	mu    sync.Mutex
	total int
	byIP  map[netip.Addr]int

	refused atomic.Int64
}

// New validates cfg and returns a gate.
func New(cfg Config) (*Gate, error) {
	g := &Gate{maxConns: cfg.MaxConns, maxPerIP: cfg.MaxConnsPerIP, byIP: map[netip.Addr]int{}, log: cfg.Logger}
	if g.log == nil {
		g.log = slog.Default()
	}
	if cfg.SocketBuffer < 0 {
		return nil, fmt.Errorf("admit: SocketBuffer %d is negative", cfg.SocketBuffer)
	}
	g.sockBuf = cfg.SocketBuffer
	if g.maxConns == 0 {
		g.maxConns = defaultMaxConns()
	}
	if g.maxPerIP == 0 {
		g.maxPerIP = 1024
	}
	for _, p := range cfg.TrustedProxies {
		if !p.IsValid() {
			return nil, fmt.Errorf("admit: trusted proxy prefix %v is not valid", p)
		}
		g.trusted = append(g.trusted, p.Masked())
	}
	return g, nil
}

func defaultMaxConns() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 1 << 20
	}
	return max(64, int(rl.Cur/2))
}

// Limits returns the caps in force (-1: none), defaults applied.
func (g *Gate) Limits() (maxConns, maxPerIP int) {
	return max(g.maxConns, -1), max(g.maxPerIP, -1)
}

// Trusted reports whether a is a trusted PROXY source.
func (g *Gate) Trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range g.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// HasTrusted reports whether any source is trusted.
func (g *Gate) HasTrusted() bool { return len(g.trusted) > 0 }

// key is the per-address bucket of a: itself for IPv4, its /64 for
// IPv6 (one subscriber's block; per address would let one client open
// 2^64 slots).
func key(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(64)
		return p.Addr()
	}
	return a
}

// Admit takes a slot for a new connection from peer, the socket's
// address. When peer is a trusted proxy only the process-wide slot is
// taken (the per-address one waits for the PROXY header: Bind). It
// reports false, taking nothing, when a cap is reached.
func (g *Gate) Admit(peer netip.Addr, trusted bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.maxConns > 0 && g.total >= g.maxConns {
		g.refused.Add(1)
		return false
	}
	if !trusted && !g.takeIP(peer) {
		g.refused.Add(1)
		return false
	}
	g.total++
	return true
}

func (g *Gate) takeIP(a netip.Addr) bool {
	if g.maxPerIP < 0 || !a.IsValid() {
		return true
	}
	k := key(a)
	if g.byIP[k] >= g.maxPerIP {
		return false
	}
	g.byIP[k]++
	return true
}

// Bind takes the per-address slot for client, the address a trusted
// proxy's header named, on a connection Admit took as trusted. It
// reports false, taking nothing, when client is at its cap (release the
// process-wide slot then with Release(netip.Addr{})).
func (g *Gate) Bind(client netip.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.takeIP(client) {
		g.refused.Add(1)
		return false
	}
	return true
}

// Refused counts the connections a cap refused so far.
func (g *Gate) Refused() int64 { return g.refused.Load() }

// Release gives back a connection's slots; ip is the address holding
// its per-address slot (the peer, or what Bind took), or the zero Addr
// for a connection that holds none.
func (g *Gate) Release(ip netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
	if g.maxPerIP < 0 || !ip.IsValid() {
		return
	}
	k := key(ip)
	if n := g.byIP[k] - 1; n > 0 {
		g.byIP[k] = n
	} else {
		delete(g.byIP, k)
	}
}

// Held returns the connections holding slots now (all, and from ip).
func (g *Gate) Held(ip netip.Addr) (total, fromIP int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total, g.byIP[key(ip)]
}

// AddrOf returns the IP address of a net.Addr (zero when it has none,
// as for a unix socket).
func AddrOf(a net.Addr) netip.Addr {
	switch x := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(x.IP)
		return ip.Unmap()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// ParsePrefixes parses a comma-separated list of CIDR prefixes or bare
// addresses (a bare address is its own /32 or /128), as daemons take
// their trusted proxies on a flag. Empty: none.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("admit: trusted proxy %q: %w", f, err)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("admit: trusted proxy %q: %w", f, err)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
