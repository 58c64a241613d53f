// Command statsd is paaskit's stats collector: emitters on every node push
// metrics and log lines to it over ZeroMQ (PUSH/PULL, signed), it journals
// them and acknowledges them, and writes them to chunked log files per
// app, and, when their addresses are given, to PostgreSQL (metrics and
// usage roll-ups for billing) and Redis streams (live tails). It serves the
// platform's queries over HTTP.
//
//	statsd [flags]
//	curl http://127.0.0.1:8091/logs/hello?n=20       # the last lines
//	curl http://127.0.0.1:8091/logs/hello?follow=1   # and then new ones
//	curl http://127.0.0.1:8091/metrics               # Prometheus
//	curl 'http://127.0.0.1:8091/usage?app=hello'     # with -postgres
//
// On embedded defaults it needs nothing but a directory: logs go to files
// only. The HMAC secret is read from PAASKIT_STATS_SECRET (a public demo
// secret if unset, with a warning).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/stats"
	"github.com/paaskit/paaskit/zmqloop"
)

// DemoSecret is the HMAC secret when PAASKIT_STATS_SECRET is unset.
const DemoSecret = "paaskit-demo-stats-secret-change-me"

func main() { os.Exit(run(context.Background(), os.Args[1:], os.Stderr, false)) }

type options struct {
	bind, ack, dir, http, postgres, redis, keyID string
}

// run is the whole program; noSignals is for tests, which stop it with ctx.
func run(ctx context.Context, args []string, stderr io.Writer, noSignals bool) int {
	fs := flag.NewFlagSet("statsd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.bind, "bind", "tcp://127.0.0.1:5601", "PULL endpoint emitters push to")
	fs.StringVar(&o.ack, "ack", "tcp://127.0.0.1:5602", "endpoint emitters ask for acknowledgements")
	fs.StringVar(&o.dir, "dir", filepath.Join(os.TempDir(), "paaskit-statsd"), "state directory: journal, log files")
	fs.StringVar(&o.http, "http", "127.0.0.1:8091", "address of the query endpoint (logs, metrics, usage); empty: none")
	fs.StringVar(&o.postgres, "postgres", "", "PostgreSQL URL for metrics and usage (default: none)")
	fs.StringVar(&o.redis, "redis", "", "Redis host:port for live-tail streams (default: none)")
	fs.StringVar(&o.keyID, "key-id", "k1", "id of the HMAC key")
	lc := daemon.LogFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "statsd: no arguments are taken; see -help")
		return 2
	}
	lc.Name, lc.Stderr = "statsd", stderr
	log, closeLog, err := daemon.NewLogger(*lc)
	if err != nil {
		fmt.Fprintln(stderr, "statsd:", err)
		return 2
	}
	defer closeLog()
	d, cleanup, err := assemble(o, log, noSignals)
	if err != nil {
		log.Error("statsd: cannot start", "err", err)
		return 1
	}
	defer cleanup()
	if err := d.Run(ctx); err != nil {
		return 1
	}
	return 0
}

// codec makes the codec from PAASKIT_STATS_SECRET (the demo secret if unset,
// with a warning).
func codec(keyID string, log *slog.Logger) (*zmqloop.Codec, error) {
	secret := os.Getenv("PAASKIT_STATS_SECRET")
	if secret == "" {
		log.Warn("statsd: PAASKIT_STATS_SECRET is not set; using the public demo secret")
		secret = DemoSecret
	}
	ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: keyID, Secret: []byte(secret)})
	if err != nil {
		return nil, err
	}
	return zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
}

func assemble(o options, log *slog.Logger, noSignals bool) (*daemon.Daemon, func(), error) {
	c, err := codec(o.keyID, log)
	if err != nil {
		return nil, nil, err
	}
	files, err := stats.NewFileSink(stats.FileSinkConfig{Dir: filepath.Join(o.dir, "logs"), Logger: log})
	if err != nil {
		return nil, nil, err
	}
	closers := []func(){func() { files.Close() }}
	cleanup := func() {
		for _, f := range closers {
			f()
		}
	}
	q := stats.QueryConfig{Files: files}
	sinks := []stats.Sink{files}
	if o.postgres != "" {
		pg, err := stats.NewPostgresSink(stats.PostgresConfig{URL: o.postgres, Logger: log})
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		closers = append(closers, pg.Close)
		sinks, q.Postgres = append(sinks, pg), pg
	}
	if o.redis != "" {
		rs, err := stats.NewRedisSink(stats.RedisConfig{Addr: o.redis})
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		closers = append(closers, func() { rs.Close() })
		sinks, q.Redis = append(sinks, rs), rs
	}
	col, err := stats.NewCollector(stats.CollectorConfig{Bind: []string{o.bind}, AckBind: []string{o.ack}, Codec: c,
		Dir: filepath.Join(o.dir, "collector"), Sinks: sinks, Logger: log})
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	q.Collector = col
	d, err := daemon.New(daemon.Config{Name: "statsd", Logger: log, NoSignals: noSignals})
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	if err := d.Add("collector", col.Run); err != nil {
		cleanup()
		return nil, nil, err
	}
	if o.http != "" {
		l, err := net.Listen("tcp", o.http)
		if err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("listen on %s: %w", o.http, err)
		}
		srv := &http.Server{Handler: stats.NewQueryHandler(q), ReadHeaderTimeout: 10 * time.Second}
		if err := d.Add("http", func(ctx context.Context) error { return serveHTTP(ctx, srv, l) }); err != nil {
			l.Close()
			cleanup()
			return nil, nil, err
		}
	}
	return d, cleanup, nil
}

func serveHTTP(ctx context.Context, srv *http.Server, l net.Listener) error {
	// Requests live in ctx, so a follower ends when statsd stops.
	srv.BaseContext = func(net.Listener) context.Context { return ctx }
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	<-errc
	return nil
}
