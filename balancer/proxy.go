package balancer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/paaskit/paaskit/internal/admit"
	"github.com/paaskit/paaskit/internal/connproxy"
	"github.com/paaskit/paaskit/internal/evproxy"
	"github.com/paaskit/paaskit/internal/http1"
)

// Miss describes a miss: the picked node answered that it does not run
// the app for the host (status 404 with the miss header set to "1").
type Miss struct {
	Host string // the normalized host
	Node Node   // the node that answered
}

// Config configures a Proxy. Zero values mean the documented defaults.
type Config struct {
	// Addr is the TCP address Run listens on when Listener is nil.
	// Default ":8080".
	Addr string
	// Listener, if set, is used by Run instead of listening on Addr. Run
	// closes it when it returns.
	Listener net.Listener
	// Table is the initial routing table; nil means an empty table (every
	// host is unknown) until SetTable is called.
	Table *Table

	// TLSCertDir, if set, makes the proxy terminate TLS, picking a
	// certificate by SNI from the pairs in this directory (see CertStore).
	// The directory is re-read every CertReloadInterval (default 30s) and
	// on ReloadCerts.
	TLSCertDir         string
	CertReloadInterval time.Duration

	// ReadHeaderTimeout bounds the time from a request's first byte to the
	// end of its head (slow clients are cut off). Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a keep-alive
	// connection, and each read of a request body. Default 90s.
	IdleTimeout time.Duration
	// DialTimeout bounds connecting to a node. Default 3s.
	DialTimeout time.Duration
	// Resolve looks up the host of a node named by a DNS name
	// ("api.internal:8080"); nil means net.DefaultResolver.LookupNetIP
	// (which reads /etc/hosts first). Named nodes are looked up off the
	// request path, with a DialTimeout bound: once per SetTable, again
	// after connects to every address the name gave failed (at most
	// once a second) and when an ejected node is probed. The event
	// loops connect to the addresses found (IPv4 first, the next one
	// after a connect failure); a node whose name has not resolved is
	// ejected (NodeStatus.ResolveError says why) and its hosts go to the
	// next node, and one not looked up yet is served by the goroutine
	// path, which dials the name itself.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// ResponseHeaderTimeout bounds the wait for a node's response head
	// after the request was sent; past it the client gets 504. Default 60s.
	ResponseHeaderTimeout time.Duration
	// ShutdownTimeout bounds how long Run lets requests in flight finish
	// after its context is cancelled, on both forwarders together (one
	// deadline); then it closes what is left. Default 10s.
	ShutdownTimeout time.Duration

	// MaxHeaderBytes bounds a request or response head. Default 32 KiB.
	MaxHeaderBytes int
	// MaxHeaderFields bounds the number of header fields. Default 100.
	MaxHeaderFields int
	// MaxBodyBytes bounds a request body: a larger Content-Length is
	// answered 413 before the body is read, and a chunked body that grows
	// past it is cut and answered 413 (the node, which got part of it,
	// sees its connection close); both close the client connection. 0
	// means 100 MB; negative: no limit.
	MaxBodyBytes int64
	// MaxConnBuffer bounds the request body bytes the proxy holds for one
	// client connection: the event loops read a body up to this size
	// whole and send it with the head; a larger one streams on the
	// goroutine path through fixed 4 KiB buffers, paced by the node's
	// reading. Everything else a connection holds is fixed too: its head
	// buffer (MaxHeaderBytes) and one response buffer (16 KiB on the
	// loops, MaxHeaderBytes on the goroutine path), so a slow reader or a
	// slow node stalls the other side through TCP flow control instead
	// of growing the proxy: per connection it holds at most about
	// 2*MaxHeaderBytes + MaxConnBuffer + 32 KiB, plus what the kernel's
	// socket buffers take (the system's tcp_rmem and tcp_wmem). 0 means
	// 16 KiB; at most 16 MiB.
	MaxConnBuffer int

	// SocketBuffer, if positive, is set as SO_RCVBUF and SO_SNDBUF of
	// every client and node TCP socket (the kernel doubles it), bounding
	// what the kernel holds per connection for a slow reader or a slow
	// node: with 64 KiB, a client that reads nothing stalls its node
	// after a few hundred KB instead of several MB. A small value also
	// caps a connection's throughput (to about SocketBuffer per round
	// trip), so 0, the default, leaves the kernel's autotuning
	// (net.ipv4.tcp_rmem and tcp_wmem, system-wide bounds).
	SocketBuffer int

	// MaxConns caps the client connections held at once, over both
	// forwarders. One over the cap is accepted and closed at once, before
	// a byte is read: that costs nothing, keeps the listen backlog moving
	// for clients within their caps, and holds no buffer for a flood (a
	// 503 would mean reading the request first). 0 means half the
	// process's open-file limit when New runs (each client may need a
	// node connection too), at least 64; negative: no cap.
	MaxConns int
	// MaxConnsPerIP caps the connections held at once from one client
	// address (an IPv4 address or an IPv6 /64), refused like MaxConns.
	// 0 means 1024, room for an office behind one NAT; negative: no cap.
	MaxConnsPerIP int
	// TrustedProxies are the sources (an outer TCP load balancer) whose
	// PROXY protocol header, v1 or v2, is believed: a connection from
	// one must start with one, and the client it names is the one in
	// X-Forwarded-For and the one MaxConnsPerIP counts. A malformed or
	// missing header from a trusted source, or any PROXY header from
	// another source, closes the connection. Empty: none trusted.
	TrustedProxies []netip.Prefix

	// MaxIdlePerNode bounds the idle keep-alive connections kept per node.
	// Default 256.
	MaxIdlePerNode int

	// EjectAfter is the grace period: a node whose connections keep
	// failing for this long is ejected, and its hosts go to the next node
	// in their order until it answers again. Default 3s.
	EjectAfter time.Duration
	// ProbeInterval is how often ejected nodes are probed (a TCP connect,
	// or the health check when HealthCheckPath is set). Default 1s.
	ProbeInterval time.Duration
	// HealthCheckPath, if set, turns on the active health check: every
	// ProbeInterval each node gets "GET HealthCheckPath"; a status below
	// 500 within DialTimeout+ResponseHeaderTimeout counts as healthy.
	HealthCheckPath string
	// Clock times ejection (EjectAfter) and probe rounds (ProbeInterval);
	// nil means the system clock. See Clock for what it does not time.
	Clock Clock

	// BoundedLoad, if above 1, turns on bounded-load hashing: a host goes
	// to the next node in its order while its node has more requests in
	// flight than BoundedLoad times the mean (and more than
	// BoundedLoadFloor). 0 turns it off.
	BoundedLoad float64
	// BoundedLoadFloor is the least in-flight cap per node in bounded-load
	// mode, so that a second concurrent request for a host does not spill
	// to a node where its app is cold. Default 8.
	BoundedLoadFloor int

	// MissHeader is the response header with which a node says it does not
	// run the app for the host (with status 404 and value "1"). Default
	// "X-Paaskit-Miss".
	MissHeader string
	// OnMiss, if set, is called when a node answers with a miss; when it
	// returns nil the request is sent once more (to the node the table
	// then picks) if it has no body, and the second answer goes to the
	// client whatever it is. It is called on the client connection's
	// goroutine, with a context that ends after MissTimeout (default 30s)
	// or when the proxy stops; it must not keep the Miss after returning.
	// When nil, a miss is passed to the client as is. A panic in it is
	// recovered: logged with its stack, the request answered 502, and
	// the proxy serves on (ForwarderStats.HookPanics counts it).
	OnMiss      func(ctx context.Context, m Miss) error
	MissTimeout time.Duration

	// RetryAfter is the Retry-After of a 503 when no node is live.
	// Default 5s.
	RetryAfter time.Duration

	// EventLoops is the number of event loops (internal/evproxy) that
	// serve a plain (non-TLS) TCP listener instead of a goroutine per
	// connection; requests the loops do not handle themselves are
	// handed to the goroutine path. 0 means GOMAXPROCS loops; -1 turns
	// the loops off (a goroutine per connection for everything). Each
	// loop holds a P on its locked thread: give the process a P more
	// than it has loops (balancerd does), or the runtime takes a loop's
	// P away whenever its wait blocks, and the goroutine path has none.
	EventLoops int
	// BusyPoll makes an event loop that just handled events poll once
	// more without blocking before it blocks.
	BusyPoll bool

	// Logger receives the proxy's logs; nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if err := evproxy.SetDurations("balancer",
		evproxy.Dur(&c.CertReloadInterval, 30*time.Second, "CertReloadInterval"),
		evproxy.Dur(&c.ReadHeaderTimeout, evproxy.DefaultReadHeaderTimeout, "ReadHeaderTimeout"),
		evproxy.Dur(&c.IdleTimeout, evproxy.DefaultIdleTimeout, "IdleTimeout"),
		evproxy.Dur(&c.DialTimeout, evproxy.DefaultDialTimeout, "DialTimeout"),
		evproxy.Dur(&c.ResponseHeaderTimeout, evproxy.DefaultResponseHeaderTimeout, "ResponseHeaderTimeout"),
		evproxy.Dur(&c.ShutdownTimeout, evproxy.DefaultShutdownTimeout, "ShutdownTimeout"),
		evproxy.Dur(&c.EjectAfter, 3*time.Second, "EjectAfter"),
		evproxy.Dur(&c.ProbeInterval, time.Second, "ProbeInterval"),
		evproxy.Dur(&c.MissTimeout, 30*time.Second, "MissTimeout"),
		evproxy.Dur(&c.RetryAfter, 5*time.Second, "RetryAfter"),
	); err != nil {
		return err
	}
	if err := evproxy.SetHeadLimits("balancer", &c.MaxHeaderBytes, &c.MaxHeaderFields); err != nil {
		return err
	}
	if c.Addr == "" {
		c.Addr = ":8080"
	}
	if c.Resolve == nil {
		c.Resolve = defaultResolve
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxConnBuffer == 0 {
		c.MaxConnBuffer = 16 << 10
	}
	if c.MaxConnBuffer < 0 || c.MaxConnBuffer > 16<<20 {
		return fmt.Errorf("balancer: MaxConnBuffer %d is outside 0 (default) to 16 MiB", c.MaxConnBuffer)
	}
	if c.MaxIdlePerNode < 0 || c.BoundedLoadFloor < 0 {
		return fmt.Errorf("balancer: negative size limit in Config")
	}
	if c.MaxIdlePerNode == 0 {
		c.MaxIdlePerNode = 256
	}
	if c.BoundedLoad != 0 && (c.BoundedLoad <= 1 || math.IsNaN(c.BoundedLoad) || math.IsInf(c.BoundedLoad, 0)) {
		return fmt.Errorf("balancer: BoundedLoad %v must be 0 (off) or above 1", c.BoundedLoad)
	}
	if c.BoundedLoadFloor == 0 {
		c.BoundedLoadFloor = 8
	}
	if c.EventLoops < -1 {
		return fmt.Errorf("balancer: EventLoops %d must be -1 (off), 0 (default) or positive", c.EventLoops)
	}
	if c.EventLoops == 0 {
		c.EventLoops = runtime.GOMAXPROCS(0)
	}
	if c.MissHeader == "" {
		c.MissHeader = "X-Paaskit-Miss"
	}
	if !isToken([]byte(c.MissHeader)) {
		return fmt.Errorf("balancer: MissHeader %q is not a header name", c.MissHeader)
	}
	if c.HealthCheckPath != "" && c.HealthCheckPath[0] != '/' {
		return fmt.Errorf("balancer: HealthCheckPath %q must start with /", c.HealthCheckPath)
	}
	return nil
}

