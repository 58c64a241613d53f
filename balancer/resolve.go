package balancer

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paaskit/paaskit/internal/evproxy"
)

// Nodes named by a DNS name ("db.internal:8080") are resolved off the
// request path: once per table load (SetTable), again after the loops
// failed to connect to every address the name gave (at most once per
// resolveRetry), and by the health probe of an ejected node. The event
// loops connect only to literal addresses, and never wait for a lookup:
// until a named node's first lookup has answered, its requests take the
// goroutine path, which dials the name itself, as every request for a
// named node did before.

// resolveRetry is the least time between two lookups of one node caused
// by connect failures (a node that is down makes every request fail).
const resolveRetry = time.Second

// resolveParallel bounds the lookups a table load runs at once.
const resolveParallel = 16

// nameState is a named node's resolution. The loops read cur; the rest
// is guarded by mu.
type nameState struct {
	p          *Proxy
	host, port string

	cur atomic.Pointer[evproxy.Target] // where the loops connect; nil: not resolved (yet)

	mu       sync.Mutex
	addrs    []netip.Addr // from the last lookup that answered, IPv4 first
	next     int          // index in addrs of cur
	failed   int          // addresses that failed a connect in a row since the lookup
	err      error        // the last lookup's error, nil once one answered
	seq      uint64       // the load whose lookup set addrs (a late older one is dropped)
	last     time.Time    // when the last lookup caused by a failure started
	inflight atomic.Bool  // a lookup caused by a failure is running
}

// newNameState returns the resolution state of a node address, or nil
// for a literal IP:port (nothing to resolve).
func newNameState(p *Proxy, addr string) *nameState {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil // NewTable refused it; the goroutine path reports it
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	return &nameState{p: p, host: host, port: port}
}

// loopTarget is where the event loops send a request for be: its literal
// address, a named node's resolved address, or (not resolved yet) its
// name, which the loops hand to the goroutine path.
func (be *backend) loopTarget() evproxy.Target {
	if be.dns != nil {
		if t := be.dns.cur.Load(); t != nil {
			return *t
		}
	}
	return loopTarget(be.addr)
}

// resolveStatus is a named node's part of NodeStatus.
func (be *backend) resolveStatus() (resolved, errText string) {
	if be.dns == nil {
		return "", ""
	}
	if t := be.dns.cur.Load(); t != nil {
		resolved = t.Addr
	}
	be.dns.mu.Lock()
	if be.dns.err != nil {
		errText = be.dns.err.Error()
	}
	be.dns.mu.Unlock()
	return resolved, errText
}

// lookup runs the configured resolver for ns.host with a DialTimeout
// bound, the IPv4 addresses first (a backend listening on 0.0.0.0 is
// not reachable on ::1, which /etc/hosts gives localhost too).
func (p *Proxy) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	addrs, err := p.cfg.Resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("no address for %q", host)
	}
	out := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		out[i] = a.Unmap()
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Is4() && !out[j].Is4() })
	return out, nil
}

// apply records a lookup's outcome for be (seq: the load that asked, 0
// for a lookup after failures, which applies whatever load is current).
// A failed lookup keeps addresses an earlier one gave (the name may
// resolve again; the connects decide its health) but ejects a node that
// never resolved, so that its hosts go to the next node at once.
func (p *Proxy) apply(be *backend, seq uint64, addrs []netip.Addr, err error) {
	ns := be.dns
	ns.mu.Lock()
	if seq != 0 && seq < ns.seq {
		ns.mu.Unlock()
		return
	}
	if seq != 0 {
		ns.seq = seq
	}
	ns.err = err
	var old *evproxy.Target
	if err == nil {
		ns.addrs, ns.next, ns.failed = addrs, 0, 0
		old = ns.cur.Swap(&evproxy.Target{Network: "tcp", Addr: netip.AddrPortFrom(addrs[0], mustPort(ns.port)).String()})
	}
	had := ns.cur.Load() != nil
	ns.mu.Unlock()
	if err != nil {
		p.log.Warn("balancer: node address does not resolve", "node", be.id, "addr", be.addr, "err", err)
		if !had {
			be.failSince.CompareAndSwap(0, p.cfg.Clock.Now().UnixNano())
			if be.ejected.CompareAndSwap(false, true) {
				p.log.Warn("balancer: node ejected", "node", be.id, "addr", be.addr, "err", "name does not resolve")
			}
		}
		return
	}
	if old != nil && old.Addr != ns.cur.Load().Addr {
		p.log.Info("balancer: node address resolved anew", "node", be.id, "addr", be.addr, "was", old.Addr, "now", ns.cur.Load().Addr)
		p.retireLoopTargets(*old)
		be.flushIdle() // the goroutine path's, to the old address
	}
}

