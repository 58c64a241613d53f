package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paaskit/paaskit/internal/admit"
	"github.com/paaskit/paaskit/internal/connproxy"
	"github.com/paaskit/paaskit/internal/evproxy"
)

// Defaults for zero Config fields.
const (
	DefaultUIDMin       = 200000
	DefaultUIDMax       = 299999
	DefaultIdleTimeout  = 10 * time.Minute
	DefaultStartTimeout = 30 * time.Second
	DefaultStopGrace    = 10 * time.Second
	DefaultMaxLineBytes = 16 << 10
	DefaultReapInterval = time.Second
	// DefaultResponseTimeout: see Config.ResponseTimeout.
	DefaultResponseTimeout = 5 * time.Minute
	DefaultCgroupRoot      = "paaskit"
	// DefaultEventLoops: see Config.EventLoops. One loop: on a node the
	// apps need the cores more than the front does (see the package doc
	// for the measurements behind it).
	DefaultEventLoops = 1
)

// DefaultLimits are the limits of an app whose spec and Config.DefaultLimits
// leave them zero.
var DefaultLimits = Limits{Memory: 512 << 20, Processes: 512, OpenFiles: 4096, CPUWeight: 100}

// DefaultSystemDirs are the host directories a sandbox sees read-only.
var DefaultSystemDirs = []string{"/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin"}

// DefaultEtcFiles are the host files under /etc a sandbox sees read-only
// (those that exist); passwd, group and hostname are written per sandbox.
var DefaultEtcFiles = []string{
	"/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl", "/etc/ca-certificates",
	"/etc/localtime", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
	"/etc/mime.types", "/etc/protocols", "/etc/services", "/etc/python3", "/etc/python3.11",
}

// Isolation switches isolation features off. The zero value asks for all of
// them; those the kernel or the runner's privileges do not allow are
// reported in Status().Isolation and logged at New, never silently dropped.
type Isolation struct {
	// Off runs apps as plain child processes of the runner (its user, the
	// host's file system, no namespaces, cgroup or rlimits), in their own
	// process group. For development and for measuring what isolation
	// costs.
	Off bool
	// NoUser keeps apps on the runner's UID/GID.
	NoUser bool
	// NoNamespaces skips the new mount, PID, UTS and IPC namespaces (and
	// so the sandbox root, which needs the mount namespace).
	NoNamespaces bool
	// NoSandboxRoot keeps the host's root instead of the assembled
	// read-only root.
	NoSandboxRoot bool
	// NoCgroup skips the per-instance cgroup (no memory limit, no CPU or
	// memory accounting).
	NoCgroup bool
	// NoRlimits skips RLIMIT_NPROC and RLIMIT_NOFILE.
	NoRlimits bool
	// NoCapDrop keeps the init helper's capabilities for the app and
	// skips no_new_privs (never for production: for debugging only).
	NoCapDrop bool
	// NoSeccomp skips the system-call filter.
	NoSeccomp bool
	// NoNetwork keeps apps in the host's network namespace (they can
	// reach and bind whatever the host can).
	NoNetwork bool
}

// IsolationStatus says which isolation features are in force.
type IsolationStatus struct {
	User        bool `json:"user"`
	Namespaces  bool `json:"namespaces"`
	SandboxRoot bool `json:"sandbox_root"`
	Cgroup      bool `json:"cgroup"`
	// CgroupVersion is 1 or 2 when Cgroup is true.
	CgroupVersion int  `json:"cgroup_version,omitempty"`
	Rlimits       bool `json:"rlimits"`
	// Capabilities: the sandbox holds no capability and runs with
	// no_new_privs. Seccomp: the system-call filter is in force.
	Capabilities bool `json:"capabilities"`
	Seccomp      bool `json:"seccomp"`
	// Network: each instance has a network namespace of its own
	// (loopback only, or egress as its spec allows); Egress: the egress
	// policy can be given (a bridge, NAT and the filter rules).
	Network bool `json:"network"`
	Egress  bool `json:"egress"`
	// Warnings are doubts about the configuration that do not switch a
	// feature off (a UID range overlapping /etc/subuid, say).
	Warnings []string `json:"warnings,omitempty"`
	// Missing says, one entry per feature, what is off and why.
	Missing []string `json:"missing,omitempty"`
}

