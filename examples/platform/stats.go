package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/runner"
	"github.com/paaskit/paaskit/stats"
	"github.com/paaskit/paaskit/zmqloop"
)

// platformStats is the platform's stats: a collector writing chunked log
// files under <state>/stats (embedded defaults: no PostgreSQL or Redis),
// and per runner node an emitter that the node's output goes to and a
// meter fed from its status. They speak over ipc:// sockets, signed with a
// key made at start (nothing outside this process talks to them).
type platformStats struct {
	dir       string
	codec     *zmqloop.Codec
	pull, ack string
	files     *stats.FileSink
	col       *stats.Collector
	emitters  map[string]*stats.Emitter
	log       *slog.Logger
}

// usageEvery is how often the runners' status is turned into usage.
const usageEvery = 10 * time.Second

func newPlatformStats(state string, log *slog.Logger) (*platformStats, error) {
	dir := filepath.Join(state, "stats")
	ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: "platform", Secret: []byte(rand.Text())})
	if err != nil {
		return nil, err
	}
	codec, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	if err != nil {
		return nil, err
	}
	s := &platformStats{dir: dir, codec: codec, pull: "ipc://" + filepath.Join(dir, "pull.ipc"),
		ack: "ipc://" + filepath.Join(dir, "ack.ipc"), emitters: map[string]*stats.Emitter{}, log: log}
	if s.files, err = stats.NewFileSink(stats.FileSinkConfig{Dir: filepath.Join(dir, "logs"), Logger: log}); err != nil {
		return nil, err
	}
	s.col, err = stats.NewCollector(stats.CollectorConfig{Bind: []string{s.pull}, AckBind: []string{s.ack}, Codec: codec,
		Dir: filepath.Join(dir, "collector"), Sinks: []stats.Sink{s.files}, Logger: log})
	if err != nil {
		s.files.Close()
		return nil, err
	}
	return s, nil
}

// sink is node's runner.Sink: the line goes to the node's emitter, whose
// LogAt never fails (it spools when it must), so the runner drops nothing.
func (s *platformStats) sink(node string) (runner.Sink, error) {
	e, err := stats.NewEmitter(stats.EmitterConfig{Collector: []string{s.pull}, Ack: []string{s.ack}, Codec: s.codec,
		SpoolDir: filepath.Join(s.dir, "spool-"+node), Name: node, Logger: s.log})
	if err != nil {
		return nil, fmt.Errorf("stats emitter for %s: %w", node, err)
	}
	s.emitters[node] = e
	return runner.SinkFunc(func(l *runner.Line) error {
		e.LogAt(stats.Tags{App: l.App, Instance: l.Instance, Stream: string(l.Stream)}, l.Time, l.Text, l.Truncated)
		return nil
	}), nil
}

// add runs the collector, each node's emitter and its usage meter as the
// daemon's loops. runners[i] is node ids[i].
func (s *platformStats) add(d *daemon.Daemon, ids []string, runners []*runner.Runner) error {
	if err := d.Add("stats-collector", s.col.Run); err != nil {
		return err
	}
	for i, id := range ids {
		e, r := s.emitters[id], runners[i]
		if err := d.Add("stats-"+id, func(ctx context.Context) error {
			err := e.Run(ctx)
			if cerr := e.Close(); err == nil {
				err = cerr
			}
			return err
		}); err != nil {
			return err
		}
		meter := stats.NewUsageMeter(e)
		if err := d.Add("usage-"+id, func(ctx context.Context) error { return meterUsage(ctx, r, meter) }); err != nil {
			return err
		}
	}
	return nil
}

// meterUsage feeds the runner's per-app CPU time, requests and peak
// memory to the meter every usageEvery.
func meterUsage(ctx context.Context, r *runner.Runner, m *stats.UsageMeter) error {
	t := time.NewTicker(usageEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			observeUsage(r, m, now)
		}
	}
}

// observeUsage gives the meter one report of r's status taken at now.
func observeUsage(r *runner.Runner, m *stats.UsageMeter, now time.Time) {
	st := r.Status()
	apps := make([]stats.AppUsage, 0, len(st.Apps))
	for _, a := range st.Apps {
		u := stats.AppUsage{App: a.Name, CPU: a.CPU, Requests: a.Requests}
		if a.Instance != nil {
			u.PeakMemoryBytes = a.Instance.PeakMem
		}
		apps = append(apps, u)
	}
	m.Observe(now, apps)
}

// handler serves the stats queries (logs, Prometheus metrics, status)
// under the admin page's /stats/.
func (s *platformStats) handler() http.Handler {
	return http.StripPrefix("/stats", stats.NewQueryHandler(stats.QueryConfig{Collector: s.col, Files: s.files}))
}
