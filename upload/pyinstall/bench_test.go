package pyinstall

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/pyindex"
)

// benchIndex serves the benchmark project: 15 requirements, 22 packages,
// 12 sdists building in 1 s each, 100 ms per request (the issue's
// conditions; bench/sections/50-installer.sh compares the same with pip).
func benchIndex(b *testing.B) (*pyindex.Server, *Requirements) {
	b.Helper()
	dists, lines := pyindex.BenchSet(time.Second)
	ix, err := pyindex.New(dists)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := pyindex.Serve(ix, pyindex.ServerConfig{Latency: 100 * time.Millisecond, Metadata: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	var reqs Requirements
	for _, l := range lines {
		r, err := ParseRequirement(l)
		if err != nil {
			b.Fatal(err)
		}
		reqs.Requirements = append(reqs.Requirements, r)
	}
	return srv, &reqs
}

func benchInstaller(b *testing.B, srv *pyindex.Server, cache string) *Installer {
	b.Helper()
	in, err := New(Config{IndexURL: srv.URL(), CacheDir: cache, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	return in
}

// BenchmarkInstallCold installs into a new venv with an empty cache.
func BenchmarkInstallCold(b *testing.B) {
	srv, reqs := benchIndex(b)
	dir := b.TempDir()
	for i := 0; i < b.N; i++ {
		in := benchInstaller(b, srv, filepath.Join(dir, fmt.Sprintf("cache-%d", i)))
		if _, err := in.Install(context.Background(), reqs, filepath.Join(dir, fmt.Sprintf("venv-%d", i)), InstallOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInstallWarm installs into a new venv from a filled cache, with a
// new Installer each time (as a new process would).
func BenchmarkInstallWarm(b *testing.B) {
	srv, reqs := benchIndex(b)
	dir := b.TempDir()
	cache := filepath.Join(dir, "cache")
	if _, err := benchInstaller(b, srv, cache).Install(context.Background(), reqs, filepath.Join(dir, "first"), InstallOptions{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		in := benchInstaller(b, srv, cache)
		if _, err := in.Install(context.Background(), reqs, filepath.Join(dir, fmt.Sprintf("venv-%d", i)), InstallOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