// Config configures a Runner. Zero values are the documented defaults.
type Config struct {
	// StateDir holds the runner's state: the UID table, instance sockets,
	// default data directories and logs. Required.
	StateDir string
	// SpecDir, if set, is a directory of app spec files (*.json, one app
	// each) that Run loads and watches: a new file adds its app, a removed
	// file removes it (its instance is stopped), a changed file restarts
	// it gracefully. A bad file is logged and listed in
	// Status().SpecErrors; other apps are unaffected.
	SpecDir string
	// UIDMin and UIDMax bound the UIDs (and GIDs) given to apps; zero
	// means DefaultUIDMin and DefaultUIDMax. An app keeps its UID across
	// restarts (<StateDir>/uids.json); a table naming a UID outside the
	// range (UID 0 above all) is refused, so a tampered or stale file can
	// never run an app as root or as a system user. A range that
	// overlaps /etc/subuid or /etc/subgid (the UIDs of other users'
	// containers) is logged and listed in Isolation().Warnings.
	UIDMin, UIDMax int
	// DataRoot is the directory under which apps' data directories must
	// lie (Spec.DataDir beneath it, or the default <StateDir>/data/<name>);
	// "" means <StateDir>/data. A spec naming a data directory anywhere
	// else is refused, so a spec cannot have /etc chowned to an app.
	DataRoot string
	// LogFileBytes and LogFiles bound the default FileSink's files: an
	// app's log is rotated before it passes LogFileBytes and LogFiles
	// rotated files are kept. Zero means DefaultLogFileBytes and
	// DefaultLogFiles.
	LogFileBytes int64
	LogFiles     int
	// DefaultLimits fills zero fields of an app's limits; its own zero
	// fields mean the package's DefaultLimits.
	DefaultLimits Limits
	// DefaultIdleTimeout and DefaultStartTimeout apply to specs that leave
	// theirs zero; zero means the package defaults.
	DefaultIdleTimeout  time.Duration
	DefaultStartTimeout time.Duration
	// StopGrace is how long a stopping instance has between SIGTERM and
	// SIGKILL; zero means DefaultStopGrace.
	StopGrace time.Duration
	// ResponseTimeout bounds how long the front waits for an app: for the
	// head of its response, and between two reads of its body. A request
	// that hits it gets 504 (or, mid-body, a closed connection), so a hung
	// app cannot hold the front's connections forever. The bound is
	// enforced within a factor of two (a read may give up after
	// ResponseTimeout/2 of silence). Zero means DefaultResponseTimeout;
	// negative means none. Open WebSockets have none.
	ResponseTimeout time.Duration
	// ReapInterval is how often idle instances are looked for; zero means
	// DefaultReapInterval.
	ReapInterval time.Duration
	// MaxStartBackoff caps the delay before restarting an app that
	// crashed or failed to start; zero means 30s. The delay starts at
	// 100ms and doubles per consecutive failure.
	MaxStartBackoff time.Duration
	// Isolation switches features off; see Isolation.
	Isolation Isolation
	// InitPath is the program re-executed as the sandbox init helper; it
	// must call Init first thing in main. Empty means the running
	// executable (/proc/self/exe, so an upgrade of the file on disk does
	// not mix versions), which must then have called Init.
	InitPath string
	// SystemDirs and EtcFiles are what a sandbox root shows of the host;
	// nil means DefaultSystemDirs and DefaultEtcFiles.
	SystemDirs []string
	EtcFiles   []string
	// TmpSize bounds each sandbox's private /tmp; zero means 64 MiB.
	TmpSize int64
	// CgroupRoot names the runner's subtree in each cgroup hierarchy;
	// "" means DefaultCgroupRoot. Two runners on a host need two roots.
	CgroupRoot string
	// Sink receives the apps' output; nil means a FileSink under
	// <StateDir>/logs (closed when Run returns).
	Sink Sink
	// MaxLineBytes bounds one captured line; longer lines are split.
	// Zero means DefaultMaxLineBytes.
	MaxLineBytes int
	// EventLoops is the number of event loops (internal/evproxy) that
	// serve warm requests when Serve's listener is plain TCP: a request
	// whose app has a ready instance is forwarded by a loop; everything
	// else (a cold start, a miss, an upgrade, a large body or a chunked
	// one the client paused in, HTTP/1.0) is handed, with every byte
	// read, to the goroutine path.
	// Zero means DefaultEventLoops; -1 turns the loops off (a goroutine
	// per connection for everything). An instance stays in flight until
	// the loop has relayed its whole response (or the exchange was cut),
	// so a streaming response keeps it alive as on the goroutine path.
	EventLoops int

	// MaxConns caps the front's client connections held at once (Serve,
	// both paths); one over it is accepted and closed at once, before a
	// byte is read (nothing buffered for a flood; a 503 would need the
	// request read first). 0 means half the open-file limit when New
	// runs, at least 64; negative: no cap.
	MaxConns int
	// MaxConnsPerIP caps the connections from one client address (an
	// IPv4 address or an IPv6 /64), refused like MaxConns. 0 means no
	// per-address cap: a runner's clients are the platform's balancers,
	// a few addresses that carry every site's traffic, which a
	// per-address cap would cut (the balancer caps the clients
	// themselves); set it where the front faces clients directly.
	// Negative: no cap either.
	MaxConnsPerIP int
	// TrustedProxies are the sources whose PROXY protocol header (v1 or
	// v2) is believed and required, naming the client for
	// X-Forwarded-For and MaxConnsPerIP; a PROXY header from any other
	// source, or a malformed one, closes the connection. Empty: none.
	TrustedProxies []netip.Prefix
	// MaxBodyBytes bounds a request body on every path of the front: a
	// larger Content-Length is answered 413 (Connection: close) before
	// the body is read, a chunked body that grows past it is cut and
	// answered 413. 0 means DefaultMaxBodyBytes (100 MB); negative: none.
	MaxBodyBytes int64
	// MaxConnBuffer bounds the request body the event loops buffer per
	// connection (a larger one streams on the goroutine path through
	// fixed buffers); with the fixed head and response buffers, it bounds
	// what a slow client or a slow app makes the front hold. 0 means
	// 16 KiB; at most 16 MiB.
	MaxConnBuffer int

	// EgressSubnet is the node-local IPv4 subnet of egress apps'
	// addresses, on the runner's bridge; "" means DefaultEgressSubnet.
	// Two runners on one host need two subnets (and two CgroupRoots,
	// which name the bridge and the nftables table).
	EgressSubnet string
	// NetnsPool is how many network namespaces are kept made ahead of
	// starts; zero means DefaultNetnsPool, -1 none (each start makes
	// its own, about 1.5 ms here; for measuring what the pool saves).
	NetnsPool int
	// InitPool is how many sandbox init helpers are kept started ahead
	// of instance starts, parked in fresh namespaces until a start hands
	// one its sandbox (a Go binary's own start is 10 to 20 ms on a small
	// VM, most of an on-demand start); zero means DefaultInitPool, -1
	// none (each start execs its helper). Both pools refill once no
	// start is in progress (at most 200 ms later), and parked helpers
	// run at the lowest CPU priority until taken, so refilling never
	// slows the starts it serves.
	InitPool int

	// Clock times the apps' lives: idle reaping, the backoff of failed
	// starts and crash restarts, start timeouts and stop grace; nil means
	// the system clock. See Clock for what it does not time.
	Clock Clock

	// Logger receives the runner's log; nil means slog.Default().
	Logger *slog.Logger
}

