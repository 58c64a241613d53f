package nexus

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/internal/testserver"
	"github.com/paaskit/paaskit/zmqloop"
)

const testInterval = 100 * time.Millisecond

var testSecret = []byte("nexus-test-secret-0123456789abcdef")

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func mustCodec(t testing.TB) *zmqloop.Codec {
	ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: testSecret})
	if err == nil {
		var c *zmqloop.Codec
		if c, err = zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring}); err == nil {
			return c
		}
	}
	if t != nil {
		t.Fatal(err)
	}
	panic(err)
}

// fakeClock is a daemon.Clock that moves only when told to.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	c       chan time.Time
	stopped bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_800_000_000, 0)} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) NewTimer(d time.Duration) daemon.Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{at: f.now.Add(d), c: make(chan time.Time, 1)}
	f.timers = append(f.timers, t)
	return &fakeTimerHandle{f, t}
}

// Advance moves the clock and fires the timers that are due.
func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	keep := f.timers[:0]
	for _, t := range f.timers {
		switch {
		case t.stopped:
		case !t.at.After(f.now):
			t.c <- f.now
		default:
			keep = append(keep, t)
		}
	}
	f.timers = keep
}

// Waiting reports how many timers are armed (a loop waiting on the clock).
func (f *fakeClock) Waiting() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, t := range f.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

type fakeTimerHandle struct {
	f *fakeClock
	t *fakeTimer
}

func (h *fakeTimerHandle) C() <-chan time.Time { return h.t.c }
func (h *fakeTimerHandle) Stop() bool {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	was := !h.t.stopped && len(h.t.c) == 0
	h.t.stopped = true
	return was
}

// startResolver runs a resolver on a free loopback port until the test ends.
func startResolver(t testing.TB, cfg ResolverConfig) (*Resolver, string) {
	t.Helper()
	if cfg.Bind == nil {
		cfg.Bind = []string{"tcp://127.0.0.1:*"}
	}
	if cfg.Codec == nil {
		cfg.Codec = mustCodec(t)
	}
	if cfg.Interval == 0 {
		cfg.Interval = testInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLog()
	}
	r, err := NewResolver(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case <-r.Ready():
	case err := <-done:
		t.Fatalf("resolver stopped: %v", err)
	}
	return r, r.Endpoints()[0]
}

// runAnnouncer runs a until stop is called (a clean stop: goodbye).
func runAnnouncer(t testing.TB, a Announcer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(stop)
	return stop
}

func announce(t testing.TB, resolvers []string, in Instance) func() {
	t.Helper()
	a, err := NewAnnouncer(AnnouncerConfig{Resolvers: resolvers, Codec: mustCodec(t), Instance: in,
		Interval: testInterval, ByeTimeout: 200 * time.Millisecond, Logger: quietLog()})
	require.NoError(t, err)
	return runAnnouncer(t, a)
}

func newTestClient(t testing.TB, resolvers ...string) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{Resolvers: resolvers, Codec: mustCodec(t), WatchWait: time.Second, Logger: quietLog()})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func ids(es []Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func waitIDs(t testing.TB, d Directory, kind string, want ...string) {
	t.Helper()
	waitIDsEvery(t, d, kind, 10*time.Millisecond, want...)
}

// waitIDsEvery is waitIDs polling every tick, for tests that time how soon
// the table is whole.
func waitIDsEvery(t testing.TB, d Directory, kind string, tick time.Duration, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	var got []string
	require.Eventually(t, func() bool {
		es, err := d.Lookup(context.Background(), kind)
		if err != nil {
			return false
		}
		got = ids(es)
		return fmt.Sprint(got) == fmt.Sprint(want)
	}, 10*time.Second, tick, "lookup %s: want %v", kind, want)
}

// nextEvent reads one event, failing after a generous wait.
func nextEvent(t testing.TB, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		require.True(t, ok, "watch channel closed")
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event within 10s")
	}
	return Event{}
}

// childResolver is a resolver in a process of its own, to be killed.
type childResolver struct {
	cmd *exec.Cmd
	ep  string
}

func startChildResolver(t testing.TB, bind string, env ...string) *childResolver {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(append(os.Environ(), childResolverEnv+"="+bind), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	c := &childResolver{cmd: cmd}
	t.Cleanup(func() { c.kill() })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err, "child resolver did not start")
	ep, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
	require.True(t, ok, "child said %q", line)
	c.ep = ep
	return c
}

func (c *childResolver) kill() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}

func freeEndpoint(t testing.TB) string {
	port, err := testserver.FreePort()
	require.NoError(t, err)
	return fmt.Sprintf("tcp://127.0.0.1:%d", port)
}

// startResolverOn runs a resolver on a fixed endpoint, retrying while the
// port is still held by the previous one (libzmq closes listeners on its
// I/O thread, a moment after the socket is closed).
func startResolverOn(t testing.TB, ep string) (stop func()) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := NewResolver(ResolverConfig{Bind: []string{ep}, Codec: mustCodec(t), Interval: testInterval, Logger: quietLog()})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		select {
		case <-r.Ready():
			return func() { cancel(); require.NoError(t, <-done) }
		case err := <-done:
			cancel()
			require.True(t, time.Now().Before(deadline), "resolver on %s: %v", ep, err)
			time.Sleep(20 * time.Millisecond)
		}
	}
}
