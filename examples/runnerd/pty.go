package main

// The remote command server: paasctl run/attach reach an app's sandbox
// through pty sessions over zmqloop. This file is the whole wiring of the
// pty package into runnerd; main.go calls ptyFlags and (*ptyOptions).add.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/pty"
	"github.com/paaskit/paaskit/runner"
	"github.com/paaskit/paaskit/zmqloop"
)

type ptyOptions struct {
	bind, streamBind, keys, logDir string
	grace                          time.Duration
	callers                        string
}

// ptyFlags registers the remote command server's flags on fs.
func ptyFlags(fs *flag.FlagSet) *ptyOptions {
	p := &ptyOptions{}
	fs.StringVar(&p.bind, "pty-bind", "", "control endpoint of the remote command server (paasctl run/attach), e.g. tcp://127.0.0.1:7301; empty disables it")
	fs.StringVar(&p.streamBind, "pty-stream-bind", pty.DefaultStreamBind, "where each attached session's output stream binds (a wildcard port picks a free one)")
	fs.StringVar(&p.keys, "pty-keys", "", "key file of the remote command server: one \"ID SECRET\" per line, the first signs; a caller is the key it signs with (required with --pty-bind)")
	fs.StringVar(&p.callers, "pty-callers", "", "comma-separated key ids allowed to start commands (default: every key in --pty-keys but the first)")
	fs.DurationVar(&p.grace, "pty-grace", pty.DefaultGrace, "how long a command whose client vanished keeps running for a reattach before SIGHUP")
	fs.StringVar(&p.logDir, "pty-log-dir", "", "directory of detached commands' output, one file per session (default STATE/commands)")
	return p
}

// add adds the server as a main loop of d, running commands in r's
// sandboxes and keeping each app alive while a command of it runs.
func (p *ptyOptions) add(d *daemon.Daemon, r *runner.Runner, state string, log *slog.Logger) error {
	if p.bind == "" {
		return nil
	}
	ring, err := loadKeyRing(p.keys)
	if err != nil {
		return fmt.Errorf("--pty-keys: %w", err)
	}
	codec, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	if err != nil {
		return err
	}
	allowed := map[string]bool{}
	if p.callers != "" {
		for _, c := range strings.Split(p.callers, ",") {
			allowed[strings.TrimSpace(c)] = true
		}
	} else {
		for _, id := range ring.KeyIDs() {
			allowed[id] = id != ring.SigningKeyID()
		}
	}
	logDir := p.logDir
	if logDir == "" {
		logDir = filepath.Join(state, "commands")
	}
	srv, err := pty.NewServer(pty.ServerConfig{
		Bind: []string{p.bind}, StreamBind: p.streamBind, Codec: codec, Grace: p.grace, Logger: log,
		Authorize: func(caller string, req pty.StartRequest) error {
			if !allowed[caller] {
				return errors.New("key not allowed to run commands")
			}
			if req.App == "" {
				return errors.New("no app named")
			}
			return nil
		},
		Command: func(_ context.Context, _ string, req pty.StartRequest) (*exec.Cmd, error) {
			return r.Command(req.App, req.Argv)
		},
		KeepAlive: func(_ string, req pty.StartRequest) (func(), error) { return r.Attach(req.App) },
		Log: func(info pty.SessionInfo) (io.WriteCloser, error) {
			if err := os.MkdirAll(logDir, 0o750); err != nil {
				return nil, err
			}
			return os.OpenFile(filepath.Join(logDir, info.App+"-"+info.ID+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		},
	})
	if err != nil {
		return err
	}
	return d.Add("pty", srv.Run)
}

// loadKeyRing reads the key file (zmqloop.ReadKeyFile's format).
func loadKeyRing(path string) (*zmqloop.KeyRing, error) {
	if path == "" {
		return nil, errors.New("a key file is required")
	}
	return zmqloop.ReadKeyFile(path)
}
