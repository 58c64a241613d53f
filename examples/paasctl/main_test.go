package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paaskit/paaskit/pty"
	"github.com/paaskit/paaskit/zmqloop"
)

// TestRunPrintsOutputAndExitsWithTheRemoteStatus runs paasctl against a
// real session server (commands run as plain processes) with a pipe for
// stdin, as in a script.
func TestRunPrintsOutputAndExitsWithTheRemoteStatus(t *testing.T) {
	dir := t.TempDir()
	serverKeys := filepath.Join(dir, "server.keys")
	os.WriteFile(serverKeys, []byte("runnerd runnerd-secret-0123456789abcdef\nops ops-secret-0123456789abcdef0123\n"), 0o600)
	clientKeys := filepath.Join(dir, "ops.keys")
	os.WriteFile(clientKeys, []byte("# mine first\nops ops-secret-0123456789abcdef0123\nrunnerd runnerd-secret-0123456789abcdef\n"), 0o600)
	ring, err := loadKeyRing(serverKeys)
	if err != nil {
		t.Fatal(err)
	}
	codec, _ := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	var apps []string
	srv, err := pty.NewServer(pty.ServerConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: codec,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Command: func(_ context.Context, caller string, req pty.StartRequest) (*exec.Cmd, error) {
			apps = append(apps, caller+"/"+req.App)
			return exec.Command(req.Argv[0], req.Argv[1:]...), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-srv.Ready()
	ep := srv.Endpoints()[0]

	stdin, w, _ := os.Pipe()
	defer stdin.Close()
	go func() { w.Write([]byte("typed\n")); w.Close() }()
	var out, errb bytes.Buffer
	code := run(ctx, []string{"-endpoint", ep, "-keys", clientKeys, "run", "blog", "--", "/bin/sh", "-c", "read x; echo got $x; exit 3"}, stdin, &out, &errb)
	if code != 3 || !strings.Contains(out.String(), "got typed") {
		t.Fatalf("exit %d, output %q, stderr %q; want 3 and \"got typed\"", code, out.String(), errb.String())
	}
	if len(apps) != 1 || apps[0] != "ops/blog" {
		t.Fatalf("commands started: %v, want [ops/blog]", apps)
	}
	out.Reset()
	if code := run(ctx, []string{"-endpoint", ep, "-keys", clientKeys, "run", "-d", "blog", "--", "true"}, stdin, &out, &errb); code != 0 || len(strings.TrimSpace(out.String())) != 32 {
		t.Fatalf("run -d: exit %d, output %q", code, out.String())
	}
	id := strings.TrimSpace(out.String())
	out.Reset()
	if code := run(ctx, []string{"-endpoint", ep, "-keys", clientKeys, "status", id}, stdin, &out, &errb); code != 0 || !strings.Contains(out.String(), id) {
		t.Fatalf("status: exit %d, output %q", code, out.String())
	}
	if code := run(ctx, []string{"-endpoint", ep, "-keys", clientKeys, "status", "nope"}, stdin, &out, &errb); code != 1 {
		t.Fatalf("status of a missing session: exit %d", code)
	}
	if code := run(ctx, []string{"-keys", filepath.Join(dir, "missing"), "list"}, stdin, &out, &errb); code != 2 {
		t.Fatalf("missing key file: exit %d", code)
	}
}
