package runner

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netManager gives every instance a network namespace of its own, made
// by the runner and configured before the app starts: loopback only
// (policy "none"), or loopback plus a veth on the node's bridge with NAT
// and the egress filter (policy "egress"). Namespaces are made ahead of
// need, a few at a time, by a filler goroutine, so that a cold start does
// not pay for one (about 1.5 ms here); a namespace is used once and
// dropped with its instance.
//
// Nothing of it outlives the runner by much: a namespace lives only as
// long as a descriptor or a process holds it (no bind mounts under
// /run/netns), so the kernel frees the pool's and, once the cgroup
// clean-up has killed a crashed runner's apps, the instances' with their
// veths. The bridge and the nftables table are the runner's own by name
// (derived from Config.CgroupRoot) and are deleted and made afresh at
// New, and deleted at shutdown.
type netManager struct {
	log  *slog.Logger
	host int // the runner's own network namespace
	pool chan int
	stop chan struct{}
	busy func() bool // whether a start is in progress (see waitQuiet)
	wg   sync.WaitGroup

	// egress; set up on the first egress instance.
	egressErr error // why egress is unavailable, nil if it is
	nft       string
	brName    string
	table     string
	subnet    netip.Prefix
	gateway   netip.Addr

	mu        sync.Mutex
	bridgeUp  bool
	bridgeIdx int
	used      map[netip.Addr]bool
	// forwarding is set while this runner holds its marker for
	// net.ipv4.ip_forward (see ipforward_linux.go).
	forwarding bool
	// oldFwdRecord is where runners before the host-wide record kept
	// the setting's old value; a stale one is moved into the host's.
	oldFwdRecord string

	// orphans are the egress links of one-off commands, by veth name:
	// the runner does not see a command end (its caller runs the Cmd),
	// so it detaches a link when the kernel removes the veth, which it
	// does once the command's namespace has lost its last process.
	// watching is set once the watcher runs.
	orphans  map[string]*egressLink
	watching bool
}

// DefaultEgressSubnet is the node-local subnet of egress apps' addresses
// (Config.EgressSubnet).
const DefaultEgressSubnet = "10.237.0.0/16"

// DefaultNetnsPool is how many network namespaces are kept ready.
const DefaultNetnsPool = 4

// appPort is the port a TCP-mode app binds in its own namespace.
const appPort = 8000

// refusedRanges are never reached by an egress app unless its spec names
// the destination: the host's network, private and link-local ranges (the
// cloud metadata address 169.254.169.254 among them), loopback,
// carrier-grade NAT, multicast and reserved space.
var refusedRanges = []string{
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
	"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
}

func newNetManager(name, subnet string, poolSize int, stateDir string, log *slog.Logger) (*netManager, error) {
	host, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the runner's network namespace: %w", err)
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	tag := fmt.Sprintf("%08x", h.Sum32())[:6]
	m := &netManager{
		log:          log,
		host:         host,
		pool:         make(chan int, max(poolSize, 0)),
		stop:         make(chan struct{}),
		brName:       "pk" + tag + "br",
		table:        "paaskit_" + tag,
		used:         map[netip.Addr]bool{},
		orphans:      map[string]*egressLink{},
		oldFwdRecord: filepath.Join(stateDir, "ip_forward.orig"),
	}
	// Making one now proves the kernel and privileges allow it; the pool
	// fills from Run on, so a Runner that is never run holds no
	// namespace.
	ns, err := m.create()
	if err != nil {
		unix.Close(host)
		return nil, err
	}
	unix.Close(ns)
	m.subnet, err = netip.ParsePrefix(subnet)
	switch {
	case err != nil:
		m.egressErr = fmt.Errorf("egress subnet %q: %w", subnet, err)
	case !m.subnet.Addr().Is4() || m.subnet.Bits() > 28 || m.subnet.Bits() < 8:
		m.egressErr = fmt.Errorf("egress subnet %s: want an IPv4 prefix of /8 to /28", subnet)
	default:
		m.subnet = m.subnet.Masked()
		m.gateway = m.subnet.Addr().Next()
		m.nft, err = exec.LookPath("nft")
		if err != nil {
			m.egressErr = fmt.Errorf("nft not found (apt-get install nftables): %w", err)
		}
	}
	m.cleanStale()
	return m, nil
}

