package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/paaskit/paaskit/internal/testserver"
	"github.com/paaskit/paaskit/runner"
	"github.com/paaskit/paaskit/stats"
	"github.com/paaskit/paaskit/zmqloop"
	"github.com/stretchr/testify/require"
)

// TestRequestsReachHourlyUsage: requests through a runner's front to an
// app show, through the platform's usage wiring (observeUsage), the
// emitter, the collector and the PostgreSQL sink, as that many requests
// in the app's hourly roll-up, each report adding only what is new.
func TestRequestsReachHourlyUsage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the runner's sandboxes need root: run the tests as root, as make test does")
	}
	image := t.TempDir()
	require.NoError(t, os.Chmod(image, 0o755))
	build := exec.Command("go", "build", "-o", filepath.Join(image, "testapp"), "github.com/paaskit/paaskit/internal/testapp")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "build the test app: %s", out)

	// The runner and its front.
	state := t.TempDir()
	require.NoError(t, os.Chmod(state, 0o711))
	r, err := runner.New(runner.Config{StateDir: state, CgroupRoot: fmt.Sprintf("paaskit-usage-test-%d", os.Getpid()),
		DefaultLimits: runner.Limits{Memory: 256 << 20}, StopGrace: 2 * time.Second})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(ctx) }()
	<-r.Ready()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	frontDone := make(chan error, 1)
	go func() { frontDone <- r.Serve(ctx, l) }()
	require.NoError(t, r.Put(runner.Spec{Name: "billed", Hosts: []string{"billed.example"}, Image: image, Command: []string{"/app/testapp"}}))

	// The stats pipeline into a fresh PostgreSQL database.
	sink, err := stats.NewPostgresSink(stats.PostgresConfig{URL: freshDatabase(t, testserver.Postgres(t))})
	require.NoError(t, err)
	defer sink.Close()
	ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: "test", Secret: []byte(rand.Text())})
	require.NoError(t, err)
	codec, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	require.NoError(t, err)
	dir := t.TempDir()
	pull, ack := "ipc://"+filepath.Join(dir, "pull.ipc"), "ipc://"+filepath.Join(dir, "ack.ipc")
	col, err := stats.NewCollector(stats.CollectorConfig{Bind: []string{pull}, AckBind: []string{ack}, Codec: codec,
		Dir: filepath.Join(dir, "collector"), Sinks: []stats.Sink{sink}, RetryInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	colDone := make(chan error, 1)
	go func() { colDone <- col.Run(ctx) }()
	em, err := stats.NewEmitter(stats.EmitterConfig{Collector: []string{pull}, Ack: []string{ack}, Codec: codec,
		SpoolDir: filepath.Join(dir, "spool"), Name: "node-1"})
	require.NoError(t, err)
	emDone := make(chan error, 1)
	go func() { emDone <- em.Run(ctx) }()
	meter := stats.NewUsageMeter(em)

	client := &http.Client{Timeout: 30 * time.Second}
	send := func(n int) {
		for k := 0; k < n; k++ {
			req, err := http.NewRequest("GET", "http://"+l.Addr().String()+"/", nil)
			require.NoError(t, err)
			req.Host = "billed.example"
			resp, err := client.Do(req)
			require.NoError(t, err)
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, 200, resp.StatusCode, string(body))
		}
	}
	// requestsIn is the roll-up's request count of the hour of at.
	requestsIn := func(at time.Time) int64 {
		h := at.UTC().Truncate(time.Hour)
		rows, err := sink.Usage(context.Background(), "billed", h, h.Add(time.Hour))
		require.NoError(t, err)
		if len(rows) == 0 {
			return 0
		}
		return rows[0].Requests
	}
	waitFor := func(at time.Time, want int64) {
		t.Helper()
		require.Eventually(t, func() bool { return requestsIn(at) >= want }, 30*time.Second, 20*time.Millisecond,
			"the hour of %v reached %d requests of %d", at, requestsIn(at), want)
		// Nothing more arrives late.
		time.Sleep(200 * time.Millisecond)
		require.Equal(t, want, requestsIn(at))
	}

	hour := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour) // an hour no other report touches
	send(30)                                                         // the first starts the app on demand
	observeUsage(r, meter, hour.Add(time.Minute))
	waitFor(hour, 30)
	send(45)
	observeUsage(r, meter, hour.Add(2*time.Minute))
	observeUsage(r, meter, hour.Add(3*time.Minute)) // nothing new: adds nothing
	waitFor(hour, 75)
	send(12)
	next := hour.Add(time.Hour + time.Minute)
	observeUsage(r, meter, next)
	waitFor(next, 12)
	require.EqualValues(t, 75, requestsIn(hour))

	cancel()
	for _, ch := range []chan error{frontDone, runDone, colDone, emDone} {
		select {
		case err := <-ch:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("a component did not stop within 30s")
		}
	}
	require.NoError(t, em.Close())
}

// freshDatabase makes a new database on the server at base, dropped at
// cleanup, and returns its URL.
func freshDatabase(t *testing.T, base string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "platform_test_" + hex.EncodeToString(b[:])
	_, err = conn.Exec(ctx, "CREATE DATABASE "+name)
	require.NoError(t, err)
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), base)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)")
	})
	u, err := url.Parse(base)
	require.NoError(t, err)
	u.Path = "/" + name
	return u.String()
}
