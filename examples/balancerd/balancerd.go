package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/paaskit/paaskit/balancer"
	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/internal/admit"
)

func tableFormat() string { return balancer.TableFormat }

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}

type options struct {
	listen, table, admin, certs, healthPath    string
	poll, eject, readHeader, idle, respTimeout time.Duration
	boundedLoad                                float64
	maxBody                                    int64
	eventLoops                                 int
	maxConns, maxConnsPerIP, maxConnBuffer     int
	socketBuffer                               int
	trustedProxies                             []netip.Prefix
	log                                        *daemon.LogConfig
	nexus                                      *nexusOptions
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("balancerd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	fs.StringVar(&o.listen, "listen", ":8080", "address to serve HTTP (or HTTPS with --tls-certs) on")
	fs.StringVar(&o.table, "table", "", "routing table file (required; format below)")
	fs.StringVar(&o.admin, "admin", "", "address of the admin endpoints /healthz and /nodes (JSON); empty = off")
	fs.StringVar(&o.certs, "tls-certs", "", "directory of NAME.crt + NAME.key pairs; turns on TLS, certificates picked by SNI, re-read every 30s")
	fs.StringVar(&o.healthPath, "health-path", "", "path for the active health check of every node (e.g. /healthz); empty = passive only")
	fs.DurationVar(&o.poll, "poll", time.Second, "how often the table file's size and mtime are checked, besides inotify")
	fs.DurationVar(&o.eject, "eject-after", 3*time.Second, "grace period before a failing node is ejected")
	fs.DurationVar(&o.readHeader, "read-header-timeout", 10*time.Second, "time allowed for a request head")
	fs.DurationVar(&o.idle, "idle-timeout", 90*time.Second, "keep-alive idle timeout for client connections")
	fs.DurationVar(&o.respTimeout, "response-timeout", 60*time.Second, "time a node has to start its response (504 after)")
	fs.Float64Var(&o.boundedLoad, "bounded-load", 0, "bounded-load factor (e.g. 1.25); 0 = off")
	fs.Int64Var(&o.maxBody, "max-body", 0, "request body limit in bytes (413 beyond, Connection: close); 0 = 100 MB, -1 = none")
	fs.IntVar(&o.maxConns, "max-conns", 0, "cap on client connections held at once (over it: accepted and closed at once); 0 = half the open-file limit, -1 = none")
	fs.IntVar(&o.maxConnsPerIP, "max-conns-per-ip", 0, "cap on client connections from one address (IPv4, or IPv6 /64); 0 = 1024, -1 = none")
	fs.IntVar(&o.socketBuffer, "socket-buffer", 0, "SO_RCVBUF/SO_SNDBUF of client and node sockets, bounding what the kernel holds for a slow reader (also caps per-connection throughput); 0 = the kernel's autotuning")
	fs.IntVar(&o.maxConnBuffer, "max-conn-buffer", 0, "request body bytes buffered per connection on the event loops (larger bodies stream); 0 = 16 KiB")
	fs.Func("trusted-proxies", "comma-separated CIDRs or addresses whose PROXY protocol header (v1/v2) is believed and required; a PROXY header from anyone else is refused", func(s string) error {
		ps, err := admit.ParsePrefixes(s)
		o.trustedProxies = append(o.trustedProxies, ps...)
		return err
	})
	fs.IntVar(&o.eventLoops, "event-loops", 0, "event loops serving plain HTTP (an epoll loop per core; WebSocket, TLS and big or streamed uploads go to a goroutine per connection); 0 = GOMAXPROCS (the process then runs with one P more than it has loops), -1 = off (a goroutine per connection for everything)")
	o.log = daemon.LogFlags(fs)
	o.nexus = nexusFlags(fs)
	fs.Usage = usage(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.table == "" && o.nexus.spec == "" {
		return nil, errors.New("--table is required (see --help)")
	}
	if o.poll <= 0 {
		return nil, fmt.Errorf("--poll %v must be positive", o.poll)
	}
	return o, nil
}

func run(args []string, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "balancerd:", err)
		return 2
	}
	o.eventLoops = withSpareProc(o.eventLoops, o.certs != "")
	o.log.Name = "balancerd"
	if o.log.Stderr == nil {
		o.log.Stderr = stderr
	}
	log, closeLog, err := daemon.NewLogger(*o.log)
	if err != nil {
		fmt.Fprintln(stderr, "balancerd:", err)
		return 2
	}
	defer func() { _ = closeLog() }()
	if err := serve(context.Background(), o, log, nil); err != nil {
		log.Error("balancerd stopped", "err", err)
		return 1
	}
	return 0
}

