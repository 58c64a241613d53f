package stats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresConfig configures a PostgresSink. Zero values are the documented
// defaults.
type PostgresConfig struct {
	// URL is a pgx connection string. Required.
	URL string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// PostgresSink writes metric points and usage roll-ups to PostgreSQL, and
// answers range and billing queries. It creates and migrates its schema
// (tables stats_points, stats_usage_hourly, stats_progress and
// stats_schema) on first use, under an advisory lock so that several
// collectors may share a database.
//
// Each Write is one transaction, committed synchronously: the batch's points through COPY
// (pgx CopyFrom), its usage added into the hourly roll-ups, and each
// emitter's highest seq written into stats_progress. Records at or below
// an emitter's progress are skipped, so a replayed batch writes nothing
// twice, and a batch cut off mid-way (PostgreSQL restarted) is rolled back
// whole and written again on the retry: every point lands exactly once.
type PostgresSink struct {
	cfg PostgresConfig
	log *slog.Logger

	mu       sync.Mutex
	pool     *pgxpool.Pool
	migrated bool
	progress map[string]uint64 // nil: load from stats_progress
}

// NewPostgresSink validates cfg; it connects lazily (a database that is
// down is a sink that is down, not a collector that cannot start).
func NewPostgresSink(cfg PostgresConfig) (*PostgresSink, error) {
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("stats: new postgres sink: %w", err)
	}
	pc.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("stats: new postgres sink: %w", err)
	}
	s := &PostgresSink{cfg: cfg, log: cfg.Logger, pool: pool}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s, nil
}

// Name is "postgres".
func (s *PostgresSink) Name() string { return "postgres" }

// Close closes the connections.
func (s *PostgresSink) Close() { s.pool.Close() }

// migrations are applied in order; stats_schema holds how many were.
var migrations = []string{
	`CREATE TABLE stats_points (
		time     timestamptz      NOT NULL,
		app      text             NOT NULL,
		instance bigint           NOT NULL,
		kind     text             NOT NULL,
		name     text             NOT NULL,
		value    double precision NOT NULL,
		emitter  text             NOT NULL,
		seq      bigint           NOT NULL
	);
	CREATE TABLE stats_progress (
		emitter text PRIMARY KEY,
		seq     bigint NOT NULL,
		updated timestamptz NOT NULL DEFAULT now()
	);
	CREATE TABLE stats_usage_hourly (
		app               text        NOT NULL,
		hour              timestamptz NOT NULL,
		cpu_seconds       double precision NOT NULL DEFAULT 0,
		peak_memory_bytes bigint      NOT NULL DEFAULT 0,
		requests          bigint      NOT NULL DEFAULT 0,
		PRIMARY KEY (app, hour)
	)`,
	// BRIN, not a B-tree: points arrive in time order, so block ranges
	// narrow a time-range query well, and keeping a BRIN up to date costs
	// COPY almost nothing (a B-tree on (app, name, time) halved the rate).
	`CREATE INDEX stats_points_time ON stats_points USING brin (time)`,
}

// Migrate creates or upgrades the schema; Write calls it on first use.
func (s *PostgresSink) Migrate(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.migrateLocked(ctx)
}

func (s *PostgresSink) migrateLocked(ctx context.Context) error {
	if s.migrated {
		return nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7355608)`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS stats_schema (version int NOT NULL)`); err != nil {
			return err
		}
		var v int
		err := tx.QueryRow(ctx, `SELECT version FROM stats_schema`).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			if _, err := tx.Exec(ctx, `INSERT INTO stats_schema VALUES (0)`); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		if v > len(migrations) {
			return fmt.Errorf("schema version %d is newer than this package's %d", v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			if _, err := tx.Exec(ctx, migrations[i]); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
		_, err = tx.Exec(ctx, `UPDATE stats_schema SET version = $1`, len(migrations))
		return err
	})
	if err != nil {
		return fmt.Errorf("stats: postgres sink: migrate schema: %w", err)
	}
	s.migrated = true
	return nil
}

type usageKey struct {
	app  string
	hour time.Time
}

type usageSum struct {
	cpu      float64
	peak     int64
	requests int64
}

