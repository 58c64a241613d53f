// Command platform is paaskit's all-in-one reference platform on loopback:
// a balancer that hashes each site's Host over two runner nodes, each node
// starting the site's app in a sandbox on the first request and reaping it
// when idle, and an admin page that shows it all. It needs no PostgreSQL or
// Redis: everything runs on embedded defaults in one process, and the
// sample apps (Python WSGI apps served by gunicorn) are built in.
//
//	platform [flags]
//	curl http://hello.localhost:8080/      # curl resolves *.localhost to loopback
//	curl http://notes.localhost:8080/
//	curl http://sandbox.localhost:8080/
//	curl http://127.0.0.1:8089/            # admin: loops, nodes, apps, cold starts
//
// Run it as root for the full sandbox (own UID, namespaces, read-only root,
// cgroup limits); otherwise what is missing is logged and the apps run as
// plain processes. SIGTERM or Ctrl-C stops it: the admin page, the
// balancer, the fronts, then every app, in that order.
package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/paaskit/paaskit/balancer"
	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/runner"
)

//go:embed apps
var sampleApps embed.FS

// sites are the sample apps and their host names.
var sites = []struct{ app, host string }{
	{"hello", "hello.localhost"},
	{"notes", "notes.localhost"},
	{"sandbox", "sandbox.localhost"},
}

func main() {
	// The runner builds each sandbox by re-executing this binary.
	runner.Init()
	os.Exit(run(os.Args[1:], os.Stderr))
}

type options struct {
	listen, admin, state   string
	ssh, sshKeys, indexURL string // the upload endpoint (upload.go)
	nodes                  int
	idle                   time.Duration
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("platform", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address of the balancer, the platform's front door")
	fs.StringVar(&o.admin, "admin", "127.0.0.1:8089", "address of the admin page")
	fs.StringVar(&o.state, "state", filepath.Join(os.TempDir(), "paaskit-platform"), "state directory: images, specs, node state, logs")
	fs.IntVar(&o.nodes, "nodes", 2, "runner nodes behind the balancer (1-9)")
	fs.DurationVar(&o.idle, "idle-timeout", 2*time.Minute, "an app with no request for this long is stopped")
	fs.StringVar(&o.ssh, "ssh", "", "address of the SSH upload endpoint (git push deploys APP as APP.localhost); empty: none")
	fs.StringVar(&o.sshKeys, "ssh-keys", "", "upload key file (default STATE/upload/keys; format: uploadd --help)")
	fs.StringVar(&o.indexURL, "index-url", "https://pypi.org/simple/", "Python package index for pushed apps' requirements.txt")
	lc := daemon.LogFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: platform [flags]\n\n"+
			"paaskit's reference platform on loopback: a balancer hashing each site's Host\n"+
			"over runner nodes, which start the site's app in a sandbox on its first\n"+
			"request and stop it when idle; sample apps built in. Sites:\n")
		for _, s := range sites {
			fmt.Fprintf(fs.Output(), "  http://%s:8080/\n", s.host)
		}
		fmt.Fprint(fs.Output(), "\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if o.nodes < 1 || o.nodes > 9 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "platform: -nodes must be 1-9 and no arguments are taken; see -help")
		return 2
	}
	lc.Name, lc.Stderr = "platform", stderr
	log, closeLog, err := daemon.NewLogger(*lc)
	if err != nil {
		fmt.Fprintln(stderr, "platform:", err)
		return 2
	}
	defer closeLog()
	p, err := assemble(o, log)
	if err != nil {
		log.Error("platform: cannot start", "err", err)
		return 1
	}
	if err := p.d.Run(context.Background()); err != nil {
		return 1
	}
	return 0
}

type platform struct {
	d       *daemon.Daemon
	proxy   *balancer.Proxy
	runners []*runner.Runner
	ids     []string
	stats   *platformStats
}

