package stats

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// QueryConfig says what a query handler serves; nil members leave their
// routes answering 404.
type QueryConfig struct {
	Collector *Collector       // GET /metrics (Prometheus), GET /status
	Files     *FileSink        // GET /logs/{app}
	Postgres  *PostgresSink    // GET /query, GET /usage
	Redis     *RedisSink       // named in /status only
	Now       func() time.Time // default time.Now
}

// NewQueryHandler returns the platform's read side over HTTP:
//
//	GET /logs/{app}?n=100            the last n lines (default 100), text
//	GET /logs/{app}?since=RFC3339    lines stamped at or after a time (limit=N)
//	GET /logs/{app}?follow=1&n=10    the last n lines, then new ones as written
//	GET /query?app=A&name=M&from=RFC3339&to=RFC3339&step=1m   buckets, JSON
//	GET /usage?app=A&from=RFC3339&to=RFC3339                  hourly usage, JSON
//	GET /metrics                     Prometheus text exposition
//	GET /status                      the collector's counters, JSON
//
// Log lines are written as the files hold them (time, instance, stream,
// '|', escaped text). from and to default to the last hour.
func NewQueryHandler(cfg QueryConfig) http.Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	mux := http.NewServeMux()
	if cfg.Collector != nil {
		mux.Handle("GET /metrics", cfg.Collector.PrometheusHandler())
		mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, cfg.Collector.Stats()) })
	}
	if cfg.Files != nil {
		mux.HandleFunc("GET /logs/{app}", func(w http.ResponseWriter, r *http.Request) { serveLogs(cfg.Files, w, r) })
	}
	if cfg.Postgres != nil {
		mux.HandleFunc("GET /query", func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			from, to, err := timeRange(q.Get("from"), q.Get("to"), cfg.Now())
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			step := time.Minute
			if s := q.Get("step"); s != "" {
				if step, err = time.ParseDuration(s); err != nil || step <= 0 {
					http.Error(w, fmt.Sprintf("bad step %q", s), http.StatusBadRequest)
					return
				}
			}
			if !validApp(q.Get("app")) || !validMetricName(q.Get("name")) {
				http.Error(w, "app and name are required and must be valid names", http.StatusBadRequest)
				return
			}
			b, err := cfg.Postgres.Metric(r.Context(), MetricQuery{App: q.Get("app"), Name: q.Get("name"), From: from, To: to, Step: step})
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			writeJSON(w, b)
		})
		mux.HandleFunc("GET /usage", func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			from, to, err := timeRange(q.Get("from"), q.Get("to"), cfg.Now())
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if a := q.Get("app"); a != "" && !validApp(a) {
				http.Error(w, fmt.Sprintf("bad app %q", a), http.StatusBadRequest)
				return
			}
			u, err := cfg.Postgres.Usage(r.Context(), q.Get("app"), from, to)
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			writeJSON(w, u)
		})
	}
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func timeRange(from, to string, now time.Time) (time.Time, time.Time, error) {
	f, t := now.Add(-time.Hour), now
	var err error
	if from != "" {
		if f, err = time.Parse(time.RFC3339Nano, from); err != nil {
			return f, t, fmt.Errorf("bad from %q: %w", from, err)
		}
	}
	if to != "" {
		if t, err = time.Parse(time.RFC3339Nano, to); err != nil {
			return f, t, fmt.Errorf("bad to %q: %w", to, err)
		}
	}
	return f, t, nil
}

func serveLogs(files *FileSink, w http.ResponseWriter, r *http.Request) {
	app := r.PathValue("app")
	if !validApp(app) {
		http.Error(w, fmt.Sprintf("bad app %q", app), http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	n := 100
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > 1_000_000 {
			http.Error(w, fmt.Sprintf("bad n %q", s), http.StatusBadRequest)
			return
		}
		n = v
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	var lt lineTime
	var buf []byte
	write := func(l LogLine) error {
		buf = appendLogLine(buf[:0], &lt, &Record{Time: l.Time, Tags: Tags{Instance: l.Instance, Stream: l.Stream}, Text: l.Text, Truncated: l.Truncated})
		_, err := w.Write(buf)
		return err
	}
	if q.Get("follow") != "" {
		fl, _ := w.(http.Flusher)
		_ = files.Follow(r.Context(), app, n, func(l LogLine) error {
			if err := write(l); err != nil {
				return err
			}
			if fl != nil {
				fl.Flush()
			}
			return nil
		})
		return
	}
	var lines []LogLine
	var err error
	if s := q.Get("since"); s != "" {
		t, perr := time.Parse(time.RFC3339Nano, s)
		if perr != nil {
			http.Error(w, fmt.Sprintf("bad since %q", s), http.StatusBadRequest)
			return
		}
		limit, _ := strconv.Atoi(q.Get("limit"))
		lines, err = files.Since(app, t, max(0, limit))
	} else {
		lines, err = files.Tail(app, n)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	for _, l := range lines {
		if write(l) != nil {
			return
		}
	}
}