// Write writes the batch's points and usage in one transaction.
func (s *PostgresSink) Write(ctx context.Context, recs []Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.migrateLocked(ctx); err != nil {
		return err
	}
	if s.progress == nil {
		p, err := s.loadProgress(ctx)
		if err != nil {
			return err
		}
		s.progress = p
	}
	rows := make([]*Record, 0, len(recs))
	usage := map[usageKey]*usageSum{}
	high := map[string]uint64{}
	for i := range recs {
		r := &recs[i]
		if r.Seq <= s.progress[r.Emitter] || r.Seq <= high[r.Emitter] {
			continue
		}
		high[r.Emitter] = r.Seq
		switch r.Kind {
		case KindCounter, KindGauge, KindTiming:
			rows = append(rows, r)
		case KindUsage:
			k := usageKey{r.App, r.Time.UTC().Truncate(time.Hour)}
			u := usage[k]
			if u == nil {
				u = &usageSum{}
				usage[k] = u
			}
			switch r.Name {
			case UsageCPUSeconds:
				u.cpu += r.Value
			case UsagePeakMemory:
				u.peak = max(u.peak, int64(r.Value))
			case UsageRequests:
				u.requests += int64(r.Value)
			}
		}
	}
	if len(high) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// A commit must be durable before the collector moves past the
		// batch, whatever the server's default (asynchronous commit loses
		// the last commits when PostgreSQL crashes).
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
			return err
		}
		if len(rows) > 0 {
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"stats_points"},
				[]string{"time", "app", "instance", "kind", "name", "value", "emitter", "seq"}, &pointSource{rows: rows, i: -1}); err != nil {
				return fmt.Errorf("copy %d points: %w", len(rows), err)
			}
		}
		if len(usage) > 0 {
			var apps []string
			var hours []time.Time
			var cpu []float64
			var peak, reqs []int64
			for k, u := range usage {
				apps, hours = append(apps, k.app), append(hours, k.hour)
				cpu, peak, reqs = append(cpu, u.cpu), append(peak, u.peak), append(reqs, u.requests)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO stats_usage_hourly (app, hour, cpu_seconds, peak_memory_bytes, requests)
				SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::float8[], $4::int8[], $5::int8[])
				ON CONFLICT (app, hour) DO UPDATE SET
					cpu_seconds = stats_usage_hourly.cpu_seconds + EXCLUDED.cpu_seconds,
					peak_memory_bytes = greatest(stats_usage_hourly.peak_memory_bytes, EXCLUDED.peak_memory_bytes),
					requests = stats_usage_hourly.requests + EXCLUDED.requests`,
				apps, hours, cpu, peak, reqs); err != nil {
				return fmt.Errorf("roll up usage: %w", err)
			}
		}
		var ems []string
		var seqs []int64
		for e, q := range high {
			ems, seqs = append(ems, e), append(seqs, int64(q))
		}
		_, err := tx.Exec(ctx, `INSERT INTO stats_progress (emitter, seq)
			SELECT * FROM unnest($1::text[], $2::int8[])
			ON CONFLICT (emitter) DO UPDATE SET seq = EXCLUDED.seq, updated = now()`, ems, seqs)
		if err != nil {
			return fmt.Errorf("record progress: %w", err)
		}
		return nil
	})
	if err != nil {
		// Whether the commit happened is unknown: reload the progress.
		s.progress = nil
		return fmt.Errorf("stats: postgres sink: %w", err)
	}
	for e, q := range high {
		s.progress[e] = q
	}
	return nil
}

// pointSource feeds CopyFrom from the records without a [][]any.
type pointSource struct {
	rows []*Record
	i    int
	vals [8]any
}

func (p *pointSource) Next() bool { p.i++; return p.i < len(p.rows) }
func (p *pointSource) Err() error { return nil }
func (p *pointSource) Values() ([]any, error) {
	r := p.rows[p.i]
	p.vals = [8]any{r.Time, r.App, r.Instance, kindNames[r.Kind], r.Name, r.Value, r.Emitter, int64(r.Seq)}
	return p.vals[:], nil
}

func (s *PostgresSink) loadProgress(ctx context.Context) (map[string]uint64, error) {
	rows, err := s.pool.Query(ctx, `SELECT emitter, seq FROM stats_progress`)
	if err != nil {
		return nil, fmt.Errorf("stats: postgres sink: load progress: %w", err)
	}
	p := map[string]uint64{}
	for rows.Next() {
		var e string
		var q int64
		if err := rows.Scan(&e, &q); err != nil {
			rows.Close()
			return nil, err
		}
		p[e] = uint64(q)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("stats: postgres sink: load progress: %w", err)
	}
	return p, nil
}

// MetricQuery selects one app's metric over a time range.
type MetricQuery struct {
	App, Name string
	// From is inclusive, To exclusive.
	From, To time.Time
	// Step is the width of the buckets points are summarised in. Default
	// one minute.
	Step time.Duration
}

// Bucket summarises the points of one step.
type Bucket struct {
	Start              time.Time
	Count              int64
	Sum, Min, Max, Avg float64
}

// Metric returns q's buckets, oldest first; steps with no point are
// absent.
func (s *PostgresSink) Metric(ctx context.Context, q MetricQuery) ([]Bucket, error) {
	if q.Step <= 0 {
		q.Step = time.Minute
	}
	if err := s.Migrate(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT date_bin($1::interval, time, 'epoch'::timestamptz) AS b,
			count(*), sum(value), min(value), max(value), avg(value)
		FROM stats_points WHERE app = $2 AND name = $3 AND time >= $4 AND time < $5
		GROUP BY b ORDER BY b`, q.Step, q.App, q.Name, q.From, q.To)
	if err != nil {
		return nil, fmt.Errorf("stats: metric %s of %s: %w", q.Name, q.App, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Bucket, error) {
		var b Bucket
		err := r.Scan(&b.Start, &b.Count, &b.Sum, &b.Min, &b.Max, &b.Avg)
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("stats: metric %s of %s: %w", q.Name, q.App, err)
	}
	return out, nil
}

// UsageHour is one app's usage in one hour (UTC), for billing.
type UsageHour struct {
	App             string
	Hour            time.Time
	CPUSeconds      float64
	PeakMemoryBytes int64
	Requests        int64
}

// Usage returns the hourly roll-ups of app (every app if empty) for hours
// starting in [from, to), by app and hour.
func (s *PostgresSink) Usage(ctx context.Context, app string, from, to time.Time) ([]UsageHour, error) {
	if err := s.Migrate(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT app, hour, cpu_seconds, peak_memory_bytes, requests FROM stats_usage_hourly
		WHERE ($1 = '' OR app = $1) AND hour >= $2 AND hour < $3 ORDER BY app, hour`, app, from, to)
	if err != nil {
		return nil, fmt.Errorf("stats: usage of %q: %w", app, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (UsageHour, error) {
		var u UsageHour
		err := r.Scan(&u.App, &u.Hour, &u.CPUSeconds, &u.PeakMemoryBytes, &u.Requests)
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("stats: usage of %q: %w", app, err)
	}
	return out, nil
}
