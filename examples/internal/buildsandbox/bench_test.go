package buildsandbox_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/paaskit/paaskit/examples/internal/buildsandbox"
	"github.com/paaskit/paaskit/internal/pyindex"
	"github.com/paaskit/paaskit/upload/pyinstall"
)

// BenchmarkInstallColdSandboxed measures what the build sandbox costs a
// cold install: the installer's benchmark project (15 requirements, 22
// packages, 12 sdists with Metadata-Version 2.1 and 1 s builds, 100 ms per
// request) with an empty cache, builds as plain processes ("plain-s") and
// in the runner's build sandbox ("sandboxed-s"), alternating in one loop.
func BenchmarkInstallColdSandboxed(b *testing.B) {
	r, bridge := newRunner(b)
	dists, lines := pyindex.BenchSet(time.Second)
	for i := range dists {
		dists[i].DynamicMetadata = true
	}
	ix, err := pyindex.New(dists)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := pyindex.Serve(ix, pyindex.ServerConfig{Latency: 100 * time.Millisecond, Addr: "0.0.0.0:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	sb, err := buildsandbox.New(buildsandbox.Config{Runner: r, StateDir: b.TempDir(), Allow: []string{fmt.Sprintf("%s:%d", bridge, srv.Port())}})
	if err != nil {
		b.Fatal(err)
	}
	reqs := &pyinstall.Requirements{}
	for _, l := range lines {
		rq, err := pyinstall.ParseRequirement(l)
		if err != nil {
			b.Fatal(err)
		}
		reqs.Requirements = append(reqs.Requirements, rq)
	}
	dir := b.TempDir()
	var plain, boxed time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, sandboxed := range []bool{false, true} {
			cfg := pyinstall.Config{IndexURL: srv.URL(), CacheDir: filepath.Join(dir, fmt.Sprintf("cache-%d-%t", i, sandboxed)),
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
			if sandboxed {
				sb.Apply(&cfg)
			}
			in, err := pyinstall.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			if _, err := in.Install(context.Background(), reqs, filepath.Join(dir, fmt.Sprintf("venv-%d-%t", i, sandboxed)), pyinstall.InstallOptions{}); err != nil {
				b.Fatal(err)
			}
			if sandboxed {
				boxed += time.Since(t0)
			} else {
				plain += time.Since(t0)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(plain.Seconds()/float64(b.N), "plain-s")
	b.ReportMetric(boxed.Seconds()/float64(b.N), "sandboxed-s")
	b.ReportMetric(boxed.Seconds()/plain.Seconds(), "sandboxed/plain")
}
