package stats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultStreamLen is the default RedisConfig.MaxLen.
const DefaultStreamLen = 10000

// RedisConfig configures a RedisSink. Zero values are the documented
// defaults.
type RedisConfig struct {
	// Addr is the server's host:port. Required.
	Addr string
	// Prefix starts every key. Default "paaskit:".
	Prefix string
	// MaxLen caps each stream, approximately (XADD MAXLEN ~). Default
	// DefaultStreamLen (10,000).
	MaxLen int64
}

// RedisSink appends records to Redis streams for live tails: an app's log
// lines to <prefix>log:<app>, its metric points and usage to
// <prefix>metric:<app>. Each entry's id is "<journal index>-0", so ids
// grow with the journal and a replayed record is refused by Redis as not
// newer than the stream's top: it is never added twice. Fields: ts (Unix
// nanoseconds), instance, stream and text (a log line), or kind, name and
// value.
type RedisSink struct {
	cfg RedisConfig
	rdb *redis.Client
}

// NewRedisSink validates cfg; it connects lazily.
func NewRedisSink(cfg RedisConfig) (*RedisSink, error) {
	if cfg.Addr == "" {
		return nil, errors.New("stats: new redis sink: Addr is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "paaskit:"
	}
	if cfg.MaxLen < 0 {
		return nil, errors.New("stats: new redis sink: negative MaxLen")
	}
	if cfg.MaxLen == 0 {
		cfg.MaxLen = DefaultStreamLen
	}
	rdb := redis.NewClient(&redis.Options{Addr: cfg.Addr, MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
	return &RedisSink{cfg: cfg, rdb: rdb}, nil
}

// Name is "redis".
func (s *RedisSink) Name() string { return "redis" }

// Close closes the connection.
func (s *RedisSink) Close() error { return s.rdb.Close() }

// LogStream is the key of app's log stream.
func (s *RedisSink) LogStream(app string) string { return s.cfg.Prefix + "log:" + app }

// MetricStream is the key of app's metric stream.
func (s *RedisSink) MetricStream(app string) string { return s.cfg.Prefix + "metric:" + app }

// Write appends the batch in one pipeline.
func (s *RedisSink) Write(ctx context.Context, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, 0, len(recs))
	for i := range recs {
		r := &recs[i]
		a := &redis.XAddArgs{MaxLen: s.cfg.MaxLen, Approx: true, ID: strconv.FormatUint(r.Index, 10) + "-0"}
		if r.Kind == KindLog {
			a.Stream = s.LogStream(r.App)
			a.Values = []any{"ts", r.Time.UnixNano(), "instance", r.Instance, "stream", r.Stream, "text", r.Text}
		} else {
			a.Stream = s.MetricStream(r.App)
			a.Values = []any{"ts", r.Time.UnixNano(), "instance", r.Instance, "kind", r.Kind.String(), "name", r.Name, "value", r.Value}
		}
		cmds = append(cmds, pipe.XAdd(ctx, a))
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range cmds {
		err := c.Err()
		if err == nil || isNotNewer(err) {
			continue
		}
		return fmt.Errorf("stats: redis sink: xadd record %d: %w", recs[i].Index, err)
	}
	return nil
}

// isNotNewer is Redis's refusal of an id at or below the stream's top: a
// record already added.
func isNotNewer(err error) bool {
	return strings.Contains(err.Error(), "equal or smaller than the target stream top item")
}