// DefaultMaxBodyBytes is the request body limit when Config.MaxBodyBytes
// is 0: 100 MB, more than any form upload or API call a site behind a
// PaaS should take in one request, and a cap on what one client can make
// a node read.
const DefaultMaxBodyBytes = 100 << 20

// bound is a table with its nodes resolved to the proxy's backends.
type bound struct {
	t  *Table
	be []*backend // by table node index
}

// Proxy is the balancer's HTTP/1.1 front: it accepts client connections,
// routes each request by its Host through the table to a node, and
// forwards it over a pooled keep-alive connection. It is also an
// http.Handler (see ServeHTTP) for embedding behind net/http.
type Proxy struct {
	cfg       Config
	log       *slog.Logger
	missLower string // cfg.MissHeader in lower case, as the parser wants it
	certs     *CertStore
	gate      *admit.Gate // connection caps and PROXY headers, for both forwarders

	cur atomic.Pointer[bound]

	mu       sync.Mutex // guards backends, loads and the swap in SetTable
	backends map[string]*backend
	loads    uint64         // SetTable calls so far (orders their lookups)
	resolves sync.WaitGroup // lookups of named nodes running (resolve.go)

	total atomic.Int64 // requests in flight to all nodes

	// fwd is the goroutine-per-connection forwarder: TLS, what the
	// event loops hand off, and everything when they are off.
	fwd      *connproxy.Proxy
	draining atomic.Bool

	// baseCtx is cancelled when Run stops; stored because connection
	// goroutines hand it to OnMiss and it has no other owner.
	baseCtx    context.Context
	baseCancel context.CancelFunc

	addrMu sync.Mutex
	addr   net.Addr
	ready  chan struct{}

	started atomic.Bool
	panics  atomic.Int64                  // panics recovered (recover.go)
	loops   atomic.Pointer[evproxy.Proxy] // the event loops while Run serves with them
}