// assemble lays out the state directory and wires the daemons' loops.
func assemble(o options, log *slog.Logger) (*platform, error) {
	images := filepath.Join(o.state, "images")
	specs := filepath.Join(o.state, "specs")
	if err := installApps(images, specs, o.idle); err != nil {
		return nil, err
	}
	p := &platform{}
	var err error
	p.d, err = daemon.New(daemon.Config{Name: "platform", Logger: log, StopTimeout: 40 * time.Second})
	if err != nil {
		return nil, err
	}
	var listeners []net.Listener
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	listen := func(addr string) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		listeners = append(listeners, l)
		return l, nil
	}
	st, err := newPlatformStats(o.state, log)
	if err != nil {
		return nil, err
	}
	p.stats = st
	var nodes []balancer.Node
	for i := range o.nodes {
		id := fmt.Sprintf("node-%c", 'a'+i)
		sink, err := st.sink(id)
		if err != nil {
			return nil, err
		}
		r, err := runner.New(runner.Config{
			StateDir:   filepath.Join(o.state, id),
			SpecDir:    specs,
			UIDMin:     400000 + 1000*i,
			UIDMax:     400999 + 1000*i,
			CgroupRoot: "paaskit-platform-" + id,
			// Each node in this one machine needs its own bridge subnet
			// for egress apps: two runners on one subnet are refused.
			EgressSubnet:       fmt.Sprintf("10.%d.0.0/16", 237+i),
			DefaultIdleTimeout: o.idle,
			Sink:               sink,
			Logger:             log.With("node", id),
		})
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("runner %s: %w", id, err)
		}
		front, err := listen("127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		p.runners = append(p.runners, r)
		p.ids = append(p.ids, id)
		nodes = append(nodes, balancer.Node{ID: id, Addr: front.Addr().String()})
		if err := p.d.Add(id, r.Run); err != nil {
			return nil, err
		}
		if err := p.d.Add(id+"-front", func(ctx context.Context) error { return r.Serve(ctx, front) }); err != nil {
			return nil, err
		}
	}
	if err := st.add(p.d, p.ids, p.runners); err != nil {
		return nil, err
	}
	table, err := balancer.NewTable(balancer.TableConfig{Nodes: nodes, Sites: []balancer.Site{{Host: "*"}}})
	if err != nil {
		closeAll()
		return nil, err
	}
	front, err := listen(o.listen)
	if err != nil {
		return nil, err
	}
	p.proxy, err = balancer.New(balancer.Config{Listener: front, Table: table, Logger: log.With("component", "balancer")})
	if err != nil {
		closeAll()
		return nil, err
	}
	if err := p.d.Add("balancer", p.proxy.Run); err != nil {
		return nil, err
	}
	if err := p.addUpload(o, log); err != nil {
		closeAll()
		return nil, fmt.Errorf("upload endpoint: %w", err)
	}
	admin, err := listen(o.admin)
	if err != nil {
		return nil, err
	}
	if err := p.d.Add("admin", func(ctx context.Context) error { return p.serveAdmin(ctx, admin) }); err != nil {
		return nil, err
	}
	log.Info("platform: ready to serve",
		"try", fmt.Sprintf("curl http://%s:%d/", sites[0].host, front.Addr().(*net.TCPAddr).Port),
		"admin", "http://"+admin.Addr().String()+"/", "balancer", front.Addr().String(), "state", o.state)
	for _, s := range sites {
		n, _ := table.Pick(s.host)
		log.Info("platform: site", "host", s.host, "node", n.ID)
	}
	return p, nil
}

// installApps writes the built-in sample apps as read-only images and
// their spec files, replacing what an earlier run left.
func installApps(images, specs string, idle time.Duration) error {
	if err := os.MkdirAll(specs, 0o755); err != nil {
		return err
	}
	for _, s := range sites {
		dir := filepath.Join(images, s.app)
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		src, err := fs.Sub(sampleApps, "apps/"+s.app)
		if err != nil {
			return err
		}
		if err := os.CopyFS(dir, src); err != nil {
			return fmt.Errorf("install sample app %s: %w", s.app, err)
		}
		spec := runner.Spec{
			Name:  s.app,
			Hosts: []string{s.host},
			Image: dir,
			// gunicorn binds the socket the runner names; the shell
			// expands the variable, which works with and without the
			// sandbox.
			Command:     []string{"/bin/sh", "-c", "exec /usr/bin/gunicorn --workers 2 --bind unix:$PAASKIT_SOCKET app:app"},
			IdleTimeout: runner.Duration(idle),
		}
		b, err := json.MarshalIndent(spec, "", "  ")
		if err != nil {
			return err
		}
		tmp := filepath.Join(specs, "."+s.app+".json.tmp")
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(specs, s.app+".json")); err != nil {
			return err
		}
	}
	return nil
}

// serveAdmin serves the admin page: an index, the daemon's loops, the
// balancer's nodes and each node's apps.
func (p *platform) serveAdmin(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /loops", p.d.StatusHandler())
	mux.HandleFunc("GET /nodes", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, p.proxy.Nodes()) })
	mux.HandleFunc("GET /apps", func(w http.ResponseWriter, r *http.Request) {
		out := map[string]runner.Status{}
		for i, rn := range p.runners {
			out[p.ids[i]] = rn.Status()
		}
		writeJSON(w, out)
	})
	mux.Handle("/stats/", p.stats.handler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "paaskit platform")
		fmt.Fprintln(w, "\nSites (the balancer hashes Host to a node; the node starts the app on the first request):")
		for _, s := range sites {
			n, err := p.proxy.Table().Pick(s.host)
			if err == nil {
				fmt.Fprintf(w, "  http://%s:%d/  ->  %s\n", s.host, p.proxy.Addr().(*net.TCPAddr).Port, n.ID)
			}
		}
		fmt.Fprintln(w, "\nAdmin: /loops (supervised loops), /nodes (balancer's view), /apps (instances, starts, CPU, memory)")
		fmt.Fprintln(w, "Stats: /stats/logs/APP?n=100 (&follow=1), /stats/metrics (Prometheus), /stats/status")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(c)
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