// Errors for control flow.
var (
	// ErrUnknownApp: no app has that name (or host).
	ErrUnknownApp = errors.New("runner: unknown app")
	// ErrNotRunning: Run is not running (not started yet, or returned).
	ErrNotRunning = errors.New("runner: not running")
	// ErrUnsupported: this OS cannot run sandboxes.
	ErrUnsupported = errors.New("runner: not supported on this OS")
)

// Runner runs the apps of one node. Build it with New, configure apps with
// Put (or a SpecDir), call Run, and serve its front (ServeHTTP).
type Runner struct {
	cfg      Config
	log      *slog.Logger
	sink     Sink
	ownSink  *FileSink
	uids     *uidTable
	cg       *cgroupManager
	iso      IsolationStatus
	initPath string
	cmdCg    sync.Map     // app name -> *cgroup for its one-off commands
	net      *netManager  // nil without network namespaces
	initPool *initPool    // parked init helpers; nil without the helper or before Run
	starting atomic.Int32 // instances between spawn and ready (or failure)
	gate     *admit.Gate  // the front's connection caps and PROXY headers (bounds.go)
	// httpFwd serves ServeHTTP (Serve makes its own, for its
	// connections and its loops' hand-offs).
	httpFwd *connproxy.Proxy
	// frontLoops are the event loops of the latest Serve, for FrontStats.
	frontLoops atomic.Pointer[evproxy.Proxy]

	mu         sync.RWMutex
	apps       map[string]*app
	hosts      map[string]*app
	specErrors map[string]string
	fileApps   map[string]string // spec file -> app name

	// state is 0 before Run, 1 while it runs, 2 after; runCtx is set
	// before state becomes 1 and read only after seeing 1. Both are read
	// without r.mu so that app code holding an app's lock may ask.
	state atomic.Int32

	// runCtx is Run's context, stored so that instances started by
	// requests live as long as Run does rather than as long as the
	// request that caused their start.
	runCtx  context.Context
	ready   chan struct{} // closed when Run has started
	instSeq atomic.Int64
	wg      sync.WaitGroup // instance goroutines
}