// ErrRunTwice is returned by a second call of Proxy.Run.
var ErrRunTwice = errors.New("balancer: Proxy.Run called twice")

// New validates cfg and returns a proxy; Run starts serving.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg:      cfg,
		log:      cfg.Logger,
		backends: make(map[string]*backend),
		ready:    make(chan struct{}),
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.missLower = strings.ToLower(cfg.MissHeader)
	gate, err := admit.New(admit.Config{MaxConns: cfg.MaxConns, MaxConnsPerIP: cfg.MaxConnsPerIP, TrustedProxies: cfg.TrustedProxies,
		SocketBuffer: cfg.SocketBuffer, Logger: p.log})
	if err != nil {
		return nil, fmt.Errorf("balancer: %w", err)
	}
	p.gate = gate
	maxBody := cfg.MaxBodyBytes
	if maxBody < 0 {
		maxBody = 0
	}
	p.fwd, err = connproxy.New(connproxy.Config{
		Handler:               goHandler{p},
		ReadHeaderTimeout:     cfg.ReadHeaderTimeout,
		IdleTimeout:           cfg.IdleTimeout,
		DialTimeout:           cfg.DialTimeout,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		MaxHeaderBytes:        cfg.MaxHeaderBytes,
		MaxHeaderFields:       cfg.MaxHeaderFields,
		MaxBodyBytes:          maxBody,
		MissHeader:            cfg.MissHeader,
		Resume:                p.resume,
		Logger:                p.log,
	})
	if err != nil {
		return nil, fmt.Errorf("balancer: %w", err)
	}
	p.baseCtx, p.baseCancel = context.WithCancel(context.Background())
	if cfg.TLSCertDir != "" {
		cs, err := NewCertStore(cfg.TLSCertDir, p.log)
		if err != nil {
			return nil, err
		}
		p.certs = cs
	}
	t := cfg.Table
	if t == nil {
		var err error
		if t, err = NewTable(TableConfig{}); err != nil {
			return nil, err
		}
	}
	p.SetTable(t)
	return p, nil
}

