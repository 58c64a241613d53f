package stats

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestPrometheusExpositionParsesWithConventionalNames(t *testing.T) {
	g := newRig(t)
	sink := newMemSink("mem")
	c := g.collector(t, sink)
	running(t, "collector", c.Run)
	e := g.emitter(t, nil)
	running(t, "emitter", e.Run)
	web, api := Tags{App: "web", Instance: 1}, Tags{App: "api"}
	for range 5 {
		e.Count(web, "requests", 1)
	}
	e.Count(api, "errors_total", 2)
	e.Gauge(web, "memory_bytes", 1<<20)
	e.Gauge(web, "memory_bytes", 3<<20)
	e.Timing(web, "request_duration", 250*time.Millisecond)
	e.Timing(web, "request_duration", 750*time.Millisecond)
	NewUsageMeter(e).Observe(time.Now(), []AppUsage{{App: "web", CPU: 1500 * time.Millisecond, PeakMemoryBytes: 5 << 20, Requests: 9}})
	e.Log(Tags{App: "web", Stream: "stdout"}, []byte("not a metric"))
	eventually(t, "14 records", func() bool { return sink.count() == 14 })

	srv := httptest.NewServer(c.PrometheusHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("content type %q", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the exposition does not parse: %v", err)
	}
	value := func(name, app string) (float64, dto.MetricType) {
		t.Helper()
		f := fams[name]
		if f == nil {
			t.Fatalf("no family %s; have %v", name, keys(fams))
		}
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == "app" && l.GetValue() == app {
					switch f.GetType() {
					case dto.MetricType_COUNTER:
						return m.Counter.GetValue(), f.GetType()
					case dto.MetricType_GAUGE:
						return m.Gauge.GetValue(), f.GetType()
					case dto.MetricType_SUMMARY:
						return m.Summary.GetSampleSum(), f.GetType()
					}
				}
			}
		}
		t.Fatalf("no %s for app %s", name, app)
		return 0, 0
	}
	check := func(name, app string, want float64, typ dto.MetricType) {
		t.Helper()
		if v, ty := value(name, app); v != want || ty != typ {
			t.Fatalf("%s{app=%q} = %v (%v), want %v (%v)", name, app, v, ty, want, typ)
		}
	}
	check("paaskit_app_requests_total", "web", 5, dto.MetricType_COUNTER)
	check("paaskit_app_errors_total", "api", 2, dto.MetricType_COUNTER) // no _total_total
	check("paaskit_app_memory_bytes", "web", 3<<20, dto.MetricType_GAUGE)
	check("paaskit_app_request_duration_seconds", "web", 1, dto.MetricType_SUMMARY)
	if n := fams["paaskit_app_request_duration_seconds"].Metric[0].Summary.GetSampleCount(); n != 2 {
		t.Fatalf("timing count %d", n)
	}
	check("paaskit_usage_cpu_seconds_total", "web", 1.5, dto.MetricType_COUNTER)
	check("paaskit_usage_requests_total", "web", 9, dto.MetricType_COUNTER)
	check("paaskit_usage_peak_memory_bytes", "web", 5<<20, dto.MetricType_GAUGE)
	if v := fams["paaskit_stats_records_accepted_total"].Metric[0].Counter.GetValue(); v != 14 {
		t.Fatalf("accepted %v", v)
	}
	for name, f := range fams {
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			if !strings.HasSuffix(name, "_total") {
				t.Errorf("counter %s does not end in _total", name)
			}
		case dto.MetricType_SUMMARY:
			if !strings.HasSuffix(name, "_seconds") {
				t.Errorf("summary %s is not in seconds", name)
			}
		}
	}
}

func keys[M ~map[string]V, V any](m M) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}