// start runs the pool's filler until close.
func (m *netManager) start() {
	if cap(m.pool) == 0 {
		return
	}
	m.wg.Add(1)
	go m.fill()
}

// fill keeps the pool full. A replacement for a namespace taken from a
// pool that still has some waits until no start is in progress (see
// waitQuiet): a start is CPU-bound on a small node, and making a
// namespace (and the kernel's work on the last one dropped) at the same
// moment would slow the very start that took it.
func (m *netManager) fill() {
	defer m.wg.Done()
	for {
		if len(m.pool) > 0 && !waitQuiet(m.stop, m.busy) {
			return
		}
		ns, err := m.create()
		if err != nil {
			m.log.Error("runner: cannot make a network namespace for the pool", "err", err)
			select {
			case <-m.stop:
				return
			case <-time.After(time.Second):
			}
			continue
		}
		select {
		case m.pool <- ns:
		case <-m.stop:
			unix.Close(ns)
			return
		}
	}
}

// take returns a ready namespace (the caller owns the descriptor),
// making one at once when the pool is empty.
func (m *netManager) take() (int, error) {
	select {
	case ns := <-m.pool:
		return ns, nil
	default:
		return m.create()
	}
}

// inNetns runs f on a thread of its own that has joined ns, and brings
// the thread back to the runner's namespace. A thread that cannot come
// back is never reused, and never ended either: its goroutine stays
// locked to it and waits for ever. Ending it (a goroutine that returns
// locked) would deliver the parent-death signal to every instance any
// goroutine had forked from that thread before (see internal/threadprio);
// one idle thread is the smaller cost.
func (m *netManager) inNetns(ns int, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if ns >= 0 {
			if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
				runtime.UnlockOSThread()
				errc <- fmt.Errorf("join network namespace: %w", err)
				return
			}
		} else if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("make a network namespace: %w", err)
			return
		}
		err := f()
		if serr := unix.Setns(m.host, unix.CLONE_NEWNET); serr != nil {
			errc <- errors.Join(err, fmt.Errorf("return to the runner's network namespace: %w", serr))
			select {} // the thread stays locked, unused, for the process's life
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// create makes a namespace with its loopback up.
func (m *netManager) create() (int, error) {
	fd := -1
	err := m.inNetns(-1, func() error {
		var err error
		fd, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open new network namespace: %w", err)
		}
		return loopbackUp()
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, err
	}
	return fd, nil
}

// loopbackUp sets lo up in the calling thread's namespace.
func loopbackUp() error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set loopback up: %w", err)
	}
	return nil
}