func mustPort(s string) uint16 {
	n, _ := strconv.ParseUint(s, 10, 16)
	return uint16(n)
}

// resolveAll looks up the named nodes of a table load, each distinct
// name once, resolveParallel at a time, off the caller's goroutine.
func (p *Proxy) resolveAll(seq uint64, bes []*backend) {
	byHost := make(map[string][]*backend)
	for _, be := range bes {
		if be.dns != nil {
			byHost[be.dns.host] = append(byHost[be.dns.host], be)
		}
	}
	if len(byHost) == 0 {
		return
	}
	p.resolves.Add(1)
	go func() {
		defer p.resolves.Done()
		sem := make(chan struct{}, resolveParallel)
		var wg sync.WaitGroup
		for host, group := range byHost {
			sem <- struct{}{}
			wg.Add(1)
			go func(host string, group []*backend) {
				defer func() { <-sem; wg.Done() }()
				addrs, err := p.lookup(p.baseCtx, host)
				for _, be := range group {
					p.apply(be, seq, addrs, err)
				}
			}(host, group)
		}
		wg.Wait()
	}()
}

// connectFailed is told by either forwarder that a connect to be failed: a
// named node moves on to its name's next address, and once every one
// has failed the name is looked up again (at most once per
// resolveRetry, on its own goroutine). It never blocks. (Two loops
// failing on one address at once move it on twice; the lookup that
// follows starts over from the first address.)
func (p *Proxy) connectFailed(be *backend) {
	ns := be.dns
	if ns == nil {
		return
	}
	ns.mu.Lock()
	if ns.cur.Load() == nil {
		ns.mu.Unlock()
		p.resolveAfterFailure(be)
		return
	}
	ns.failed++
	if len(ns.addrs) > 1 {
		ns.next = (ns.next + 1) % len(ns.addrs)
		ns.cur.Store(&evproxy.Target{Network: "tcp", Addr: netip.AddrPortFrom(ns.addrs[ns.next], mustPort(ns.port)).String()})
	}
	all := ns.failed >= len(ns.addrs)
	ns.mu.Unlock()
	if all {
		p.resolveAfterFailure(be)
	}
}

// resolveAfterFailure starts a lookup of be's name unless one is running
// or one started less than resolveRetry ago.
func (p *Proxy) resolveAfterFailure(be *backend) {
	ns := be.dns
	now := time.Now()
	ns.mu.Lock()
	if now.Sub(ns.last) < resolveRetry || !ns.inflight.CompareAndSwap(false, true) {
		ns.mu.Unlock()
		return
	}
	ns.last = now
	ns.mu.Unlock()
	p.resolves.Add(1)
	go func() {
		defer p.resolves.Done()
		defer ns.inflight.Store(false)
		addrs, err := p.lookup(p.baseCtx, ns.host)
		p.apply(be, 0, addrs, err)
	}()
}

// probeAddr is the address the health probe dials for be: a named node
// is looked up first (the probe runs on its own goroutine), so that a
// name that resolves again, or anew, brings the node back on the
// address the loops will use.
func (p *Proxy) probeAddr(ctx context.Context, be *backend) (string, error) {
	if be.dns == nil {
		return be.addr, nil
	}
	addrs, err := p.lookup(ctx, be.dns.host)
	p.apply(be, 0, addrs, err)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", be.dns.host, err)
	}
	return be.loopTarget().Addr, nil
}

// retireLoopTargets closes the loops' idle connections to targets no
// node of the current table uses any more.
func (p *Proxy) retireLoopTargets(gone ...evproxy.Target) {
	l := p.loops.Load()
	if l == nil || len(gone) == 0 {
		return
	}
	live := make(map[string]bool)
	for _, be := range p.cur.Load().be {
		live[be.addr] = true
		live[be.loopTarget().Addr] = true
	}
	keep := gone[:0]
	for _, tg := range gone {
		if !live[tg.Addr] {
			keep = append(keep, tg)
		}
	}
	if len(keep) > 0 {
		l.CloseIdle(keep...)
	}
}

// defaultResolve is Config.Resolve's zero value.
func defaultResolve(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}