// SetTable swaps the routing table atomically. Requests already routed
// finish on the old table; nodes that left the table have their idle
// connections closed, on the goroutine path here and in the event loops
// when they next wake (unless another node keeps the address), and their
// connections in use are closed when their exchange ends. Nodes that
// stay (same id and address) keep their connections and health.
func (p *Proxy) SetTable(t *Table) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := &bound{t: t, be: make([]*backend, len(t.nodes))}
	keep := make(map[string]*backend, len(t.nodes))
	for i, n := range t.nodes {
		key := n.ID + "\x00" + n.Addr
		be := p.backends[key]
		if be == nil {
			be = newBackend(p, n.ID, n.Addr)
		}
		keep[key] = be
		b.be[i] = be
	}
	p.cur.Store(b)
	p.loads++
	var gone []evproxy.Target
	for key, be := range p.backends {
		if keep[key] == nil {
			be.close()
			gone = append(gone, loopTarget(be.addr))
			if t := be.loopTarget(); t.Addr != be.addr {
				gone = append(gone, t)
			}
		}
	}
	p.backends = keep
	// The loops pool by address: addresses still in the table (under
	// another id) keep their connections.
	p.retireLoopTargets(gone...)
	p.resolveAll(p.loads, b.be)
}

// Table returns the current routing table.
func (p *Proxy) Table() *Table { return p.cur.Load().t }

// Addr returns the address the proxy listens on, once Ready is closed.
func (p *Proxy) Addr() net.Addr {
	p.addrMu.Lock()
	defer p.addrMu.Unlock()
	return p.addr
}

