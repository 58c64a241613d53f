package stats

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand; it may go backwards.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func logRecs(app string, from, n int, at func(i int) time.Time) []Record {
	recs := make([]Record, n)
	for k := range recs {
		i := from + k
		recs[k] = Record{Kind: KindLog, Emitter: "e1", Seq: uint64(i), Index: uint64(i), Time: at(i),
			Tags: Tags{App: app, Instance: 3, Stream: "stdout"}, Text: []byte(fmt.Sprintf("line %d with \\ and\nnewline", i))}
	}
	return recs
}

func perSecond(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }

func TestFileSinkRotatesCompressesAndQueries(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeClock{t: t0}
	s, err := NewFileSink(FileSinkConfig{Dir: dir, ChunkBytes: 4096, ChunkAge: time.Minute, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const n = 1000
	for i := 1; i <= n; i += 100 {
		if err := s.Write(ctx, logRecs("web", i, 100, perSecond)); err != nil {
			t.Fatal(err)
		}
	}
	idx, _, err := s.snapshot("web")
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Chunks) < 10 {
		t.Fatalf("%d chunks for %d lines of ~60 bytes in 4 KiB chunks", len(idx.Chunks), n)
	}
	eventually(t, "rotated chunks compressed", func() bool {
		gz, _ := filepath.Glob(filepath.Join(dir, "web", "chunk-*.log.gz"))
		plain, _ := filepath.Glob(filepath.Join(dir, "web", "chunk-*.log"))
		return len(gz) == len(idx.Chunks)-1 && len(plain) == 1
	})

	tail, err := s.Tail("web", 250)
	if err != nil {
		t.Fatal(err)
	}
	if len(tail) != 250 {
		t.Fatalf("Tail(250) returned %d lines", len(tail))
	}
	for k, l := range tail {
		i := n - 250 + 1 + k
		want := fmt.Sprintf("line %d with \\ and\nnewline", i)
		if string(l.Text) != want || !l.Time.Equal(perSecond(i)) || l.Instance != 3 || l.Stream != "stdout" {
			t.Fatalf("tail line %d = %+v, want text %q at %v", k, l, want, perSecond(i))
		}
	}
	since, err := s.Since("web", perSecond(901), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(since) != 100 || string(since[0].Text) != "line 901 with \\ and\nnewline" {
		t.Fatalf("Since returned %d lines, first %q", len(since), since[0].Text)
	}
	if got, _ := s.Since("web", perSecond(901), 7); len(got) != 7 {
		t.Fatalf("Since with limit 7 returned %d", len(got))
	}

	// A replay of what was written writes nothing.
	if err := s.Write(ctx, logRecs("web", 901, 100, perSecond)); err != nil {
		t.Fatal(err)
	}
	if all, _ := s.Tail("web", 10*n); len(all) != n {
		t.Fatalf("after a replay the app has %d lines, want %d", len(all), n)
	}

	// Rotation by age: the clock moves past ChunkAge.
	before, _, _ := s.snapshot("web")
	clk.Add(2 * time.Minute)
	if err := s.Write(ctx, logRecs("web", n+1, 1, perSecond)); err != nil {
		t.Fatal(err)
	}
	after, _, _ := s.snapshot("web")
	if len(after.Chunks) != len(before.Chunks)+1 {
		t.Fatalf("a chunk older than ChunkAge was not rotated: %d -> %d chunks", len(before.Chunks), len(after.Chunks))
	}
	// The clock going backwards neither rotates nor breaks anything.
	clk.Add(-time.Hour)
	if err := s.Write(ctx, logRecs("web", n+2, 1, func(int) time.Time { return t0.Add(-time.Hour) })); err != nil {
		t.Fatal(err)
	}
	back, _, _ := s.snapshot("web")
	if len(back.Chunks) != len(after.Chunks) {
		t.Fatalf("a clock going back rotated the chunk")
	}
	got, err := s.Since("web", t0.Add(-time.Hour), 0)
	if err != nil || len(got) != n+2 {
		t.Fatalf("Since an hour before everything: %d lines, %v", len(got), err)
	}
	last, _ := s.Tail("web", 1)
	if string(last[0].Text) != fmt.Sprintf("line %d with \\ and\nnewline", n+2) {
		t.Fatalf("last line %q", last[0].Text)
	}
}

func TestFileSinkRecoversFromATornChunk(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := NewFileSink(FileSinkConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, logRecs("api", 1, 50, perSecond)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// A crash after writing lines but before the index recorded them.
	f, err := os.OpenFile(filepath.Join(dir, "api", "chunk-000001.log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("2026-12-01T10:00:51Z 3 stdout|line 51 half writ")
	f.Close()
	s2, err := NewFileSink(FileSinkConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	// The journal replays 41-60: 41-50 are skipped, 51-60 written once.
	if err := s2.Write(ctx, logRecs("api", 41, 20, perSecond)); err != nil {
		t.Fatal(err)
	}
	all, err := s2.Tail("api", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 60 {
		t.Fatalf("%d lines, want 60", len(all))
	}
	for k, l := range all {
		if want := fmt.Sprintf("line %d with \\ and\nnewline", k+1); string(l.Text) != want {
			t.Fatalf("line %d = %q, want %q", k, l.Text, want)
		}
	}
}

func TestFileSinkFollow(t *testing.T) {
	s, err := NewFileSink(FileSinkConfig{Dir: t.TempDir(), ChunkBytes: 2048})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Write(ctx, logRecs("web", 1, 10, perSecond)); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1000)
	done := make(chan error, 1)
	go func() {
		done <- s.Follow(ctx, "web", 3, func(l LogLine) error { got <- string(l.Text); return nil })
	}()
	for i := 8; i <= 10; i++ {
		if v := <-got; v != fmt.Sprintf("line %d with \\ and\nnewline", i) {
			t.Fatalf("followed %q first", v)
		}
	}
	// New lines, across several rotations, arrive in order.
	for i := 11; i <= 200; i += 10 {
		if err := s.Write(ctx, logRecs("web", i, 10, perSecond)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 11; i <= 200; i++ {
		select {
		case v := <-got:
			if v != fmt.Sprintf("line %d with \\ and\nnewline", i) {
				t.Fatalf("followed %q, want line %d", v, i)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("line %d never followed", i)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestClosingFileSinksKillsNoChild: file sinks opened and closed, their
// chunks compressed meanwhile, end no thread of the process, so children
// it started with a parent-death signal live on. The compressor once
// locked its goroutine to a thread and ended with it, which ended the
// thread: a collector process the fault test had forked from that thread
// was SIGKILLed mid-run, and its last lines never reached the files.
func TestClosingFileSinksKillsNoChild(t *testing.T) {
	threads := func() map[string]bool {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, e := range ents {
			m[e.Name()] = true
		}
		return m
	}
	var kids []*exec.Cmd
	t.Cleanup(func() {
		for _, c := range kids {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	})
	for range 8 { // from many goroutines, so from many threads
		c := exec.Command("sleep", "30")
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		errc := make(chan error, 1)
		go func() { errc <- c.Start() }()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		kids = append(kids, c)
	}
	before := threads()
	for k := range 10 {
		dir := t.TempDir()
		s, err := NewFileSink(FileSinkConfig{Dir: dir, ChunkBytes: 4096})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), logRecs("web", 1, 200, perSecond)); err != nil {
			t.Fatal(err)
		}
		eventually(t, fmt.Sprintf("sink %d: a rotated chunk compressed", k), func() bool {
			gz, _ := filepath.Glob(filepath.Join(dir, "web", "chunk-*.log.gz"))
			return len(gz) > 0
		})
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	after := threads()
	for tid := range before {
		if !after[tid] {
			t.Errorf("thread %s ended", tid)
		}
	}
	for _, c := range kids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
		if err != nil || strings.Contains(string(raw), ") Z ") {
			t.Errorf("child %d (sleep, started with Pdeathsig) was killed", c.Process.Pid)
		}
	}
}