// New validates cfg, prepares the state directory and works out which
// isolation features are available.
func New(cfg Config) (*Runner, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("runner: Config.StateDir is required")
	}
	if !filepath.IsAbs(cfg.StateDir) {
		return nil, fmt.Errorf("runner: StateDir %q is not an absolute path", cfg.StateDir)
	}
	if cfg.UIDMin == 0 && cfg.UIDMax == 0 {
		cfg.UIDMin, cfg.UIDMax = DefaultUIDMin, DefaultUIDMax
	}
	if cfg.UIDMin <= 0 || cfg.UIDMax < cfg.UIDMin || cfg.UIDMax > 1<<31-2 {
		return nil, fmt.Errorf("runner: UID range %d-%d is not valid (want 0 < min <= max)", cfg.UIDMin, cfg.UIDMax)
	}
	cfg.DefaultLimits = cfg.DefaultLimits.withDefaults(DefaultLimits)
	if err := cfg.DefaultLimits.validate(); err != nil {
		return nil, fmt.Errorf("runner: DefaultLimits: %w", err)
	}
	for _, d := range []*time.Duration{&cfg.DefaultIdleTimeout, &cfg.DefaultStartTimeout, &cfg.StopGrace, &cfg.ReapInterval, &cfg.MaxStartBackoff} {
		// (ResponseTimeout may be negative: none.)
		if *d < 0 {
			return nil, fmt.Errorf("runner: negative duration %v in Config", *d)
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.DefaultIdleTimeout, DefaultIdleTimeout)
	def(&cfg.DefaultStartTimeout, DefaultStartTimeout)
	def(&cfg.StopGrace, DefaultStopGrace)
	def(&cfg.ReapInterval, DefaultReapInterval)
	switch {
	case cfg.ResponseTimeout == 0:
		cfg.ResponseTimeout = DefaultResponseTimeout
	case cfg.ResponseTimeout < 0:
		cfg.ResponseTimeout = 0
	}
	def(&cfg.MaxStartBackoff, 30*time.Second)
	switch {
	case cfg.EventLoops < -1:
		return nil, fmt.Errorf("runner: EventLoops %d is invalid (-1 turns the loops off)", cfg.EventLoops)
	case cfg.EventLoops == 0:
		cfg.EventLoops = DefaultEventLoops
	}
	if cfg.EgressSubnet == "" {
		cfg.EgressSubnet = DefaultEgressSubnet
	}
	gate, err := setBoundsDefaults(&cfg)
	if err != nil {
		return nil, err
	}
	if cfg.NetnsPool < -1 || cfg.NetnsPool > 256 {
		return nil, fmt.Errorf("runner: NetnsPool %d is outside -1 to 256", cfg.NetnsPool)
	}
	if cfg.NetnsPool == 0 {
		cfg.NetnsPool = DefaultNetnsPool
	}
	if cfg.InitPool < -1 || cfg.InitPool > 64 {
		return nil, fmt.Errorf("runner: InitPool %d is outside -1 to 64", cfg.InitPool)
	}
	if cfg.InitPool == 0 {
		cfg.InitPool = DefaultInitPool
	}
	if cfg.MaxLineBytes == 0 {
		cfg.MaxLineBytes = DefaultMaxLineBytes
	}
	if cfg.MaxLineBytes < 64 || cfg.MaxLineBytes > 16<<20 {
		return nil, fmt.Errorf("runner: MaxLineBytes %d is outside 64 to 16 MiB", cfg.MaxLineBytes)
	}
	if cfg.TmpSize == 0 {
		cfg.TmpSize = 64 << 20
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = DefaultCgroupRoot
	}
	if cfg.SystemDirs == nil {
		cfg.SystemDirs = DefaultSystemDirs
	}
	if cfg.EtcFiles == nil {
		cfg.EtcFiles = DefaultEtcFiles
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	for _, d := range []string{"", "run", "data", "sandbox"} {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, d), 0o711); err != nil {
			return nil, fmt.Errorf("runner: create state directory: %w", err)
		}
	}
	if err := checkStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	if cfg.DataRoot == "" {
		cfg.DataRoot = filepath.Join(cfg.StateDir, "data")
	}
	if !filepath.IsAbs(cfg.DataRoot) {
		return nil, fmt.Errorf("runner: DataRoot %q is not an absolute path", cfg.DataRoot)
	}
	cfg.DataRoot = filepath.Clean(cfg.DataRoot)
	if err := os.MkdirAll(cfg.DataRoot, 0o711); err != nil {
		return nil, fmt.Errorf("runner: create data root: %w", err)
	}
	if cfg.LogFileBytes == 0 {
		cfg.LogFileBytes = DefaultLogFileBytes
	}
	if cfg.LogFiles == 0 {
		cfg.LogFiles = DefaultLogFiles
	}
	uids, err := openUIDTable(filepath.Join(cfg.StateDir, "uids.json"), cfg.UIDMin, cfg.UIDMax)
	if err != nil {
		return nil, err
	}
	r := &Runner{
		gate:       gate,
		cfg:        cfg,
		log:        log,
		uids:       uids,
		apps:       map[string]*app{},
		hosts:      map[string]*app{},
		specErrors: map[string]string{},
		fileApps:   map[string]string{},
		ready:      make(chan struct{}),
	}
	if r.httpFwd, err = r.newForwarder(goHandler{r: r}, nil); err != nil {
		return nil, err
	}
	if cfg.Sink != nil {
		r.sink = cfg.Sink
	} else {
		fs, err := NewRotatingFileSink(filepath.Join(cfg.StateDir, "logs"), cfg.LogFileBytes, cfg.LogFiles)
		if err != nil {
			return nil, err
		}
		r.sink, r.ownSink = fs, fs
	}
	if err := r.detectIsolation(); err != nil {
		return nil, err
	}
	for _, m := range r.iso.Missing {
		r.log.Warn("runner: isolation feature unavailable", "missing", m)
	}
	for _, f := range subIDFiles {
		for _, w := range subIDOverlaps(f, cfg.UIDMin, cfg.UIDMax) {
			r.iso.Warnings = append(r.iso.Warnings, w)
			r.log.Warn("runner: app UID range overlaps subordinate IDs", "warning", w)
		}
	}
	if r.cg != nil {
		// Two runners must not share a CgroupRoot: this one owns it.
		if stale := r.cg.cleanupStale(); len(stale) > 0 {
			r.log.Warn("runner: removed cgroups left by an earlier runner", "cgroups", stale)
		}
	}
	return r, nil
}

