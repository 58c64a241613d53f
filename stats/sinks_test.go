package stats

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/paaskit/paaskit/internal/testserver"
	"github.com/redis/go-redis/v9"
)

// freshDB makes a database of its own on the PostgreSQL at base and
// returns its URL; it is dropped when the test ends.
func freshDB(t testing.TB, base string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var b [6]byte
	rand.Read(b[:])
	name := "stats_test_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), base)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

func pointRecs(emitter string, from, n int, at func(i int) time.Time) []Record {
	recs := make([]Record, n)
	for k := range recs {
		i := from + k
		recs[k] = Record{Kind: KindCounter, Emitter: emitter, Seq: uint64(i), Index: uint64(i), Time: at(i),
			Tags: Tags{App: "web", Instance: 1}, Name: "requests", Value: 1}
	}
	return recs
}

func countPoints(t testing.TB, url string) (total, distinct int64) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT (emitter, seq)) FROM stats_points`).Scan(&total, &distinct); err != nil {
		t.Fatal(err)
	}
	return total, distinct
}

func TestPostgresSinkMigratesWritesOnceAndQueries(t *testing.T) {
	url := freshDB(t, testserver.Postgres(t))
	ctx := context.Background()
	s, err := NewPostgresSink(PostgresConfig{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Write(ctx, pointRecs("e1", 1, 600, perSecond)); err != nil {
		t.Fatal(err)
	}
	// A replay, overlapping, writes only what is new.
	if err := s.Write(ctx, pointRecs("e1", 301, 600, perSecond)); err != nil {
		t.Fatal(err)
	}
	if total, distinct := countPoints(t, url); total != 900 || distinct != 900 {
		t.Fatalf("%d rows (%d distinct), want 900", total, distinct)
	}
	// A second sink on the same database (a restarted collector) knows
	// the progress too, and the schema is not migrated twice.
	s2, err := NewPostgresSink(PostgresConfig{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Write(ctx, pointRecs("e1", 1, 900, perSecond)); err != nil {
		t.Fatal(err)
	}
	if total, _ := countPoints(t, url); total != 900 {
		t.Fatalf("a replay through a new sink wrote %d rows, want 900", total)
	}
	b, err := s.Metric(ctx, MetricQuery{App: "web", Name: "requests", From: t0, To: t0.Add(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	// Points at seconds 1..900: minute 0 has 59, minutes 1-14 have 60.
	if len(b) != 10 || b[0].Count != 59 || b[1].Count != 60 || b[1].Sum != 60 || !b[1].Start.Equal(t0.Add(time.Minute)) {
		t.Fatalf("buckets %+v", b)
	}
}

func TestUsageRollsUpPerAppAndHour(t *testing.T) {
	url := freshDB(t, testserver.Postgres(t))
	ctx := context.Background()
	s, err := NewPostgresSink(PostgresConfig{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var recs []Record
	seq := uint64(0)
	add := func(app, name string, v float64, at time.Time) {
		seq++
		recs = append(recs, Record{Kind: KindUsage, Emitter: "e1", Seq: seq, Index: seq, Time: at, Tags: Tags{App: app}, Name: name, Value: v})
	}
	add("web", UsageCPUSeconds, 1.5, t0.Add(10*time.Minute))
	add("web", UsageCPUSeconds, 2, t0.Add(50*time.Minute))
	add("web", UsagePeakMemory, 100<<20, t0.Add(10*time.Minute))
	add("web", UsagePeakMemory, 80<<20, t0.Add(20*time.Minute))
	add("web", UsageRequests, 7, t0.Add(30*time.Minute))
	add("web", UsageCPUSeconds, 4, t0.Add(70*time.Minute))
	add("api", UsageRequests, 3, t0.Add(5*time.Minute))
	if err := s.Write(ctx, recs[:4]); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, recs); err != nil { // the first four again: a replay
		t.Fatal(err)
	}
	u, err := s.Usage(ctx, "", t0, t0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []UsageHour{
		{App: "api", Hour: t0, Requests: 3},
		{App: "web", Hour: t0, CPUSeconds: 3.5, PeakMemoryBytes: 100 << 20, Requests: 7},
		{App: "web", Hour: t0.Add(time.Hour), CPUSeconds: 4},
	}
	if len(u) != len(want) {
		t.Fatalf("usage %+v", u)
	}
	for i := range want {
		g := u[i]
		g.Hour = g.Hour.UTC()
		if g != want[i] {
			t.Fatalf("usage row %d = %+v, want %+v", i, g, want[i])
		}
	}
}

func TestRedisSinkAddsEachRecordOnce(t *testing.T) {
	addr := testserver.Redis(t)
	ctx := context.Background()
	var b [4]byte
	rand.Read(b[:])
	s, err := NewRedisSink(RedisConfig{Addr: addr, Prefix: "stats-test-" + hex.EncodeToString(b[:]) + ":", MaxLen: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs := append(logRecs("web", 1, 300, perSecond), pointRecs("e1", 301, 10, perSecond)...)
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, recs[100:]); err != nil { // a replay
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	if n, err := rdb.XLen(ctx, s.LogStream("web")).Result(); err != nil || n != 300 {
		t.Fatalf("log stream has %d entries (%v), want 300", n, err)
	}
	if n, _ := rdb.XLen(ctx, s.MetricStream("web")).Result(); n != 10 {
		t.Fatalf("metric stream has %d entries, want 10", n)
	}
	last, err := rdb.XRevRangeN(ctx, s.LogStream("web"), "+", "-", 1).Result()
	if err != nil || len(last) != 1 || last[0].ID != "300-0" || last[0].Values["text"] != "line 300 with \\ and\nnewline" {
		t.Fatalf("last entry %+v, %v", last, err)
	}
	// The length cap holds.
	more := logRecs("web", 1000, 3000, perSecond)
	if err := s.Write(ctx, more); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.XLen(ctx, s.LogStream("web")).Result(); n > 1200 {
		t.Fatalf("capped stream holds %d entries, cap 1000", n)
	}
}
