package pty

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/paaskit/paaskit/zmqloop"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(rawHelperEnv) != "" {
		os.Exit(rawHelper())
	}
	if os.Getenv(wrapperEnv) != "" {
		os.Exit(wrapperMain())
	}
	goleak.VerifyTestMain(m)
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// Callers are told apart by the key that signs their requests; the
// server signs its replies and streams with a key of its own, which every
// client's ring holds to verify them.

// codecFor returns a codec whose ring holds every key of keys, signing with
// the first.
func codecFor(t testing.TB, signer string, keys ...string) *zmqloop.Codec {
	t.Helper()
	var ks []zmqloop.Key
	for _, id := range append([]string{signer}, keys...) {
		ks = append(ks, zmqloop.Key{ID: id, Secret: []byte("secret-of-" + id + "-0123456789abcdef")})
	}
	ring, err := zmqloop.NewKeyRing(ks...)
	if err != nil {
		t.Fatal(err)
	}
	c, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// plainCommand is a Command hook that runs argv as is.
func plainCommand(_ context.Context, _ string, req StartRequest) (*exec.Cmd, error) {
	return exec.Command(req.Argv[0], req.Argv[1:]...), nil
}

// startServer runs a server until the test ends and returns its control
// endpoint.
func startServer(t testing.TB, cfg ServerConfig) (*Server, string) {
	t.Helper()
	if cfg.Bind == nil {
		cfg.Bind = []string{"tcp://127.0.0.1:*"}
	}
	if cfg.Codec == nil {
		cfg.Codec = codecFor(t, "server", "alice", "bob")
	}
	if cfg.Command == nil {
		cfg.Command = plainCommand
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLog
	}
	if cfg.KillAfter == 0 {
		cfg.KillAfter = 2 * time.Second
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-errc:
		cancel()
		t.Fatalf("server stopped before ready: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("server Run: %v", err)
		}
	})
	return s, s.Endpoints()[0]
}

func clientFor(t testing.TB, endpoint, caller string) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{Endpoint: endpoint, Codec: codecFor(t, caller, "server"), Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
