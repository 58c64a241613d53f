// Command uploadd is paaskit's upload endpoint as a daemon: an SSH server
// that deploys apps on `git push` (or `hg push`), streams the build to the
// pushing terminal, and runs the result on an embedded runner node, which
// also serves `ssh ... run APP -- CMD` in the app's sandbox and rsync and
// scp into its data directory.
//
//	uploadd --state /var/lib/paaskit/upload --keys /etc/paaskit/upload-keys
//	git remote add paas ssh://git@HOST:2222/blog.git && git push paas main
//	ssh -p 2222 git@HOST run blog -- /app/venv/bin/python -m blog.manage migrate
//	ssh -t -p 2222 git@HOST run blog -- /usr/bin/python3 -i
//	rsync -a -e 'ssh -p 2222' media/ git@HOST:blog/media/
//	ssh -p 2222 git@HOST rollback blog
//	curl -H 'Host: blog.localhost' http://127.0.0.1:8080/
//
// The image's Procfile names what runs: its `web:` line is the app's
// command (split on blanks, no shell), bound to the unix socket
// $PAASKIT_SOCKET (/run/paaskit/app.sock). See --help for the key file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/examples/internal/imagemount"
	"github.com/paaskit/paaskit/runner"
	"github.com/paaskit/paaskit/upload"
	"github.com/paaskit/paaskit/upload/pyinstall"
)

func main() {
	// The runner builds each sandbox by re-executing this binary.
	runner.Init()
	os.Exit(run(os.Args[1:], os.Stderr))
}

const keyFormat = `One key a line, in the authorized_keys format, with its owner and rights
in the options (apps comma-separated, "*" for all):

  user="alice",deploy="blog,shop",run="blog",data="blog" ssh-ed25519 AAAA... alice@laptop
  user="ci",deploy="*" ssh-ed25519 AAAA... ci

deploy: git push, hg push, deploy APP < archive, rollback, releases.
run: run APP -- CMD.   data: rsync and scp (scp -O) into the data directory.
The file is re-read when it changes; a revoked key stops working at its next command.
`

