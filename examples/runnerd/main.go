// Command runnerd is paaskit's reference node daemon: it runs the apps of
// one machine, each isolated in its own sandbox, starts an app's instance
// when the first request for it arrives, reaps it when idle, and routes
// HTTP requests by Host to the instance's unix socket. Apps are JSON spec
// files in a watched directory. Run it with --help for its flags and the
// spec format.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/internal/admit"
	"github.com/paaskit/paaskit/runner"
)

func main() {
	// Sandboxes are built by this binary re-executed as their init helper.
	runner.Init()
	os.Exit(run(os.Args[1:], os.Stderr))
}

const specFormat = `{
  "name": "blog",                       required: a-z, 0-9, '-'
  "hosts": ["blog.example.com"],        required: routed here, any case, port ignored
  "image": "/srv/images/blog",          required: read-only root, seen at /app
  "command": ["/app/venv/bin/gunicorn", "--bind", "unix:/run/paaskit/app.sock", "blog:app"],
  "env": {"DJANGO_SETTINGS_MODULE": "blog.settings"},
  "workdir": "/app",                    default /app
  "data_dir": "/srv/data/blog",         default DATA-ROOT/NAME, writable at /data; must lie beneath --data-root
  "listen": "unix",                     or "tcp": bind 127.0.0.1:$PORT (8000, in the app's own network namespace)
  "network": {"policy": "egress", "allow": ["db.internal:5432"]},
                                        default policy "none": loopback only; "egress": public
                                        addresses, never the host, other apps, private or
                                        link-local ranges but for the destinations in "allow"
  "limits": {"memory": "256M", "processes": 128, "open_files": 1024, "cpu_weight": 100},
  "idle_timeout": "10m",
  "start_timeout": "30s"
}
The app binds the unix socket named by $PAASKIT_SOCKET (/run/paaskit/app.sock).
`

func usage(fs *flag.FlagSet) func() {
	return func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: runnerd --specs DIR [flags]\n\n")
		fmt.Fprintf(w, "runnerd runs the apps described by the JSON files in DIR (one app per\n")
		fmt.Fprintf(w, "*.json file; adding, changing or removing a file takes effect at once),\n")
		fmt.Fprintf(w, "each in a sandbox of its own: its own UID, namespaces, a read-only root,\n")
		fmt.Fprintf(w, "a cgroup with memory and process limits. The front on --listen routes\n")
		fmt.Fprintf(w, "requests by Host to the app's instance, starting it on the first request\n")
		fmt.Fprintf(w, "and stopping it after its idle timeout. Unknown hosts get 404 with\n")
		fmt.Fprintf(w, "X-Paaskit-Miss: 1. GET /status on --admin shows apps, starts and usage.\n")
		fmt.Fprintf(w, "Run it as root for isolation; what is unavailable is logged at start.\n")
		fmt.Fprintf(w, "SIGTERM or SIGINT stop every app gracefully, then the daemon.\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(w, "\nSpec file format:\n\n%s", specFormat)
	}
}