// Ready is closed once Run is accepting connections.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// ReloadCerts re-reads the TLS certificate directory now. It is a no-op
// without TLSCertDir.
func (p *Proxy) ReloadCerts() error {
	if p.certs == nil {
		return nil
	}
	return p.certs.Reload()
}

// NodeStatus is one node's state as the proxy sees it.
type NodeStatus struct {
	ID      string `json:"id"`
	Addr    string `json:"addr"`
	Ejected bool   `json:"ejected"`
	Failing bool   `json:"failing"`
	// InFlight counts the requests routed to the node whose exchange is
	// not over: from the pick (connecting included) until the response
	// body was wholly relayed or cut, or a tunnel (WebSocket) closed, or
	// the attempt was given up (a retry on another node, a hand-off).
	// Bounded load compares this figure; both forwarders count it so.
	InFlight int64 `json:"in_flight"`
	// Idle counts the keep-alive connections to the node that are
	// pooled and unused now: the goroutine path's pool plus the event
	// loops' pools for the node's address.
	Idle int `json:"idle_conns"`
	// Resolved is the address the event loops connect to for a node
	// named by a DNS name, empty until its name has resolved (and for a
	// literal address); ResolveError is the last lookup's error, empty
	// once one answered.
	Resolved     string `json:"resolved,omitempty"`
	ResolveError string `json:"resolve_error,omitempty"`
}

// Nodes returns the state of the current table's nodes, sorted by id.
func (p *Proxy) Nodes() []NodeStatus {
	b := p.cur.Load()
	var loopIdle map[evproxy.Target]int64
	if l := p.loops.Load(); l != nil {
		loopIdle = l.IdleByTarget()
	}
	out := make([]NodeStatus, 0, len(b.be))
	for i, be := range b.be {
		idle := be.pool.Idle() + int(loopIdle[be.loopTarget()])
		resolved, rerr := be.resolveStatus()
		out = append(out, NodeStatus{
			ID: b.t.nodes[i].ID, Addr: be.addr, Ejected: be.ejected.Load(),
			Failing: be.failSince.Load() != 0, InFlight: be.inflight.Load(), Idle: idle,
			Resolved: resolved, ResolveError: rerr,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Run listens (or uses Config.Listener) and serves until ctx is done, then
// stops accepting, lets requests in flight finish for up to
// ShutdownTimeout (one deadline for both forwarders, which drain at
// once), closes every connection, the ones to nodes of the exchanges cut
// included, and returns once all the goroutines it started have ended. A
// Proxy runs once.
func (p *Proxy) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return ErrRunTwice
	}
	ln := p.cfg.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", p.cfg.Addr)
		if err != nil {
			return fmt.Errorf("balancer: listen on %s: %w", p.cfg.Addr, err)
		}
	}
	tlsOn := p.certs != nil
	if tlsOn {
		// Admission (and a trusted source's PROXY header) comes before
		// the TLS handshake, on the plain socket.
		ln = tls.NewListener(p.gate.Listener(ln, p.cfg.ReadHeaderTimeout), &tls.Config{
			GetCertificate: p.certs.GetCertificate,
			NextProtos:     []string{"http/1.1"},
			MinVersion:     tls.VersionTLS12,
		})
	}
	p.addrMu.Lock()
	p.addr = ln.Addr()
	p.addrMu.Unlock()
	close(p.ready)

	var bg sync.WaitGroup
	bg.Add(1)
	go func() { defer bg.Done(); p.probeLoop(p.baseCtx) }()
	if tlsOn {
		bg.Add(1)
		go func() { defer bg.Done(); p.certLoop(p.baseCtx) }()
	}

	var loops *evproxy.Proxy
	if !tlsOn {
		var err error
		if loops, err = p.newLoops(ln); err != nil {
			_ = ln.Close()
			p.baseCancel()
			bg.Wait()
			return err
		}
	}
	acceptErr := make(chan error, 1)
	loopCtx, loopCancel := context.WithCancel(context.Background())
	defer loopCancel()
	if loops != nil {
		p.loops.Store(loops)
		go func() { acceptErr <- loops.Run(loopCtx) }()
	} else {
		go func() { acceptErr <- p.acceptLoop(ln, tlsOn) }()
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-acceptErr:
		err = fmt.Errorf("balancer: accept on %s: %w", ln.Addr(), err)
	}
	// Both paths drain at once, against one deadline: the loops stop
	// ShutdownTimeout after they are told to (now), and the goroutine
	// path's connections, which drain meanwhile, are cut at the same
	// moment, so the whole shutdown takes one ShutdownTimeout, not one
	// per path.
	stopBy := time.Now().Add(p.cfg.ShutdownTimeout)
	p.draining.Store(true)
	loopCancel() // the loops drain their own connections
	if loops == nil {
		_ = ln.Close()
	}
	p.fwd.Drain()
	if err == nil {
		<-acceptErr
	}
	_ = ln.Close()
	p.fwd.Shutdown(stopBy)
	p.baseCancel()
	bg.Wait()
	p.resolves.Wait()
	p.mu.Lock()
	for _, be := range p.backends {
		be.close()
	}
	p.mu.Unlock()
	return err
}

func (p *Proxy) acceptLoop(ln net.Listener, tlsOn bool) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.draining.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) ||
				errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				p.log.Warn("balancer: accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if !tlsOn { // a TLS listener admits on its inner listener
			ac := p.gate.Accept(c, p.cfg.ReadHeaderTimeout)
			if ac == nil {
				continue
			}
			c = ac
		}
		p.fwd.Serve(c, nil, tlsOn, false)
	}
}

