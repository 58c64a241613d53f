package stats

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/paaskit/paaskit/internal/testserver"
)

func TestConfigsAreValidated(t *testing.T) {
	codec := testCodec(t)
	dir := t.TempDir()
	good := EmitterConfig{Collector: []string{"tcp://127.0.0.1:1"}, Ack: []string{"tcp://127.0.0.1:2"}, Codec: codec, SpoolDir: dir}
	for name, mod := range map[string]func(*EmitterConfig){
		"no collector": func(c *EmitterConfig) { c.Collector = nil },
		"no ack":       func(c *EmitterConfig) { c.Ack = nil },
		"no codec":     func(c *EmitterConfig) { c.Codec = nil },
		"no spool":     func(c *EmitterConfig) { c.SpoolDir = "" },
		"bad name":     func(c *EmitterConfig) { c.Name = "../x" },
		"huge lines":   func(c *EmitterConfig) { c.MaxLineBytes = 2 << 20 },
		"negative":     func(c *EmitterConfig) { c.AckTimeout = -1 },
		"bad report":   func(c *EmitterConfig) { c.ReportApp = "a b" },
	} {
		c := good
		mod(&c)
		if _, err := NewEmitter(c); err == nil {
			t.Errorf("NewEmitter with %s: no error", name)
		}
	}
	if _, err := NewEmitter(good); err != nil {
		t.Fatal(err)
	}
	col := CollectorConfig{Bind: []string{"tcp://127.0.0.1:1"}, AckBind: []string{"tcp://127.0.0.1:2"}, Codec: codec, Dir: t.TempDir()}
	for name, mod := range map[string]func(*CollectorConfig){
		"no bind":      func(c *CollectorConfig) { c.Bind = nil },
		"no codec":     func(c *CollectorConfig) { c.Codec = nil },
		"no dir":       func(c *CollectorConfig) { c.Dir = "" },
		"two sinks":    func(c *CollectorConfig) { c.Sinks = []Sink{newMemSink("a"), newMemSink("a")} },
		"nil sink":     func(c *CollectorConfig) { c.Sinks = []Sink{nil} },
		"negative":     func(c *CollectorConfig) { c.SinkBatch = -1 },
		"bad sinkname": func(c *CollectorConfig) { c.Sinks = []Sink{newMemSink("a/b")} },
	} {
		c := col
		mod(&c)
		if _, err := NewCollector(c); err == nil {
			t.Errorf("NewCollector with %s: no error", name)
		}
	}
	if _, err := NewFileSink(FileSinkConfig{}); err == nil {
		t.Error("NewFileSink without Dir: no error")
	}
	if _, err := NewPostgresSink(PostgresConfig{URL: "::not a url"}); err == nil {
		t.Error("NewPostgresSink with a bad URL: no error")
	}
	if _, err := NewRedisSink(RedisConfig{}); err == nil {
		t.Error("NewRedisSink without Addr: no error")
	}
}

func TestInvalidRecordsAreRefusedAtTheCall(t *testing.T) {
	g := newRig(t)
	sink := newMemSink("mem")
	running(t, "collector", g.collector(t, sink).Run)
	e := g.emitter(t, nil)
	running(t, "emitter", e.Run)
	e.Count(Tags{App: ""}, "requests", 1)
	e.Count(Tags{App: "../etc"}, "requests", 1)
	e.Count(Tags{App: "web"}, "Requests Total", 1)
	e.Gauge(Tags{App: "web"}, "load", math.NaN())
	e.Log(Tags{App: "web", Stream: "std out"}, []byte("x"))
	e.Count(Tags{App: "web"}, "requests", 1)
	eventually(t, "the valid record", func() bool { return sink.count() == 1 })
	if st := e.Stats(); st.Invalid != 5 || st.Emitted != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestJournalTornTailIsCutOnOpen(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	l, err := openSegLog(dir, "journal", 1<<20, &mu)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for i := range 100 {
		l.appendLocked([]byte(strings.Repeat("r", i+1)))
	}
	if _, err := l.flushLocked(); err != nil {
		t.Fatal(err)
	}
	l.closeLocked()
	mu.Unlock()
	segs, _ := filepath.Glob(filepath.Join(dir, "journal-*.seg"))
	f, _ := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{50, 0, 0, 0, 1, 2, 3, 4, 'h', 'a', 'l', 'f'}) // a crash mid-record
	f.Close()
	l2, err := openSegLog(dir, "journal", 1<<20, &mu)
	if err != nil {
		t.Fatal(err)
	}
	if n := l2.written(); n != 101 {
		t.Fatalf("next record is %d, want 101", n)
	}
	mu.Lock()
	l2.appendLocked([]byte("after"))
	l2.flushLocked()
	mu.Unlock()
	c := l2.cursor(1)
	defer c.close()
	for i := 1; i <= 101; i++ {
		n, p, err := c.next()
		want := strings.Repeat("r", i)
		if i == 101 {
			want = "after"
		}
		if err != nil || n != uint64(i) || string(p) != want {
			t.Fatalf("record %d: %d %q %v", i, n, p, err)
		}
	}
}

func TestPostgresSchemaMigratesFromAnOlderVersion(t *testing.T) {
	url := freshDB(t, testserver.Postgres(t))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// A database left at version 1 by an older collector, with data.
	if _, err := conn.Exec(ctx, `CREATE TABLE stats_schema (version int NOT NULL); INSERT INTO stats_schema VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, migrations[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO stats_progress VALUES ('old', 5, now())`); err != nil {
		t.Fatal(err)
	}
	s, err := NewPostgresSink(PostgresConfig{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Write(ctx, pointRecs("old", 1, 10, perSecond)); err != nil {
		t.Fatal(err)
	}
	var v int
	var idx string
	if err := conn.QueryRow(ctx, `SELECT version FROM stats_schema`).Scan(&v); err != nil || v != len(migrations) {
		t.Fatalf("version %d (%v), want %d", v, err, len(migrations))
	}
	if err := conn.QueryRow(ctx, `SELECT indexname FROM pg_indexes WHERE tablename = 'stats_points'`).Scan(&idx); err != nil || idx != "stats_points_time" {
		t.Fatalf("index %q (%v)", idx, err)
	}
	// The progress it found is respected: seqs 1-5 were written before.
	if total, _ := countPoints(t, url); total != 5 {
		t.Fatalf("%d rows, want 5 (seqs 6-10)", total)
	}
	// A schema newer than the package is refused, not clobbered.
	if _, err := conn.Exec(ctx, `UPDATE stats_schema SET version = 99`); err != nil {
		t.Fatal(err)
	}
	s2, _ := NewPostgresSink(PostgresConfig{URL: url})
	defer s2.Close()
	if err := s2.Migrate(ctx); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("migrating a newer schema: %v", err)
	}
}

func TestDirectoriesAreExclusive(t *testing.T) {
	g := newRig(t)
	e := g.emitter(t, nil)
	if _, err := NewEmitter(EmitterConfig{Collector: []string{g.pull}, Ack: []string{g.ack}, Codec: g.codec,
		SpoolDir: filepath.Join(g.dir, "spool")}); !errors.Is(err, ErrDirInUse) {
		t.Fatalf("a second emitter on one spool: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := g.emitter(t, nil) // free again
	e2.Close()
	c := g.collector(t)
	if _, err := NewCollector(CollectorConfig{Bind: []string{g.pull}, AckBind: []string{g.ack}, Codec: g.codec,
		Dir: filepath.Join(g.dir, "collector")}); !errors.Is(err, ErrDirInUse) {
		t.Fatalf("a second collector on one directory: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = c.Run(ctx)
	g.collector(t) // free again
}