type options struct {
	listen, admin, specs, state, uidRange, cgroupRoot, memory, logDir string
	cpuProfile, dataRoot, egressSubnet                                string
	logFileBytes                                                      string
	netnsPool, logFiles                                               int
	idle, startTimeout, grace, respTimeout                            time.Duration
	processes, openFiles, eventLoops                                  int
	noIsolation                                                       bool
	maxConns, maxConnsPerIP, maxConnBuffer                            int
	maxBody                                                           int64
	trustedProxies                                                    string
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("runnerd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address of the HTTP front")
	fs.StringVar(&o.admin, "admin", "127.0.0.1:8081", "address of the status endpoint (GET /status); empty disables it")
	fs.StringVar(&o.specs, "specs", "", "directory of app spec files (required)")
	fs.StringVar(&o.state, "state", "/var/lib/paaskit/runner", "state directory: UID table, sockets, default data directories, logs")
	fs.StringVar(&o.uidRange, "uid-range", fmt.Sprintf("%d-%d", runner.DefaultUIDMin, runner.DefaultUIDMax), "UIDs (and GIDs) given to apps, MIN-MAX")
	fs.StringVar(&o.cgroupRoot, "cgroup-root", runner.DefaultCgroupRoot, "name of this runner's subtree in the cgroup hierarchies")
	fs.StringVar(&o.memory, "memory", "512M", "default memory limit of an instance")
	fs.IntVar(&o.processes, "processes", runner.DefaultLimits.Processes, "default process (task) limit of an instance")
	fs.IntVar(&o.openFiles, "open-files", runner.DefaultLimits.OpenFiles, "default open-file limit of an instance")
	fs.DurationVar(&o.idle, "idle-timeout", runner.DefaultIdleTimeout, "default idle time before an instance is stopped")
	fs.DurationVar(&o.startTimeout, "start-timeout", runner.DefaultStartTimeout, "default time an instance has to bind its socket")
	fs.DurationVar(&o.respTimeout, "response-timeout", runner.DefaultResponseTimeout, "how long the front waits for an app's answer (and between reads of it) before a 504")
	fs.DurationVar(&o.grace, "stop-grace", runner.DefaultStopGrace, "time between SIGTERM and SIGKILL when stopping an instance")
	fs.StringVar(&o.logDir, "log-dir", "", "directory of the apps' output files (default STATE/logs)")
	fs.BoolVar(&o.noIsolation, "no-isolation", false, "run apps as plain child processes (development only)")
	fs.StringVar(&o.dataRoot, "data-root", "", "directory beneath which every app's data directory must lie (default STATE/data)")
	fs.StringVar(&o.egressSubnet, "egress-subnet", runner.DefaultEgressSubnet, "node-local IPv4 subnet of egress apps' addresses on the runner's bridge")
	fs.IntVar(&o.netnsPool, "netns-pool", runner.DefaultNetnsPool, "network namespaces made ahead of starts (-1: each start makes its own)")
	fs.StringVar(&o.logFileBytes, "log-file-bytes", "64M", "an app's log file is rotated before it passes this size")
	fs.IntVar(&o.logFiles, "log-files", runner.DefaultLogFiles, "rotated log files kept per app")
	fs.IntVar(&o.eventLoops, "event-loops", 0, "event loops serving warm requests on a plain TCP front (0: the default, "+strconv.Itoa(runner.DefaultEventLoops)+"; -1: none, a goroutine per connection)")
	fs.IntVar(&o.maxConns, "max-conns", 0, "cap on the front's client connections held at once (over it: accepted and closed at once); 0 = half the open-file limit, -1 = none")
	fs.IntVar(&o.maxConnsPerIP, "max-conns-per-ip", 0, "cap on the front's connections from one address (IPv4, or IPv6 /64); 0 = none (the clients are the balancers)")
	fs.IntVar(&o.maxConnBuffer, "max-conn-buffer", 0, "request body bytes buffered per connection on the event loops (larger bodies stream); 0 = 16 KiB")
	fs.Int64Var(&o.maxBody, "max-body", 0, "request body limit in bytes (413 beyond, Connection: close); 0 = 100 MB, -1 = none")
	fs.StringVar(&o.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs or addresses whose PROXY protocol header (v1/v2) is believed and required; a PROXY header from anyone else is refused")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the daemon to this file until it stops (for go tool pprof)")
	lc := daemon.LogFlags(fs)
	po := ptyFlags(fs)
	ann := announceFlags(fs)
	fs.Usage = usage(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || o.specs == "" {
		fmt.Fprintln(stderr, "runnerd: --specs DIR is required and no arguments are taken; see --help")
		return 2
	}
	lc.Name = "runnerd"
	lc.Stderr = stderr
	log, closeLog, err := daemon.NewLogger(*lc)
	if err != nil {
		fmt.Fprintln(stderr, "runnerd:", err)
		return 2
	}
	defer closeLog()
	cfg, err := o.config()
	if err != nil {
		log.Error("runnerd: bad flags", "err", err)
		return 2
	}
	cfg.Logger = log
	if o.cpuProfile != "" {
		stop, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			log.Error("runnerd: cpu profile", "file", o.cpuProfile, "err", err)
			return 1
		}
		defer stop()
	}
	r, err := runner.New(cfg)
	if err != nil {
		log.Error("runnerd: cannot start", "err", err)
		return 1
	}
	d, err := daemon.New(daemon.Config{Name: "runnerd", Logger: log, StopTimeout: o.grace + 20*time.Second})
	if err != nil {
		log.Error("runnerd: cannot start", "err", err)
		return 1
	}
	front, err := net.Listen("tcp", o.listen)
	if err != nil {
		log.Error("runnerd: listen", "addr", o.listen, "err", err)
		return 1
	}
	// Loops stop in reverse order: admin, then the front, then remote
	// commands, then the runner (which stops every instance).
	must(d.Add("runner", r.Run))
	if err := po.add(d, r, o.state, log); err != nil {
		log.Error("runnerd: remote commands", "err", err)
		return 1
	}
	must(d.Add("front", func(ctx context.Context) error { return r.Serve(ctx, front) }))
	if o.admin != "" {
		al, err := net.Listen("tcp", o.admin)
		if err != nil {
			front.Close()
			log.Error("runnerd: listen", "addr", o.admin, "err", err)
			return 1
		}
		must(d.Add("admin", func(ctx context.Context) error { return serveAdmin(ctx, al, r, d) }))
	}
	if err := ann.add(d, front.Addr().String(), o.admin, log); err != nil {
		front.Close()
		log.Error("runnerd: cannot announce", "err", err)
		return 2
	}
	log.Info("runnerd: serving", "front", front.Addr().String(), "admin", o.admin, "specs", o.specs, "state", o.state,
		"isolation", r.Isolation())
	if err := d.Run(context.Background()); err != nil {
		log.Error("runnerd: stopped with error", "err", err)
		return 1
	}
	return 0
}