// probeLoop brings ejected nodes back (and runs the active health check).
func (p *Proxy) probeLoop(ctx context.Context) {
	t := p.cfg.Clock.NewTicker(p.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		b := p.cur.Load()
		var wg sync.WaitGroup
		for i, be := range b.be {
			if p.cfg.HealthCheckPath == "" && !be.ejected.Load() {
				continue
			}
			wg.Add(1)
			go func(be *backend, host string) {
				defer wg.Done()
				p.probe(ctx, be, host)
			}(be, b.t.nodes[i].ID)
		}
		wg.Wait()
	}
}

func (p *Proxy) probe(ctx context.Context, be *backend, id string) {
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	addr, err := p.probeAddr(ctx, be)
	var c net.Conn
	if err == nil {
		c, err = d.DialContext(ctx, "tcp", addr)
	}
	if err == nil && p.cfg.HealthCheckPath != "" {
		err = healthCheck(c, p.cfg.HealthCheckPath, be.addr, p.cfg.ResponseHeaderTimeout, p.cfg.MaxHeaderBytes)
	}
	if c != nil {
		_ = c.Close()
	}
	if err != nil {
		if p.markFail(be) {
			p.log.Warn("balancer: node ejected by health check", "node", id, "addr", be.addr, "err", err)
		}
		return
	}
	if be.markOK() {
		p.log.Info("balancer: node is back", "node", id, "addr", be.addr)
	}
}

func (p *Proxy) markFail(be *backend) bool {
	return be.markFail(p.cfg.Clock.Now(), p.cfg.EjectAfter)
}

// healthCheck sends one GET and accepts a status below 500.
func healthCheck(c net.Conn, path, host string, timeout time.Duration, maxHead int) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: paaskit-balancer-health\r\nConnection: close\r\n\r\n", path, host); err != nil {
		return fmt.Errorf("health check %s: %w", path, err)
	}
	h, err := readHead(bufio.NewReaderSize(c, 4096), maxHead)
	if err != nil {
		return fmt.Errorf("health check %s: %w", path, err)
	}
	var resp head
	if err := parseResponseHead(h, &resp, 1000, ""); err != nil {
		return fmt.Errorf("health check %s: %w", path, err)
	}
	if resp.Status >= 500 {
		return fmt.Errorf("health check %s: status %d", path, resp.Status)
	}
	return nil
}

func (p *Proxy) certLoop(ctx context.Context) {
	t := time.NewTicker(p.cfg.CertReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := p.certs.Reload(); err != nil {
				p.log.Error("balancer: reloading certificates", "dir", p.cfg.TLSCertDir, "err", err)
			}
		}
	}
}

// readHead reads a response head, through its empty line, of at most max
// bytes.
func readHead(br *bufio.Reader, max int) ([]byte, error) {
	var buf []byte
	for {
		line, err := br.ReadSlice('\n')
		buf = append(buf, line...)
		if len(buf) > max {
			return nil, errors.New("response head too large")
		}
		if err != nil && err != bufio.ErrBufferFull {
			return nil, err
		}
		if k := http1.HeadEnd(buf); k >= 0 {
			return buf[:k], nil
		}
	}
}