// serve builds the proxy and the reloader and runs them on a daemon until
// ctx ends or a signal stops it. started, if non-nil, gets the proxy once
// it listens (for tests).
func serve(ctx context.Context, o *options, log *slog.Logger, started func(*balancer.Proxy)) error {
	// The stamp is taken before the load, so a change made while the
	// daemon starts is seen by the reloader, never lost between the two.
	loaded := stamp(o.table)
	var t *balancer.Table
	var err error
	var feed nodeFeed
	var comp *composer
	if o.nexus.spec != "" {
		dir, err := openNexus(o.nexus, log)
		if err != nil {
			return fmt.Errorf("--nexus: %w", err)
		}
		defer dir.Close()
		feed = nexusNodes(dir, o.nexus.kind, o.nexus.endpoint, log)
		comp = &composer{log: log, text: "host *\n"}
		if o.table != "" {
			b, err := os.ReadFile(o.table)
			if err != nil {
				return fmt.Errorf("initial table: %w", err)
			}
			comp.text = string(b)
		}
	} else if t, err = balancer.LoadTableFile(o.table, nil); err != nil {
		return fmt.Errorf("initial table: %w", err)
	}
	p, err := balancer.New(balancer.Config{
		Addr: o.listen, Table: t, TLSCertDir: o.certs, HealthCheckPath: o.healthPath,
		EjectAfter: o.eject, ReadHeaderTimeout: o.readHeader, IdleTimeout: o.idle,
		ResponseHeaderTimeout: o.respTimeout, BoundedLoad: o.boundedLoad, MaxBodyBytes: o.maxBody,
		EventLoops: o.eventLoops, Logger: log,
		MaxConns: o.maxConns, MaxConnsPerIP: o.maxConnsPerIP, MaxConnBuffer: o.maxConnBuffer, TrustedProxies: o.trustedProxies,
		SocketBuffer: o.socketBuffer,
	})
	if err != nil {
		return err
	}
	if t != nil {
		log.Info("table loaded", "file", o.table, "nodes", len(t.Nodes()), "sites", t.Len(), "policy", t.Policy())
	}
	d, err := daemon.New(daemon.Config{Name: "balancerd", Logger: log})
	if err != nil {
		return err
	}
	rl := &reloader{path: o.table, poll: o.poll, proxy: p, log: log, loaded: loaded, load: balancer.LoadTableFile}
	if comp != nil {
		comp.proxy = p
		rl.load = comp.loadFile
		if err := d.Add("nexus", func(ctx context.Context) error { return feed(ctx, comp.setNodes) },
			daemon.Restart(daemon.Policy{})); err != nil {
			return err
		}
	}
	if o.table != "" {
		if err := d.Add("reload", rl.Run, daemon.Restart(daemon.Policy{})); err != nil {
			return err
		}
	}
	if err := d.Add("proxy", p.Run); err != nil {
		return err
	}
	if o.admin != "" {
		if err := d.Add("admin", adminServer(o.admin, p, rl)); err != nil {
			return err
		}
	}
	if started != nil {
		go func() {
			select {
			case <-p.Ready():
				started(p)
			case <-ctx.Done():
			}
		}()
	}
	return d.Run(ctx)
}

// reloader reloads the table file on change and on SIGHUP. It is the one
// owner of the "last good table" state.
type reloader struct {
	path  string
	poll  time.Duration
	proxy *balancer.Proxy
	log   *slog.Logger
	// loaded is the file's stamp when the table in force was read.
	loaded fileStamp
	// load reads the file into a table (balancer.LoadTableFile, or with
	// --nexus the file's sites joined with the fed nodes).
	load func(path string, reuse *balancer.Table) (*balancer.Table, error)

	mu      sync.Mutex
	lastErr error
	loads   int
}

