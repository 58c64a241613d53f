package stats

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/paaskit/paaskit/internal/testserver"
)

// The emitter's hot path: with the collector up and keeping pace, a
// record is encoded into the memory queue under a mutex and nothing else.
func benchEmitter(b *testing.B, call func(e *Emitter, i int)) {
	g := newRig(b)
	running(b, "collector", g.collector(b).Run)
	e := g.emitter(b, nil)
	running(b, "emitter", e.Run)
	for i := range 1000 { // warm the chunk free list
		call(e, i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		call(e, i)
	}
	b.StopTimer()
	if d := e.Stats().Dropped; d != 0 {
		b.Fatalf("dropped %d", d)
	}
}

// benchHotPath measures the recording call alone: no shipper runs, and
// the queue is emptied outside the timer every 100,000 calls.
func benchHotPath(b *testing.B, call func(e *Emitter)) {
	e := newRig(b).emitter(b, func(c *EmitterConfig) { c.QueueBytes = 64 << 20 })
	for range 200000 {
		call(e)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%100000 == 0 {
			b.StopTimer()
			e.mu.Lock()
			e.trimMemLocked(e.seq)
			e.mu.Unlock()
			b.StartTimer()
		}
		call(e)
	}
}

func BenchmarkEmitterHotPathCount(b *testing.B) {
	t := Tags{App: "web", Instance: 1}
	benchHotPath(b, func(e *Emitter) { e.Count(t, "requests", 1) })
}

func BenchmarkEmitterHotPathLog(b *testing.B) {
	t := Tags{App: "web", Instance: 1, Stream: "stdout"}
	benchHotPath(b, func(e *Emitter) { e.Log(t, benchLine) })
}

var benchLine = []byte("GET /index.html 200 1532 0.004s \"Mozilla/5.0 (X11; Linux x86_64)\"")

func BenchmarkEmitterCount(b *testing.B) {
	t := Tags{App: "web", Instance: 1}
	benchEmitter(b, func(e *Emitter, _ int) { e.Count(t, "requests", 1) })
}

func BenchmarkEmitterTiming(b *testing.B) {
	t := Tags{App: "web", Instance: 1}
	benchEmitter(b, func(e *Emitter, _ int) { e.Timing(t, "request_duration", 3*time.Millisecond) })
}

func BenchmarkEmitterLog(b *testing.B) {
	t := Tags{App: "web", Instance: 1, Stream: "stdout"}
	benchEmitter(b, func(e *Emitter, _ int) { e.Log(t, benchLine) })
}

// TestEmitterHotPathDoesNotAllocate counts allocations, not time.
func TestEmitterHotPathDoesNotAllocate(t *testing.T) {
	g := newRig(t)
	e := g.emitter(t, func(c *EmitterConfig) { c.QueueBytes = 64 << 20 })
	tags := Tags{App: "web", Instance: 1, Stream: "stdout"}
	for range 1000 {
		e.Log(tags, benchLine)
	}
	// No collector runs, so the queue only grows: chunks are allocated
	// as it does (one per 64 KiB), which AllocsPerRun averages away; the
	// record itself allocates nothing.
	allocs := testing.AllocsPerRun(10000, func() {
		e.Count(tags, "requests", 1)
		e.Gauge(tags, "queue_length", 2)
		e.Timing(tags, "request_duration", time.Millisecond)
		e.Log(tags, benchLine)
	})
	if allocs >= 0.1 {
		t.Fatalf("%.2f allocations per four records", allocs)
	}
}

// benchEmitterConfig is the end-to-end benchmarks' emitter: a queue with
// room for the backlog a busy caller makes, and the default AckTimeout
// (the rig's 500ms is for the fault tests; on a loaded machine a slow
// fsync can pass it and send the emitter to its spool, which is a fault
// path, not what these measure).
func benchEmitterConfig(c *EmitterConfig) {
	c.QueueBytes = 64 << 20
	c.AckTimeout = DefaultAckTimeout
}

// BenchmarkEndToEndPostgres pushes points from an emitter through the
// collector into PostgreSQL and reports points/s, from the first record
// to the last row committed.
func BenchmarkEndToEndPostgres(b *testing.B) {
	url := freshDB(b, pgForBench(b))
	sink, err := NewPostgresSink(PostgresConfig{URL: url})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	if err := sink.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	g := newRig(b)
	c := g.collector(b, sink)
	running(b, "collector", c.Run)
	e := g.emitter(b, benchEmitterConfig)
	running(b, "emitter", e.Run)
	n := max(b.N, 1)
	tags := Tags{App: "web", Instance: 1}
	b.ResetTimer()
	start := time.Now()
	for i := range n {
		e.Count(tags, "requests", 1)
		if i%4096 == 4095 {
			// Keep the queue within its bound without a busy caller
			// outrunning the pipeline forever.
			for e.Stats().Emitted-c.Stats().Sinks[0].Written > 1<<20 {
				time.Sleep(time.Millisecond)
			}
		}
	}
	for c.Stats().Accepted < uint64(n) {
		time.Sleep(time.Millisecond)
	}
	journaled := time.Since(start)
	for c.Stats().Sinks[0].Written < uint64(n) {
		time.Sleep(time.Millisecond)
	}
	el := time.Since(start)
	b.ReportMetric(float64(n)/journaled.Seconds(), "journaled/s")
	b.StopTimer()
	if total, _ := countPoints(b, url); total != int64(n) {
		b.Fatalf("%d rows, want %d", total, n)
	}
	b.ReportMetric(float64(n)/el.Seconds(), "points/s")
	b.ReportMetric(float64(n)/float64(c.Stats().Sinks[0].Batches), "points/batch")
}

// BenchmarkInsertLoopPostgres is the peer: one INSERT per point, in
// autocommit, over one connection to the same server.
func BenchmarkInsertLoopPostgres(b *testing.B) {
	url := freshDB(b, pgForBench(b))
	sink, err := NewPostgresSink(PostgresConfig{URL: url})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	if err := sink.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	b.ResetTimer()
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		if _, err := conn.Exec(ctx, `INSERT INTO stats_points (time, app, instance, kind, name, value, emitter, seq)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, time.Now(), "web", int64(1), "counter", "requests", 1.0, "loop", int64(i+1)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "points/s")
}

// pgForBench is the PostgreSQL of make test / make bench, or one of the
// test binary's own.
func pgForBench(b *testing.B) string { return testserver.Postgres(b) }

// BenchmarkFileSinkLines writes 120-byte log lines into chunked files
// (64 MiB chunks, compressed in the background, fsync per batch) and
// reports MB/s of log text.
func BenchmarkFileSinkLines(b *testing.B) {
	dir := b.TempDir()
	s, err := NewFileSink(FileSinkConfig{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	text := []byte(fmt.Sprintf("%-119s", "10.0.0.1 - - [03/Dec/2026:09:00:00 +0000] \"GET /static/app.js HTTP/1.1\" 200 5312"))
	batch := make([]Record, DefaultSinkBatch)
	now := time.Now()
	for i := range batch {
		batch[i] = Record{Kind: KindLog, Emitter: "e", Time: now, Tags: Tags{App: "web", Instance: 1, Stream: "stdout"}, Text: text}
	}
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	idx := uint64(0)
	for done := 0; done < b.N; {
		k := min(len(batch), b.N-done)
		for i := range k {
			idx++
			batch[i].Index, batch[i].Seq = idx, idx
		}
		if err := s.Write(context.Background(), batch[:k]); err != nil {
			b.Fatal(err)
		}
		done += k
	}
	b.StopTimer()
	lines, _ := s.Tail("web", 1)
	if len(lines) != 1 {
		b.Fatal("nothing written")
	}
}

// BenchmarkEndToEndLogs pushes 120-byte log lines from an emitter through
// the collector into chunked files; MB/s of log text from the first line
// to the last written.
func BenchmarkEndToEndLogs(b *testing.B) {
	g := newRig(b)
	files, err := NewFileSink(FileSinkConfig{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer files.Close()
	c := g.collector(b, files)
	running(b, "collector", c.Run)
	e := g.emitter(b, benchEmitterConfig)
	running(b, "emitter", e.Run)
	text := []byte(fmt.Sprintf("%-119s", "10.0.0.1 - - [03/Dec/2026:09:00:00 +0000] \"GET /static/app.js HTTP/1.1\" 200 5312"))
	tags := Tags{App: "web", Instance: 1, Stream: "stdout"}
	n := max(b.N, 1)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	cpu0 := processCPU(b)
	start := time.Now()
	for i := range n {
		e.Log(tags, text)
		if i%4096 == 4095 {
			// Keep the backlog (held in memory until acknowledged) well
			// within the queue: 2^17 records of about 190 bytes is 25
			// MB of 64 MiB. At 2^18 it came near enough to the bound,
			// in 64 KiB chunks, that the queue overflowed to the spool.
			for e.Stats().Emitted-c.Stats().Sinks[0].Written > 1<<17 {
				time.Sleep(time.Millisecond)
			}
		}
	}
	emitted := time.Since(start)
	for c.Stats().Accepted < uint64(n) {
		time.Sleep(time.Millisecond)
	}
	journaled := time.Since(start)
	for c.Stats().Sinks[0].Written < uint64(n) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	// CPU per line of the whole process (every thread, libzmq's too):
	// steadier than the rate on shared cores, so changes are judged by it.
	b.ReportMetric(float64((processCPU(b)-cpu0).Nanoseconds())/float64(n), "cpu-ns/line")
	// Where the run's time went: the caller's loop done, every line
	// journaled, every line written (the figure).
	b.ReportMetric(emitted.Seconds()*1e3, "emitted-ms")
	b.ReportMetric(journaled.Seconds()*1e3, "journaled-ms")
	st := e.Stats()
	if st.Dropped != 0 {
		b.Fatalf("dropped %d", st.Dropped)
	}
	// Records that went by the spool (the collector fell AckTimeout
	// behind, or the queue filled): 0 on the path this measures.
	b.ReportMetric(float64(st.Spooled), "spooled")
	b.ReportMetric(float64(n)/float64(c.Stats().Sinks[0].Batches), "lines/write")
}

// processCPU is the user and system time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
