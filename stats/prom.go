package stats

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// aggregate keeps, per app and metric, what the Prometheus endpoint
// shows: counters summed, gauges' last values, timings' sums and counts,
// usage summed (peak memory: the peak).
type aggregate struct {
	mu     sync.Mutex
	series map[seriesKey]*series
}

type seriesKey struct {
	kind Kind
	app  string
	name string
}

type series struct {
	sum   float64
	count uint64
}

func newAggregate() *aggregate { return &aggregate{series: map[seriesKey]*series{}} }

func (a *aggregate) add(r *Record) {
	if r.Kind == KindLog {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	k := seriesKey{r.Kind, r.App, r.Name}
	s := a.series[k]
	if s == nil {
		s = &series{}
		a.series[k] = s
	}
	switch {
	case r.Kind == KindGauge:
		s.sum = r.Value
	case r.Kind == KindUsage && r.Name == UsagePeakMemory:
		s.sum = max(s.sum, r.Value)
	default:
		s.sum += r.Value
	}
	s.count++
}

// promName is a metric's exposition name: paaskit_app_<name> plus the unit
// suffix its kind calls for (a name that has it already keeps it).
func promName(k Kind, name string) (string, string) {
	n := "paaskit_app_" + name
	switch k {
	case KindCounter:
		return strings.TrimSuffix(n, "_total") + "_total", "counter"
	case KindTiming:
		return strings.TrimSuffix(n, "_seconds") + "_seconds", "summary"
	case KindUsage:
		switch name {
		case UsageCPUSeconds:
			return "paaskit_usage_cpu_seconds_total", "counter"
		case UsageRequests:
			return "paaskit_usage_requests_total", "counter"
		default:
			return "paaskit_usage_peak_memory_bytes", "gauge"
		}
	}
	return n, "gauge"
}

// WritePrometheus writes the Prometheus text exposition (format 0.0.4) of
// the apps' metrics as received since the collector started, and of the
// collector's own counters.
func (c *Collector) WritePrometheus(w io.Writer) error {
	type line struct {
		name, typ, app string
		s              series
		timing         bool
	}
	c.agg.mu.Lock()
	lines := make([]line, 0, len(c.agg.series))
	for k, s := range c.agg.series {
		n, typ := promName(k.kind, k.name)
		lines = append(lines, line{n, typ, k.app, *s, k.kind == KindTiming})
	}
	c.agg.mu.Unlock()
	sort.Slice(lines, func(i, j int) bool {
		if lines[i].name != lines[j].name {
			return lines[i].name < lines[j].name
		}
		return lines[i].app < lines[j].app
	})
	var b []byte
	prev := ""
	for _, l := range lines {
		if l.name != prev {
			b = fmt.Appendf(b, "# TYPE %s %s\n", l.name, l.typ)
			prev = l.name
		}
		lbl := `{app="` + l.app + `"}` // app names need no escaping
		if l.timing {
			b = fmt.Appendf(b, "%s_sum%s %s\n%s_count%s %d\n", l.name, lbl, fmtFloat(l.s.sum), l.name, lbl, l.s.count)
		} else {
			b = fmt.Appendf(b, "%s%s %s\n", l.name, lbl, fmtFloat(l.s.sum))
		}
	}
	st := c.Stats()
	own := []struct {
		name, help string
		v          uint64
	}{
		{"paaskit_stats_records_accepted_total", "Records journaled.", st.Accepted},
		{"paaskit_stats_records_duplicate_total", "Resent records skipped.", st.Duplicates},
		{"paaskit_stats_records_gap_total", "Records refused after a gap (resent by their emitter).", st.Gaps},
		{"paaskit_stats_batches_malformed_total", "Authentic batches dropped as malformed.", st.Malformed},
		{"paaskit_stats_messages_rejected_total", "Messages refused by the envelope checks (unsigned, forged, stale, replayed, oversized).", st.Rejected},
		{"paaskit_stats_lines_truncated_total", "Log lines cut to the size bound by the collector.", st.Truncated},
		{"paaskit_stats_journal_errors_total", "Failed journal writes.", st.JournalErrors},
	}
	for _, o := range own {
		b = fmt.Appendf(b, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", o.name, o.help, o.name, o.name, o.v)
	}
	b = append(b, "# HELP paaskit_stats_sink_written_total Records written by each sink.\n# TYPE paaskit_stats_sink_written_total counter\n"...)
	for _, s := range st.Sinks {
		b = fmt.Appendf(b, "paaskit_stats_sink_written_total{sink=%q} %d\n", s.Name, s.Written)
	}
	b = append(b, "# HELP paaskit_stats_sink_errors_total Failed writes of each sink.\n# TYPE paaskit_stats_sink_errors_total counter\n"...)
	for _, s := range st.Sinks {
		b = fmt.Appendf(b, "paaskit_stats_sink_errors_total{sink=%q} %d\n", s.Name, s.Errors)
	}
	b = append(b, "# HELP paaskit_stats_sink_backlog_records Journaled records each sink has yet to write.\n# TYPE paaskit_stats_sink_backlog_records gauge\n"...)
	for _, s := range st.Sinks {
		b = fmt.Appendf(b, "paaskit_stats_sink_backlog_records{sink=%q} %d\n", s.Name, s.Backlog)
	}
	_, err := w.Write(b)
	return err
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// PrometheusHandler serves WritePrometheus for scraping.
func (c *Collector) PrometheusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_ = c.WritePrometheus(w)
	})
}