// dialTCP connects to addr from inside ns: the socket is made there, so a
// TCP app's port is reached in its own namespace and nowhere else.
func (m *netManager) dialTCP(ctx context.Context, ns int, addr string) (net.Conn, error) {
	var c net.Conn
	err := m.inNetns(ns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// release hands el, the egress link of a namespace nobody in the runner
// holds, to the watcher: it is detached when its veth goes away with the
// namespace.
func (m *netManager) release(el *egressLink) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.orphans[el.veth] = el
	if !m.watching {
		m.watching = true
		m.wg.Add(1)
		go m.watchOrphans()
	}
}

// orphanSweep is how often the watcher checks the orphans' veths even
// without a netlink notice (one lost to a full socket buffer, or a veth
// gone before it was registered).
const orphanSweep = 2 * time.Second

// watchOrphans detaches orphaned egress links whose veth the kernel has
// removed, until close.
func (m *netManager) watchOrphans() {
	defer m.wg.Done()
	var updates chan netlink.LinkUpdate
	var done chan struct{}
	subscribe := func() {
		updates, done = make(chan netlink.LinkUpdate, 64), make(chan struct{})
		err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
			ErrorCallback: func(err error) { m.log.Debug("runner: link notices", "err", err) },
		})
		if err != nil {
			m.log.Warn("runner: no link notices: commands' egress links are released by the sweep alone", "err", err)
			close(done)
			updates, done = nil, nil
		}
	}
	unsubscribe := func() {
		if done != nil {
			close(done)
			for range updates { // until the subscription's reader ends
			}
			updates, done = nil, nil
		}
	}
	defer unsubscribe()
	subscribe()
	tick := time.NewTicker(orphanSweep)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case u, ok := <-updates:
			if !ok {
				// The subscription ended (a receive error):
				// the next tick subscribes again.
				close(done)
				updates, done = nil, nil
				continue
			}
			if u.Header.Type == unix.RTM_DELLINK {
				m.dropOrphan(u.Attrs().Name)
			}
		case <-tick.C:
			if updates == nil {
				subscribe()
			}
			m.mu.Lock()
			names := make([]string, 0, len(m.orphans))
			for n := range m.orphans {
				names = append(names, n)
			}
			m.mu.Unlock()
			for _, n := range names {
				if _, err := netlink.LinkByName(n); errors.As(err, new(netlink.LinkNotFoundError)) {
					m.dropOrphan(n)
				}
			}
		}
	}
}

// dropOrphan detaches the orphaned link of veth name, if there is one.
func (m *netManager) dropOrphan(name string) {
	m.mu.Lock()
	el := m.orphans[name]
	delete(m.orphans, name)
	m.mu.Unlock()
	if el != nil {
		m.detach(el)
	}
}

// orphanCount is how many commands' egress links are still in use.
func (m *netManager) orphanCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.orphans)
}

// close stops the filler, drops the pool and removes the egress set-up.
func (m *netManager) close() {
	close(m.stop)
	m.wg.Wait()
	for {
		select {
		case ns := <-m.pool:
			unix.Close(ns)
			continue
		default:
		}
		break
	}
	m.mu.Lock()
	up := m.bridgeUp
	m.bridgeUp = false
	m.mu.Unlock()
	if up {
		m.teardown()
	}
	unix.Close(m.host)
}

// cleanStale removes what a runner of this name left behind (a crash, a
// SIGKILL): its bridge and its nftables table.
func (m *netManager) cleanStale() {
	if links, err := netlink.LinkList(); err == nil {
		// The bridge, and host ends of veths whose namespace is still
		// being torn down by the kernel.
		for _, l := range links {
			if n := l.Attrs().Name; strings.HasPrefix(n, m.brName[:8]) {
				if err := netlink.LinkDel(l); err != nil {
					m.log.Error("runner: cannot remove a stale link", "link", n, "err", err)
				} else {
					m.log.Warn("runner: removed a link an earlier runner left", "link", n)
				}
			}
		}
	}
	// This runner's marker, if it died holding one (its bridge is gone
	// now), and the setting back if it was the last user.
	if b, err := os.ReadFile(m.oldFwdRecord); err == nil {
		// An older runner's own record: it would have put back this.
		if v := strings.TrimSpace(string(b)); v == "0" {
			if unlock, err := forwardLock(); err == nil {
				rec := filepath.Join(hostForwardDir, "ip_forward.orig")
				if _, err := os.Stat(rec); errors.Is(err, fs.ErrNotExist) {
					_ = writeFileAtomic(rec, []byte("0\n"), 0o600)
				}
				unlock()
			}
		}
		_ = os.Remove(m.oldFwdRecord)
	}
	if v, err := releaseForward(m.brName); err != nil {
		m.log.Error("runner: cannot restore net.ipv4.ip_forward an earlier runner changed", "err", err)
	} else if v != "" {
		m.log.Warn("runner: restored net.ipv4.ip_forward an earlier runner had changed", "value", v)
	}
	if m.nft != "" {
		if out, err := exec.Command(m.nft, "list", "table", "inet", m.table).CombinedOutput(); err == nil {
			if err := m.runNft("delete table inet " + m.table + "\n"); err != nil {
				m.log.Error("runner: cannot remove a stale nftables table", "table", m.table, "err", err)
			} else {
				m.log.Warn("runner: removed the nftables table an earlier runner left", "table", m.table)
			}
		} else {
			_ = out
		}
	}
}