// startCPUProfile profiles the process into file until stop is called.
func startCPUProfile(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("start profile into %s: %w", file, err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

func must(err error) {
	if err != nil {
		panic(err) // only on duplicate loop names: a programming error
	}
}

func (o *options) config() (runner.Config, error) {
	c := runner.Config{
		StateDir:            o.state,
		SpecDir:             o.specs,
		CgroupRoot:          o.cgroupRoot,
		DefaultIdleTimeout:  o.idle,
		DefaultStartTimeout: o.startTimeout,
		StopGrace:           o.grace,
		ResponseTimeout:     o.respTimeout,
		EventLoops:          o.eventLoops,
		Isolation:           runner.Isolation{Off: o.noIsolation},
		DataRoot:            o.dataRoot,
		EgressSubnet:        o.egressSubnet,
		NetnsPool:           o.netnsPool,
		LogFiles:            o.logFiles,
		MaxConns:            o.maxConns,
		MaxConnsPerIP:       o.maxConnsPerIP,
		MaxConnBuffer:       o.maxConnBuffer,
		MaxBodyBytes:        o.maxBody,
	}
	tp, err := admit.ParsePrefixes(o.trustedProxies)
	if err != nil {
		return c, fmt.Errorf("--trusted-proxies: %w", err)
	}
	c.TrustedProxies = tp
	logBytes, err := runner.ParseBytes(o.logFileBytes)
	if err != nil {
		return c, fmt.Errorf("--log-file-bytes: %w", err)
	}
	c.LogFileBytes = logBytes
	lo, hi, ok := strings.Cut(o.uidRange, "-")
	var err1, err2 error
	c.UIDMin, err1 = strconv.Atoi(lo)
	c.UIDMax, err2 = strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil {
		return c, fmt.Errorf("--uid-range %q: want MIN-MAX", o.uidRange)
	}
	mem, err := runner.ParseBytes(o.memory)
	if err != nil {
		return c, fmt.Errorf("--memory: %w", err)
	}
	c.DefaultLimits = runner.Limits{Memory: runner.Bytes(mem), Processes: o.processes, OpenFiles: o.openFiles}
	if o.logDir != "" {
		s, err := runner.NewRotatingFileSink(o.logDir, c.LogFileBytes, c.LogFiles)
		if err != nil {
			return c, err
		}
		c.Sink = s
	}
	return c, nil
}

// serveAdmin serves GET /status (the runner) and GET /daemon (its loops).
func serveAdmin(ctx context.Context, l net.Listener, r *runner.Runner, d *daemon.Daemon) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r.Status())
	})
	mux.Handle("GET /daemon", d.StatusHandler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