type options struct {
	listen, front, state, keys, indexURL, branch, domain string
	keep                                                 int
	maxPush, maxArchive                                  int64
	noIsolation                                          bool
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("uploadd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.listen, "listen", "127.0.0.1:2222", "address of the SSH endpoint")
	fs.StringVar(&o.front, "front", "127.0.0.1:8080", "address of the runner node's HTTP front (Host APP.DOMAIN reaches APP)")
	fs.StringVar(&o.state, "state", "/var/lib/paaskit/upload", "state directory: host key, repositories, images, wheel cache, runner state")
	fs.StringVar(&o.keys, "keys", "", "key file (default STATE/keys; see below)")
	fs.StringVar(&o.indexURL, "index-url", "https://pypi.org/simple/", "Python package index for requirements.txt")
	fs.StringVar(&o.branch, "branch", "", "branch that deploys (default main or master; hg: default)")
	fs.StringVar(&o.domain, "domain", "localhost", "apps are served as APP.DOMAIN")
	fs.IntVar(&o.keep, "keep", 5, "images kept per app for rollback")
	fs.Int64Var(&o.maxPush, "max-push", 256<<20, "largest git or hg push accepted, in bytes")
	fs.Int64Var(&o.maxArchive, "max-archive", 256<<20, "largest archive accepted by `deploy APP`, in bytes")
	fs.BoolVar(&o.noIsolation, "no-isolation", false, "run apps and commands as plain child processes (development only)")
	lc := daemon.LogFlags(fs)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprint(w, "Usage: uploadd [flags]\n\n"+
			"uploadd is an SSH endpoint for deploying apps: `git push` (or `hg push`) of\n"+
			"an app builds its image (requirements.txt installed into /app/venv, packed\n"+
			"as SquashFS), streams the build to the pushing terminal and makes it live on\n"+
			"the embedded runner node; a failed build exits non-zero and leaves the\n"+
			"running version alone. No shell is ever run; the commands are:\n\n")
		fmt.Fprint(w, indent(upload.Usage()))
		fmt.Fprint(w, "\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(w, "\nKey file:\n\n%s", indent(keyFormat))
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "uploadd: no arguments are taken; see --help")
		return 2
	}
	if o.keys == "" {
		o.keys = filepath.Join(o.state, "keys")
	}
	lc.Name = "uploadd"
	lc.Stderr = stderr
	log, closeLog, err := daemon.NewLogger(*lc)
	if err != nil {
		fmt.Fprintln(stderr, "uploadd:", err)
		return 2
	}
	defer closeLog()
	keys, err := upload.OpenFileKeyStore(o.keys)
	if err != nil {
		log.Error("uploadd: key file (see --help for its format)", "err", err)
		return 2
	}
	r, err := runner.New(runner.Config{StateDir: filepath.Join(o.state, "runner"), Isolation: runner.Isolation{Off: o.noIsolation}, Logger: log})
	if err != nil {
		log.Error("uploadd: runner", "err", err)
		return 1
	}
	act := &activator{runner: r, mounts: imagemount.New(filepath.Join(o.state, "mnt")), domain: o.domain}
	srv, err := upload.NewServer(upload.ServerConfig{
		Addr:           o.listen,
		HostKeyFile:    filepath.Join(o.state, "host_ed25519_key"),
		Keys:           keys,
		RepoDir:        filepath.Join(o.state, "repos"),
		StoreDir:       filepath.Join(o.state, "images"),
		Keep:           o.keep,
		Build:          upload.BuilderConfig{WorkDir: filepath.Join(o.state, "work")},
		Installer:      &pyinstall.Config{IndexURL: o.indexURL, CacheDir: filepath.Join(o.state, "wheels")},
		Activate:       act.activate,
		Command:        r.Command,
		MaxPushSize:    o.maxPush,
		MaxArchiveSize: o.maxArchive,
		Branch:         o.branch,
		Logger:         log,
	})
	if err != nil {
		log.Error("uploadd: cannot start", "err", err)
		return 1
	}
	if err := os.MkdirAll(filepath.Join(o.state, "work"), 0o700); err != nil {
		log.Error("uploadd: state", "err", err)
		return 1
	}
	front, err := net.Listen("tcp", o.front)
	if err != nil {
		log.Error("uploadd: listen", "addr", o.front, "err", err)
		return 1
	}
	d, err := daemon.New(daemon.Config{Name: "uploadd", Logger: log, StopTimeout: 30 * time.Second})
	if err != nil {
		log.Error("uploadd: cannot start", "err", err)
		return 1
	}
	must(d.Add("runner", r.Run))
	must(d.Add("front", func(ctx context.Context) error { return r.Serve(ctx, front) }))
	must(d.Add("ssh", srv.Run))
	must(d.Add("mounts", func(ctx context.Context) error { <-ctx.Done(); act.mounts.UnmountAll(); return nil }))
	log.Info("uploadd: serving", "ssh", srv.Addr().String(), "front", front.Addr().String(), "state", o.state)
	if err := d.Run(context.Background()); err != nil {
		log.Error("uploadd: stopped", "err", err)
		return 1
	}
	return 0
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}

// activator makes an image live on the embedded runner: it mounts the
// image and puts the app's spec with the mount as its image (the runner
// restarts a running instance gracefully), keeping the previous mount
// while instances of it may still drain.
type activator struct {
	runner *runner.Runner
	mounts *imagemount.Set
	domain string
}

func (a *activator) activate(ctx context.Context, app string, img *upload.Image) error {
	m, fresh, err := a.mounts.Mount(ctx, app, img)
	if err != nil {
		return err
	}
	spec, ok := a.runner.App(app)
	if !ok {
		spec = runner.Spec{Name: app, Hosts: []string{app + "." + a.domain}}
	}
	spec.Image = m.Dir
	if cmd, err := imagemount.ProcfileWeb(filepath.Join(m.Dir, "Procfile")); err == nil {
		spec.Command = cmd
	} else if len(spec.Command) == 0 {
		if fresh {
			_ = m.Unmount(ctx)
		}
		return fmt.Errorf("the image has no Procfile with a web: line (%v)", err)
	}
	if err := a.runner.Put(spec); err != nil {
		if fresh {
			_ = m.Unmount(ctx)
		}
		return err
	}
	a.mounts.Keep(ctx, app, m)
	return nil
}