func (m *netManager) teardown() {
	if l, err := netlink.LinkByName(m.brName); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			m.log.Error("runner: remove bridge", "bridge", m.brName, "err", err)
		}
	}
	if err := m.runNft("delete table inet " + m.table + "\n"); err != nil {
		m.log.Error("runner: remove nftables table", "table", m.table, "err", err)
	}
	if m.forwarding {
		m.forwarding = false
		if v, err := releaseForward(m.brName); err != nil {
			m.log.Error("runner: restore net.ipv4.ip_forward", "err", err)
		} else if v != "" {
			m.log.Info("runner: restored net.ipv4.ip_forward", "value", v)
		}
	}
}

func (m *netManager) runNft(script string) error {
	cmd := exec.Command(m.nft, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ensureBridge sets up the bridge, the ruleset and forwarding; m.mu is
// held.
func (m *netManager) ensureBridge() error {
	if m.bridgeUp {
		return nil
	}
	if m.egressErr != nil {
		return m.egressErr
	}
	// Another runner (or anything else) routing an overlapping subnet
	// would make the apps' traffic ambiguous: refuse, naming it.
	if routes, err := netlink.RouteList(nil, netlink.FAMILY_V4); err == nil {
		for _, rt := range routes {
			if rt.Dst == nil {
				continue
			}
			if p, ok := netip.AddrFromSlice(rt.Dst.IP); ok {
				bits, _ := rt.Dst.Mask.Size()
				if bits > 0 && netip.PrefixFrom(p.Unmap(), bits).Overlaps(m.subnet) {
					name := strconv.Itoa(rt.LinkIndex)
					if l, err := netlink.LinkByIndex(rt.LinkIndex); err == nil {
						name = l.Attrs().Name
					}
					return fmt.Errorf("egress subnet %s overlaps %s, already routed via %s: give this runner another Config.EgressSubnet", m.subnet, rt.Dst, name)
				}
			}
		}
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: m.brName}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge %s: %w", m.brName, err)
	}
	fail := func(err error) error {
		_ = netlink.LinkDel(br)
		_ = m.runNft("delete table inet " + m.table + "\n")
		return err
	}
	gw := &netlink.Addr{IPNet: &net.IPNet{IP: m.gateway.AsSlice(), Mask: net.CIDRMask(m.subnet.Bits(), 32)}}
	if err := netlink.AddrAdd(br, gw); err != nil {
		return fail(fmt.Errorf("address bridge %s: %w", m.brName, err))
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fail(fmt.Errorf("set bridge %s up: %w", m.brName, err))
	}
	// The rules first (they refuse forwarding between the host's other
	// links while the host's own value was off), then forwarding on.
	fwd, err := os.ReadFile(procIPForward)
	if err != nil {
		return fail(fmt.Errorf("read net.ipv4.ip_forward: %w", err))
	}
	rec, _ := os.ReadFile(filepath.Join(hostForwardDir, "ip_forward.orig"))
	onlyOurs := strings.TrimSpace(string(fwd)) == "0" || strings.TrimSpace(string(rec)) == "0"
	if err := m.runNft(m.ruleset(onlyOurs)); err != nil {
		return fail(fmt.Errorf("egress rules: %w", err))
	}
	wasOff, err := acquireForward(m.brName)
	if err != nil {
		return fail(err)
	}
	m.forwarding = true
	if wasOff != onlyOurs {
		// Another runner changed the record in between: the rules
		// follow the record.
		if err := m.runNft("delete table inet " + m.table + "\n" + m.ruleset(wasOff)); err != nil {
			_, _ = releaseForward(m.brName)
			m.forwarding = false
			return fail(fmt.Errorf("egress rules: %w", err))
		}
	}
	if strings.TrimSpace(string(fwd)) == "0" {
		m.log.Info("runner: enabled net.ipv4.ip_forward for egress apps (forwarding between the host's other links stays refused by the runner's rules)")
	}
	m.bridgeIdx = br.Attrs().Index
	m.bridgeUp = true
	return nil
}

// ruleset is the runner's nftables table. An egress app's packets are
// told apart by source address, which it cannot change (no CAP_NET_ADMIN
// or CAP_NET_RAW in its namespace). Refused connections are reset or
// answered "administratively prohibited", so an app fails fast.
func (m *netManager) ruleset(onlyOurs bool) string {
	br := m.brName
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", m.table)
	b.WriteString("  set egress { type ipv4_addr; }\n")
	b.WriteString("  set allow { type ipv4_addr . ipv4_addr; }\n")
	b.WriteString("  set allow_port { type ipv4_addr . ipv4_addr . inet_service; }\n")
	b.WriteString("  set only { type ipv4_addr; }\n")
	b.WriteString("  chain refuse {\n    meta l4proto tcp reject with tcp reset\n    reject with icmpx type admin-prohibited\n  }\n")
	b.WriteString("  chain input {\n    type filter hook input priority -10; policy accept;\n")
	fmt.Fprintf(&b, "    iifname %q ct state established,related accept\n", br)
	fmt.Fprintf(&b, "    iifname %q ip saddr . ip daddr @allow accept\n", br)
	fmt.Fprintf(&b, "    iifname %q ip saddr . ip daddr . th dport @allow_port accept\n", br)
	fmt.Fprintf(&b, "    iifname %q jump refuse\n  }\n", br)
	b.WriteString("  chain forward {\n    type filter hook forward priority -10; policy accept;\n")
	fmt.Fprintf(&b, "    oifname %q ct state established,related accept\n", br)
	fmt.Fprintf(&b, "    oifname %q jump refuse\n", br)
	fmt.Fprintf(&b, "    iifname %q ip saddr != @egress jump refuse\n", br)
	fmt.Fprintf(&b, "    iifname %q ip saddr . ip daddr @allow accept\n", br)
	fmt.Fprintf(&b, "    iifname %q ip saddr . ip daddr . th dport @allow_port accept\n", br)
	fmt.Fprintf(&b, "    iifname %q ip saddr @only jump refuse\n", br)
	fmt.Fprintf(&b, "    iifname %q ip daddr { %s } jump refuse\n", br, strings.Join(refusedRanges, ", "))
	fmt.Fprintf(&b, "    iifname %q meta nfproto ipv6 jump refuse\n", br)
	fmt.Fprintf(&b, "    iifname %q accept\n", br)
	if onlyOurs {
		// Any runner's bridge, not only ours: another runner may be the
		// one that turned forwarding on, or this one may be the last up.
		b.WriteString("    iifname != \"pk*\" oifname != \"pk*\" drop\n")
	}
	b.WriteString("  }\n")
	b.WriteString("  chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n")
	fmt.Fprintf(&b, "    ip saddr %s oifname != %q masquerade\n  }\n}\n", m.subnet, br)
	return b.String()
}

// egressLink is an instance's (or a command's) place on the bridge.
type egressLink struct {
	addr  netip.Addr
	veth  string
	allow []Destination
	// only: the allowed destinations are all it reaches
	// (PolicyAllowOnly).
	only bool
}

// attach gives namespace ns a veth on the bridge with an address of the
// subnet, a default route, and the filter entries for its destinations
// (and nothing else with only). id names the veth: unique on the runner.
func (m *netManager) attach(ns int, id string, allow []Destination, only bool) (*egressLink, error) {
	m.mu.Lock()
	if err := m.ensureBridge(); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	var addr netip.Addr
	for a := m.gateway.Next(); m.subnet.Contains(a); a = a.Next() {
		if !m.used[a] && m.subnet.Contains(a.Next()) { // not the broadcast address
			addr = a
			break
		}
	}
	if !addr.IsValid() {
		m.mu.Unlock()
		return nil, fmt.Errorf("egress subnet %s is full", m.subnet)
	}
	m.used[addr] = true
	brIdx := m.bridgeIdx
	m.mu.Unlock()
	el := &egressLink{addr: addr, veth: m.brName[:8] + id, allow: allow, only: only}
	if len(el.veth) > 15 {
		el.veth = el.veth[:15]
	}
	if err := m.plug(ns, el, brIdx); err != nil {
		m.detach(el)
		return nil, err
	}
	return el, nil
}

func (m *netManager) plug(ns int, el *egressLink, brIdx int) error {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: el.veth, MasterIndex: brIdx},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(ns),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", el.veth, err)
	}
	hl, err := netlink.LinkByName(el.veth)
	if err != nil {
		return fmt.Errorf("find veth %s: %w", el.veth, err)
	}
	// Isolated bridge ports cannot talk to each other: apps never see
	// one another's frames, ARP included.
	if err := netlink.LinkSetIsolated(hl, true); err != nil {
		return fmt.Errorf("isolate bridge port %s: %w", el.veth, err)
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		return fmt.Errorf("set veth %s up: %w", el.veth, err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(ns))
	if err != nil {
		return fmt.Errorf("netlink in the app's namespace: %w", err)
	}
	defer h.Close()
	pl, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("find eth0 in the app's namespace: %w", err)
	}
	// A /32 and a route to the gateway alone: to the app, nothing but
	// the gateway is on its link, so a packet to another app goes through
	// the host, whose filter refuses it at once (a reset), instead of an
	// ARP query the isolated port never answers (3 s, then "no route to
	// host"); and the host's redirects name no gateway the app would take.
	a := &netlink.Addr{IPNet: &net.IPNet{IP: el.addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := h.AddrAdd(pl, a); err != nil {
		return fmt.Errorf("address eth0: %w", err)
	}
	if err := h.LinkSetUp(pl); err != nil {
		return fmt.Errorf("set eth0 up: %w", err)
	}
	gw := &net.IPNet{IP: m.gateway.AsSlice(), Mask: net.CIDRMask(32, 32)}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Dst: gw, Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("route to the gateway: %w", err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Gw: m.gateway.AsSlice()}); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return m.runNft(m.elements("add", el))
}