// Isolation reports which isolation features are in force.
func (r *Runner) Isolation() IsolationStatus {
	s := r.iso
	s.Missing = append([]string(nil), r.iso.Missing...)
	s.Warnings = append([]string(nil), r.iso.Warnings...)
	return s
}

// Put adds app s, or replaces the app of that name. A replaced app's
// instance is stopped gracefully (it finishes what is in flight) and, if
// one was running, a new one starts with the new spec.
func (r *Runner) Put(s Spec) error {
	return r.put(s, "")
}

func (r *Runner) put(s Spec, file string) error {
	err := s.Validate()
	if err == nil {
		err = r.checkSpec(&s)
	}
	if err != nil {
		var se *SpecError
		if file != "" && errors.As(err, &se) {
			se.File = file
		}
		return err
	}
	s = s.clone()
	r.mu.Lock()
	if r.state.Load() == 2 {
		r.mu.Unlock()
		return ErrNotRunning
	}
	for _, h := range s.Hosts {
		if other, ok := r.hosts[normHost(h)]; ok && other.name != s.Name {
			r.mu.Unlock()
			return &SpecError{File: file, App: s.Name, Err: fmt.Errorf("host %q is already routed to app %q", h, other.name)}
		}
	}
	a, exists := r.apps[s.Name]
	if !exists {
		a = &app{r: r, name: s.Name, spec: s}
		r.apps[s.Name] = a
		for _, h := range s.Hosts {
			r.hosts[normHost(h)] = a
		}
		r.mu.Unlock()
		r.log.Info("runner: app added", "app", s.Name, "hosts", s.Hosts)
		return nil
	}
	for h, ha := range r.hosts {
		if ha == a {
			delete(r.hosts, h)
		}
	}
	for _, h := range s.Hosts {
		r.hosts[normHost(h)] = a
	}
	r.mu.Unlock()
	a.replace(s)
	return nil
}

