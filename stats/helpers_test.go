package stats

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/testserver"
	"github.com/paaskit/paaskit/zmqloop"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		runChildCollector(spec)
		os.Exit(0)
	}
	testserver.Main(m)
}

func testCodec(t testing.TB) *zmqloop.Codec {
	t.Helper()
	ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	c, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// endpoints returns a free PULL and ack endpoint pair on loopback.
func endpoints(t testing.TB) (string, string) {
	t.Helper()
	a, err := testserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	b, err := testserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("tcp://127.0.0.1:%d", a), fmt.Sprintf("tcp://127.0.0.1:%d", b)
}

// memSink records what it is given, deduplicating by emitter and seq the
// way a real sink must, and counting repeats; fail makes it refuse writes.
type memSink struct {
	name    string
	mu      sync.Mutex
	seen    map[string]uint64
	recs    []Record
	repeats int
	fail    bool
}

func newMemSink(name string) *memSink { return &memSink{name: name, seen: map[string]uint64{}} }

func (s *memSink) Name() string { return s.name }

func (s *memSink) Write(_ context.Context, recs []Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return fmt.Errorf("memsink %s is down", s.name)
	}
	for _, r := range recs {
		if r.Seq <= s.seen[r.Emitter] {
			s.repeats++
			continue
		}
		if r.Seq != s.seen[r.Emitter]+1 {
			return fmt.Errorf("memsink: gap: %s seq %d after %d", r.Emitter, r.Seq, s.seen[r.Emitter])
		}
		s.seen[r.Emitter] = r.Seq
		r.Text = append([]byte(nil), r.Text...)
		s.recs = append(s.recs, r)
	}
	return nil
}

func (s *memSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.recs)
}

func (s *memSink) setFail(v bool) {
	s.mu.Lock()
	s.fail = v
	s.mu.Unlock()
}

// running runs fn(ctx) in a goroutine; the returned stop cancels it and
// waits, failing the test on an error.
func running(t testing.TB, what string, fn func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s: %v", what, err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("%s did not stop within 20s", what)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// eventually polls cond until it holds or 30s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	eventuallyf(t, cond, func() string { return what })
}

// eventuallyf is eventually with a description made when it times out,
// so that it can say how far the condition got.
func eventuallyf(t testing.TB, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// quietLogger logs warnings and errors only, through t.Log: a benchmark's
// log then follows its result line instead of splitting it (a warning on
// stderr between "BenchmarkEndToEndLogs-2" and its figures once cost the
// bench section a round: its parser found no figure). What is logged
// after the test ends goes to stderr.
func quietLogger(t testing.TB) *slog.Logger {
	w := &tbWriter{tb: t}
	t.Cleanup(w.close) // the first cleanup registered runs last
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tbWriter struct {
	mu   sync.Mutex
	tb   testing.TB
	done bool
}

func (w *tbWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return os.Stderr.Write(p)
	}
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (w *tbWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

type rig struct {
	pull, ack string
	codec     *zmqloop.Codec
	dir       string
	log       *slog.Logger
}

func newRig(t testing.TB) *rig {
	log := quietLogger(t)
	p, a := endpoints(t)
	return &rig{pull: p, ack: a, codec: testCodec(t), dir: t.TempDir(), log: log}
}

func (g *rig) collector(t testing.TB, sinks ...Sink) *Collector {
	t.Helper()
	c, err := NewCollector(CollectorConfig{Bind: []string{g.pull}, AckBind: []string{g.ack}, Codec: g.codec,
		Dir: filepath.Join(g.dir, "collector"), Sinks: sinks, RetryInterval: 50 * time.Millisecond, Logger: g.log})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (g *rig) emitter(t testing.TB, mod func(*EmitterConfig)) *Emitter {
	t.Helper()
	cfg := EmitterConfig{Collector: []string{g.pull}, Ack: []string{g.ack}, Codec: g.codec,
		SpoolDir: filepath.Join(g.dir, "spool"), Name: "test", AckTimeout: 500 * time.Millisecond, ProbeInterval: 50 * time.Millisecond,
		Logger: g.log}
	if mod != nil {
		mod(&cfg)
	}
	e, err := NewEmitter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