func (m *netManager) elements(verb string, el *egressLink) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s element inet %s egress { %s }\n", verb, m.table, el.addr)
	if el.only {
		fmt.Fprintf(&b, "%s element inet %s only { %s }\n", verb, m.table, el.addr)
	}
	for _, d := range el.allow {
		for _, ip := range d.IPs {
			if d.Port == 0 {
				fmt.Fprintf(&b, "%s element inet %s allow { %s . %s }\n", verb, m.table, el.addr, ip)
			} else {
				fmt.Fprintf(&b, "%s element inet %s allow_port { %s . %s . %d }\n", verb, m.table, el.addr, ip, d.Port)
			}
		}
	}
	return b.String()
}

// detach removes el's filter entries and veth and frees its address.
func (m *netManager) detach(el *egressLink) {
	if l, err := netlink.LinkByName(el.veth); err == nil {
		_ = netlink.LinkDel(l)
	}
	m.mu.Lock()
	up := m.bridgeUp
	m.mu.Unlock()
	if up {
		// One script is one transaction; an entry that was never
		// added (a failed attach) fails all of it, and then they are
		// deleted one at a time.
		script := m.elements("delete", el)
		if err := m.runNft(script); err != nil {
			for _, line := range strings.Split(strings.TrimSpace(script), "\n") {
				_ = m.runNft(line + "\n")
			}
		}
	}
	m.mu.Lock()
	delete(m.used, el.addr)
	m.mu.Unlock()
}

// hasCapability reports whether the runner's effective set holds cap.
func hasCapability(c int) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && n&(1<<uint(c)) != 0
		}
	}
	return false
}