// Remove removes the app and stops its instance gracefully. Its UID stays
// allocated, so its data directory stays its own if it comes back.
func (r *Runner) Remove(name string) error {
	r.mu.Lock()
	a, ok := r.apps[name]
	if !ok {
		r.mu.Unlock()
		return fmt.Errorf("%w %q", ErrUnknownApp, name)
	}
	delete(r.apps, name)
	for h, ha := range r.hosts {
		if ha == a {
			delete(r.hosts, h)
		}
	}
	r.mu.Unlock()
	a.remove()
	r.log.Info("runner: app removed", "app", name)
	return nil
}

// App returns the spec of the named app.
func (r *Runner) App(name string) (Spec, bool) {
	r.mu.Lock()
	a, ok := r.apps[name]
	r.mu.Unlock()
	if !ok {
		return Spec{}, false
	}
	s := a.currentSpec()
	return s.clone(), true
}

// Lookup returns the app that serves host (case-insensitive, port ignored).
func (r *Runner) Lookup(host string) (string, bool) {
	a := r.lookup(host)
	if a == nil {
		return "", false
	}
	return a.name, true
}

func (r *Runner) lookup(host string) *app {
	h := normHost(host)
	r.mu.RLock()
	a := r.hosts[h]
	r.mu.RUnlock()
	return a
}

// lookupBytes is lookup for an already normalised host, without allocating.
func (r *Runner) lookupBytes(h []byte) *app {
	r.mu.RLock()
	a := r.hosts[string(h)]
	r.mu.RUnlock()
	return a
}

func (r *Runner) app(name string) (*app, error) {
	r.mu.Lock()
	a, ok := r.apps[name]
	r.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownApp, name)
	}
	return a, nil
}

// Start makes sure the app has a ready instance, starting one if needed, and
// waits for it (bounded by ctx and the app's start timeout).
func (r *Runner) Start(ctx context.Context, name string) error {
	a, err := r.app(name)
	if err != nil {
		return err
	}
	inst, err := a.acquire(ctx, r.cfg.Clock.Now())
	if err != nil {
		return err
	}
	a.release(inst)
	return nil
}

// Stop stops the app's instance gracefully (SIGTERM, then SIGKILL after
// the grace period) and waits until it is gone or ctx ends. The app stays
// configured and starts again on the next request.
func (r *Runner) Stop(ctx context.Context, name string) error {
	a, err := r.app(name)
	if err != nil {
		return err
	}
	inst := a.detach()
	if inst == nil {
		return nil
	}
	inst.stop("stopped")
	select {
	case <-inst.finished:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("runner: stop app %q: %w", name, ctx.Err())
	}
}