// Status reports the number of successful reloads and the last error.
func (r *reloader) Status() (loads int, lastErr error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loads, r.lastErr
}

type fileStamp struct {
	size int64
	mod  time.Time
}

func stamp(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{size: -1}
	}
	return fileStamp{fi.Size(), fi.ModTime()}
}

// Run watches until ctx ends.
func (r *reloader) Run(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", r.path, err)
	}
	defer w.Close()
	// Watch the directory: editors and atomic writers replace the file.
	if err := w.Add(filepath.Dir(r.path)); err != nil {
		return fmt.Errorf("watching %s: %w", filepath.Dir(r.path), err)
	}
	last := r.loaded
	if s := stamp(r.path); s != last {
		// Changed after the initial load, before the watch began.
		last = s
		r.reload()
	}
	tick := time.NewTicker(r.poll)
	defer tick.Stop()
	base := filepath.Base(r.path)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			r.log.Info("SIGHUP: reloading table", "file", r.path)
			last = stamp(r.path)
			r.reload()
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("file watcher closed")
			}
			if filepath.Base(ev.Name) != base {
				continue
			}
			if s := stamp(r.path); s != last {
				last = s
				r.reload()
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("file watcher closed")
			}
			r.log.Warn("file watcher error", "err", err)
		case <-tick.C:
			if s := stamp(r.path); s != last {
				last = s
				r.reload()
			}
		}
	}
}

// reload loads the file; on error the current table stays.
func (r *reloader) reload() {
	t, err := r.load(r.path, r.proxy.Table())
	r.mu.Lock()
	r.lastErr = err
	if err == nil {
		r.loads++
	}
	r.mu.Unlock()
	if err != nil {
		r.log.Error("table reload failed; keeping the old table", "file", r.path, "err", err)
		return
	}
	r.proxy.SetTable(t)
	r.log.Info("table reloaded", "file", r.path, "nodes", len(t.Nodes()), "sites", t.Len())
}

func adminServer(addr string, p *balancer.Proxy, rl *reloader) func(context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /nodes", func(w http.ResponseWriter, _ *http.Request) {
		loads, lastErr := rl.Status()
		st := struct {
			Nodes       []balancer.NodeStatus   `json:"nodes"`
			Sites       int                     `json:"sites"`
			Reloads     int                     `json:"reloads"`
			ReloadError string                  `json:"reload_error,omitempty"`
			Forwarder   balancer.ForwarderStats `json:"forwarder"`
		}{Nodes: p.Nodes(), Reloads: loads, Forwarder: p.ForwarderStats()}
		if t := p.Table(); t != nil {
			st.Sites = t.Len()
		}
		if lastErr != nil {
			st.ReloadError = lastErr.Error()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	return func(ctx context.Context) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("admin listen on %s: %w", addr, err)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
			<-errc
			return nil
		case err := <-errc:
			return fmt.Errorf("admin server: %w", err)
		}
	}
}

// startProcs is GOMAXPROCS as the process started.
var startProcs = runtime.GOMAXPROCS(0)

// withSpareProc returns the number of event loops to run (0: one per
// GOMAXPROCS the process started with) and gives the process one P more
// than that. Each loop holds a P on its locked thread; with no P spare,
// the runtime's sysmon takes a loop's P away whenever its epoll_wait
// blocks for a moment (handing it to a thread started for nothing) and,
// doing so, keeps polling every 20 µs: measured under wrk -t2 -c64, 12.7%
// of balancerd's CPU was sysmon and a spare P cut the CPU per request
// by about a quarter (bench/README.md). The goroutine path (TLS, WebSocket,
// hand-offs) and timers run on the spare P meanwhile. An explicit
// GOMAXPROCS in the environment is left alone, as are TLS (no loops) and
// -event-loops -1.
func withSpareProc(loops int, tls bool) int {
	if loops < 0 || tls || os.Getenv("GOMAXPROCS") != "" {
		return loops
	}
	if loops == 0 {
		loops = startProcs
	}
	runtime.GOMAXPROCS(loops + 1)
	return loops
}
