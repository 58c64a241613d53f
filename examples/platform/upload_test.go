package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/examples/internal/buildsandbox"
	"github.com/paaskit/paaskit/runner"
	"github.com/paaskit/paaskit/upload"
	"github.com/paaskit/paaskit/upload/pyinstall"
)

// TestPushedAppsBuildInTheRunnersSandbox checks the wiring: the installer
// the upload endpoint gets has the build sandbox of the first node, whose
// app reaches the index's host:port only (or nothing when the index's name
// does not resolve), and a push cannot take the builds' app name.
func TestPushedAppsBuildInTheRunnersSandbox(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the platform's sandboxes need root: run the tests as root, as make test does")
	}
	state, err := os.MkdirTemp("", "pbs")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(state, 0o711))
	t.Cleanup(func() { os.RemoveAll(state) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := runner.New(runner.Config{StateDir: state, CgroupRoot: fmt.Sprintf("paaskit-platform-test-%d", os.Getpid()),
		EgressSubnet: fmt.Sprintf("10.232.%d.0/24", os.Getpid()%200+20), Logger: log})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-r.Ready()
	defer func() { cancel(); require.NoError(t, <-done) }()
	p := &platform{runners: []*runner.Runner{r}, ids: []string{"node-a"}}

	for index, allow := range map[string][]string{
		"http://127.0.0.1:3141/simple/":         {"127.0.0.1:3141"},
		"https://no-such-index.invalid/simple/": nil,
	} {
		cfg := &pyinstall.Config{IndexURL: index}
		require.NoError(t, p.sandboxBuilds(cfg, filepath.Join(state, "builds"), log))
		require.NotNil(t, cfg.Sandbox, index)
		require.NotNil(t, cfg.BuildUser, index)
		uid, _, err := r.AppUser(buildsandbox.DefaultApp)
		require.NoError(t, err)
		require.Equal(t, uid, cfg.BuildUser.UID)
		require.NotZero(t, uid)
		spec, ok := r.App(buildsandbox.DefaultApp)
		require.True(t, ok)
		require.Equal(t, allow, spec.Network.Allow, index)
		if allow == nil {
			require.Equal(t, runner.PolicyNone, spec.Network.Policy)
		} else {
			require.Equal(t, runner.PolicyAllowOnly, spec.Network.Policy)
		}
	}
	act := &platformActivator{p: p}
	err = act.activate(context.Background(), buildsandbox.DefaultApp, &upload.Image{})
	require.ErrorContains(t, err, "is the platform's own")
}