// Status is a snapshot of the runner for operators.
type Status struct {
	Isolation IsolationStatus `json:"isolation"`
	Apps      []AppStatus     `json:"apps"`
	// SpecErrors maps a spec file to what is wrong with it.
	SpecErrors map[string]string `json:"spec_errors,omitempty"`
}

// Status returns a snapshot of every app, sorted by name.
func (r *Runner) Status() Status {
	r.mu.Lock()
	apps := make([]*app, 0, len(r.apps))
	for _, a := range r.apps {
		apps = append(apps, a)
	}
	errs := make(map[string]string, len(r.specErrors))
	for k, v := range r.specErrors {
		errs[k] = v
	}
	r.mu.Unlock()
	sort.Slice(apps, func(i, j int) bool { return apps[i].name < apps[j].name })
	st := Status{Isolation: r.Isolation(), SpecErrors: errs}
	for _, a := range apps {
		st.Apps = append(st.Apps, a.status())
	}
	return st
}

// AppStatus returns the named app's status.
func (r *Runner) AppStatus(name string) (AppStatus, error) {
	a, err := r.app(name)
	if err != nil {
		return AppStatus{}, err
	}
	return a.status(), nil
}

// Ready is closed once Run has started: from then on instances can start
// (before, requests and Start fail with ErrNotRunning).
func (r *Runner) Ready() <-chan struct{} { return r.ready }

// Run serves until ctx ends: it loads and watches the spec directory,
// reaps idle instances and restarts crashed ones. When ctx ends it stops
// every instance (SIGTERM, SIGKILL after the grace period) and returns
// once they, their output capture and the watcher are all gone.
func (r *Runner) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.state.Load() != 0 {
		r.mu.Unlock()
		return errors.New("runner: Run called twice")
	}
	r.runCtx = ctx
	if r.initPath != "" && r.cfg.InitPool > 0 {
		r.initPool = newInitPool(r.cfg.InitPool, r.log, r.startParkedHelper, func() bool { return r.starting.Load() > 0 })
		r.initPool.run()
	}
	r.state.Store(1)
	r.mu.Unlock()
	close(r.ready)
	if r.net != nil {
		r.net.start()
	}
	var wg sync.WaitGroup
	if r.cfg.SpecDir != "" {
		w, err := r.newWatcher()
		if err != nil {
			r.shutdown()
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx)
		}()
	}
	t := r.cfg.Clock.NewTicker(r.cfg.ReapInterval)
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-t.C():
			r.maintain()
		}
	}
	t.Stop()
	wg.Wait()
	r.shutdown()
	return nil
}

func (r *Runner) shutdown() {
	r.mu.Lock()
	r.state.Store(2)
	apps := make([]*app, 0, len(r.apps))
	for _, a := range r.apps {
		apps = append(apps, a)
	}
	r.mu.Unlock()
	for _, a := range apps {
		a.shutdown()
	}
	r.wg.Wait()
	r.cmdCg.Range(func(k, v any) bool {
		cg := v.(*cgroup)
		cg.kill(time.Second)
		_ = cg.remove()
		return true
	})
	if r.cg != nil {
		r.cg.removeRoot()
	}
	if r.initPool != nil {
		r.initPool.close()
	}
	if r.net != nil {
		r.net.close()
	}
	if r.ownSink != nil {
		_ = r.ownSink.Close()
	}
}

// running reports whether instances may start, and returns Run's context.
func (r *Runner) running() (context.Context, bool) {
	if r.state.Load() != 1 {
		return nil, false
	}
	return r.runCtx, true
}

func (r *Runner) maintain() {
	r.mu.Lock()
	apps := make([]*app, 0, len(r.apps))
	for _, a := range r.apps {
		apps = append(apps, a)
	}
	r.mu.Unlock()
	now := r.cfg.Clock.Now()
	for _, a := range apps {
		a.maintain(now)
	}
}

func (r *Runner) backoff(failures int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < failures && d < r.cfg.MaxStartBackoff; i++ {
		d *= 2
	}
	if d > r.cfg.MaxStartBackoff {
		d = r.cfg.MaxStartBackoff
	}
	return d
}
