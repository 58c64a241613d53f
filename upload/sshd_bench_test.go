package upload

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/pyindex"
	"github.com/paaskit/paaskit/upload/pyinstall"
)

// BenchmarkGitPushWarm measures `git push` of a small app whose
// requirements.txt has the installer benchmark's 15 requirements (22
// packages), all already in the wheel cache, from the push starting to the
// client's exit with the new image built, activated and recorded. The
// index answers every request after UPLOAD_BENCH_LATENCY (default 100ms,
// the installer benchmark's realistic index). The bar: under 3 s.
func BenchmarkGitPushWarm(b *testing.B) {
	latency := 100 * time.Millisecond
	if v := os.Getenv("UPLOAD_BENCH_LATENCY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		latency = d
	}
	dists, lines := pyindex.BenchSet(200 * time.Millisecond)
	ix, err := pyindex.New(dists)
	if err != nil {
		b.Fatal(err)
	}
	idx, err := pyindex.Serve(ix, pyindex.ServerConfig{Latency: latency, Metadata: true})
	if err != nil {
		b.Fatal(err)
	}
	defer idx.Close()
	e := newTestEnv(b, envOptions{installer: &pyinstall.Config{IndexURL: idx.URL(), CacheDir: filepath.Join(b.TempDir(), "cache")}})
	work := gitRepo(b, filepath.Join(e.dir, "src"), map[string]string{
		"app.py":           "print('bench')\n",
		"requirements.txt": strings.Join(lines, "\n") + "\n",
	})
	// The first push fills the cache.
	if out, code := e.push("alice", work, "blog"); code != 0 {
		b.Fatalf("warm-up push: exit %d: %s", code, out)
	}
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		commitFiles(b, work, map[string]string{"app.py": fmt.Sprintf("print(%d)\n", i)})
		b.StartTimer()
		t0 := time.Now()
		out, code := e.push("alice", work, "blog")
		total += time.Since(t0)
		if code != 0 || !strings.Contains(out, "blog is live") || strings.Contains(out, "built      ") {
			b.Fatalf("push %d: exit %d (or an sdist was built again): %s", i, code, out)
		}
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/push")
}
