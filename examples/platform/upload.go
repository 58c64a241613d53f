package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/paaskit/paaskit/examples/internal/buildsandbox"
	"github.com/paaskit/paaskit/examples/internal/imagemount"
	"github.com/paaskit/paaskit/runner"
	"github.com/paaskit/paaskit/upload"
	"github.com/paaskit/paaskit/upload/pyinstall"
)

// addUpload wires the SSH upload endpoint into the platform (with -ssh):
// a push's image is mounted once and its spec written to the spec
// directory every node watches; `run`, rsync and scp go to the sandbox of
// the node the balancer picks for the app's host (runner.Command).
func (p *platform) addUpload(o options, log *slog.Logger) error {
	if o.ssh == "" {
		return nil
	}
	keysFile := o.sshKeys
	if keysFile == "" {
		keysFile = filepath.Join(o.state, "upload", "keys")
	}
	keys, err := upload.OpenFileKeyStore(keysFile)
	if err != nil {
		return fmt.Errorf("-ssh-keys: %w (see examples/uploadd --help for the format)", err)
	}
	state := filepath.Join(o.state, "upload")
	if err := os.MkdirAll(filepath.Join(state, "work"), 0o700); err != nil {
		return err
	}
	act := &platformActivator{p: p, specs: filepath.Join(o.state, "specs"), mounts: imagemount.New(filepath.Join(state, "mnt"))}
	installer := &pyinstall.Config{IndexURL: o.indexURL, CacheDir: filepath.Join(state, "wheels")}
	if err := p.sandboxBuilds(installer, filepath.Join(state, "builds"), log); err != nil {
		return err
	}
	srv, err := upload.NewServer(upload.ServerConfig{
		Addr:        o.ssh,
		HostKeyFile: filepath.Join(state, "host_ed25519_key"),
		Keys:        keys,
		RepoDir:     filepath.Join(state, "repos"),
		StoreDir:    filepath.Join(state, "images"),
		Build:       upload.BuilderConfig{WorkDir: filepath.Join(state, "work")},
		Installer:   installer,
		Activate:    act.activate,
		Command:     act.command,
		Logger:      log.With("component", "upload"),
	})
	if err != nil {
		return err
	}
	// Pushed apps come back as they were: their live images are mounted
	// again and their specs rewritten.
	apps, err := srv.Releases().Apps()
	if err != nil {
		return err
	}
	for _, app := range apps {
		rel, ok, err := srv.Releases().Live(app)
		if err == nil && ok {
			err = act.activate(context.Background(), app, &rel.Image)
		}
		if err != nil {
			log.Warn("platform: pushed app not restored", "app", app, "err", err)
		}
	}
	log.Info("platform: upload endpoint", "ssh", srv.Addr().String(), "keys", keysFile)
	if err := p.d.Add("upload", srv.Run); err != nil {
		return err
	}
	return p.d.Add("upload-mounts", func(ctx context.Context) error { <-ctx.Done(); act.mounts.UnmountAll(); return nil })
}

// sandboxBuilds makes the installer's sdist builds run in a sandbox of the
// first node's runner (buildsandbox): their own UID, a read-only system,
// the install's build directory, a bounded cgroup, and a network that
// reaches the package index only. A runner without the isolation that
// needs leaves builds as plain processes, which pyinstall logs.
func (p *platform) sandboxBuilds(cfg *pyinstall.Config, state string, log *slog.Logger) error {
	r := p.runners[0]
	iso := r.Isolation()
	if !iso.User || !iso.SandboxRoot || !iso.Network {
		log.Warn("platform: builds of pushed apps' sdists are not sandboxed: the runner lacks isolation (run as root)", "missing", iso.Missing)
		return nil
	}
	bc := buildsandbox.Config{Runner: r, StateDir: state}
	if iso.Egress {
		allow, err := buildsandbox.AllowIndex(cfg.IndexURL)
		if err != nil {
			return err
		}
		bc.Allow = []string{allow}
	}
	sb, err := buildsandbox.New(bc)
	if err != nil && len(bc.Allow) > 0 {
		// An index whose name does not resolve now (no network):
		// builds reach nothing, which is narrower, not wider.
		log.Warn("platform: build sandbox without network", "index", cfg.IndexURL, "err", err)
		bc.Allow = nil
		sb, err = buildsandbox.New(bc)
	}
	if err != nil {
		return err
	}
	sb.Apply(cfg)
	log.Info("platform: sdist builds run in the runner's sandbox", "node", p.ids[0], "app", buildsandbox.DefaultApp, "uid", sb.User().UID, "network", bc.Allow)
	return nil
}

type platformActivator struct {
	p      *platform
	specs  string
	mounts *imagemount.Set
}

func (a *platformActivator) host(app string) string { return app + ".localhost" }

// command runs argv in app's sandbox on the node its host hashes to.
func (a *platformActivator) command(app string, argv []string) (*exec.Cmd, error) {
	n, err := a.p.proxy.Table().Pick(a.host(app))
	if err != nil {
		return nil, err
	}
	for i, id := range a.p.ids {
		if id == n.ID {
			return a.p.runners[i].Command(app, argv)
		}
	}
	return nil, fmt.Errorf("no runner node %s", n.ID)
}

func (a *platformActivator) activate(ctx context.Context, app string, img *upload.Image) error {
	if app == buildsandbox.DefaultApp {
		return fmt.Errorf("app name %q is the platform's own (its sdist builds)", app)
	}
	m, fresh, err := a.mounts.Mount(ctx, app, img)
	if err != nil {
		return err
	}
	argv, err := imagemount.ProcfileWeb(filepath.Join(m.Dir, "Procfile"))
	if err != nil {
		if fresh {
			_ = m.Unmount(ctx)
		}
		return fmt.Errorf("the image has no Procfile with a web: line: %w", err)
	}
	spec := runner.Spec{Name: app, Hosts: []string{a.host(app)}, Image: m.Dir, Command: argv}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err == nil {
		tmp := filepath.Join(a.specs, "."+app+".json.tmp")
		if err = os.WriteFile(tmp, b, 0o644); err == nil {
			err = os.Rename(tmp, filepath.Join(a.specs, app+".json"))
		}
	}
	if err != nil {
		if fresh {
			_ = m.Unmount(ctx)
		}
		return err
	}
	a.mounts.Keep(ctx, app, m)
	return nil
}
