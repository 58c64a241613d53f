package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/nexus"
	"github.com/paaskit/paaskit/zmqloop"
)

// runnerd --nexus announces the node (kind runner, its front as "http")
// to every resolver, and says goodbye on SIGTERM: the node leaves at once,
// long before the resolvers' grace period.
func TestRunnerdAnnouncesToNexus(t *testing.T) {
	const secret = "runnerd-nexus-test-secret-0123456"
	ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte(secret)})
	require.NoError(t, err)
	codec, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	require.NoError(t, err)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var resolvers []string
	for i := 0; i < 2; i++ {
		r, err := nexus.NewResolver(nexus.ResolverConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: codec,
			SuspectAfter: time.Hour, Grace: time.Hour, Logger: quiet})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
		<-r.Ready()
		resolvers = append(resolvers, r.Endpoints()[0])
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "runnerd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, string(out))
	specs := filepath.Join(dir, "specs")
	require.NoError(t, os.Mkdir(specs, 0o755))
	front := freeAddr(t)
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-listen", front, "-admin", "", "-specs", specs, "-state", filepath.Join(dir, "state"),
		"-no-isolation", "-nexus", resolvers[0]+","+resolvers[1], "-node-id", "node-7", "-nexus-interval", "100ms")
	cmd.Env = append(os.Environ(), "NEXUS_SECRET="+secret)
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()

	for _, ep := range resolvers {
		c, err := nexus.NewClient(nexus.ClientConfig{Resolvers: []string{ep}, Codec: codec, Logger: quiet})
		require.NoError(t, err)
		defer c.Close()
		require.Eventually(t, func() bool {
			e, err := c.Get(context.Background(), "runner", "node-7")
			return err == nil && e.Endpoints["http"] == front
		}, 20*time.Second, 20*time.Millisecond, "runnerd announced to %s; stderr:\n%s", ep, &stderr)
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), stderr.String())
	c, err := nexus.NewClient(nexus.ClientConfig{Resolvers: resolvers, Codec: codec, Logger: quiet})
	require.NoError(t, err)
	defer c.Close()
	es, err := c.Lookup(context.Background(), "runner")
	require.NoError(t, err)
	require.Empty(t, es, "the goodbye took the node out at once")
}
