// Command installbench compares paaskit's installer with plain serial
// `pip install -r` on the same local index in the same run, and prints
// bench/compare.sh rows on stdout (everything else goes to stderr).
//
// The project is pyindex.BenchSet: 15 requirements resolving to 22
// distributions, 12 of them sdists whose builds take -build each, served
// with -latency per request.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"time"

	"github.com/paaskit/paaskit/internal/pyindex"
	"github.com/paaskit/paaskit/upload/pyinstall"
)

func main() {
	latency := flag.Duration("latency", 100*time.Millisecond, "added latency per index request")
	build := flag.Duration("build", time.Second, "time each sdist build takes")
	workers := flag.Int("workers", 0, "installer workers (0: the default)")
	dynamic := flag.Bool("dynamic", false, "sdists declare dynamic dependencies (Metadata-Version 2.1), so both installers must build them to resolve")
	flag.Parse()
	if err := run(*latency, *build, *workers, *dynamic); err != nil {
		fmt.Fprintln(os.Stderr, "installbench:", err)
		os.Exit(1)
	}
}

func run(latency, build time.Duration, workers int, dynamic bool) error {
	ctx := context.Background()
	dists, reqs := pyindex.BenchSet(build)
	metaKind := "static PEP 643 sdist metadata"
	if dynamic {
		metaKind = "dynamic sdist metadata (built to resolve)"
		for i := range dists {
			dists[i].DynamicMetadata = true
		}
	}
	ix, err := pyindex.New(dists)
	if err != nil {
		return err
	}
	srv, err := pyindex.Serve(ix, pyindex.ServerConfig{Latency: latency, Metadata: true})
	if err != nil {
		return err
	}
	defer srv.Close()
	work, err := os.MkdirTemp("", "installbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	reqFile := filepath.Join(work, "requirements.txt")
	if err := os.WriteFile(reqFile, []byte(strings.Join(reqs, "\n")+"\n"), 0o644); err != nil {
		return err
	}

	// Serial pip, the peer: a fresh venv, no cache.
	pip, err := pyindex.NewPip(ctx, filepath.Join(work, "pip-venv"))
	if err != nil {
		return err
	}
	t0 := time.Now()
	if out, err := pip.Install(ctx, srv.URL(), "-r", reqFile); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	pipTime := time.Since(t0)
	pipSet, err := pyindex.Installed(pip.Venv)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "pip install -r: %v, %d packages\n", pipTime.Round(time.Millisecond), len(pipSet))

	parsed, err := pyinstall.ParseRequirementsFile(reqFile)
	if err != nil {
		return err
	}
	cache := filepath.Join(work, "cache")
	newInstaller := func() (*pyinstall.Installer, error) {
		return pyinstall.New(pyinstall.Config{IndexURL: srv.URL(), CacheDir: cache, Workers: workers,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}
	// Cold: empty cache (the interpreter probe is not cached either).
	in, err := newInstaller()
	if err != nil {
		return err
	}
	t0 = time.Now()
	res, err := in.Install(ctx, parsed, filepath.Join(work, "cold-venv"), pyinstall.InstallOptions{})
	if err != nil {
		return err
	}
	cold := time.Since(t0)
	coldSet, err := pyindex.Installed(filepath.Join(work, "cold-venv"))
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "paaskit cold: %v (resolve %v, built %d, downloaded %d)\n", cold.Round(time.Millisecond), res.Resolve.Round(time.Millisecond), res.Built, res.Downloaded)

	// Warm: a new installer (as a new process would be) on the same cache,
	// into a new venv.
	in, err = newInstaller()
	if err != nil {
		return err
	}
	t0 = time.Now()
	res, err = in.Install(ctx, parsed, filepath.Join(work, "warm-venv"), pyinstall.InstallOptions{})
	if err != nil {
		return err
	}
	warm := time.Since(t0)
	warmSet, err := pyindex.Installed(filepath.Join(work, "warm-venv"))
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "paaskit warm: %v (resolve %v, built %d, cache hits %d)\n", warm.Round(time.Millisecond), res.Resolve.Round(time.Millisecond), res.Built, res.CacheHits)

	cond := fmt.Sprintf("15 reqs -> %d pkgs, 12 sdists building %v each, %s, %v/request, %d cores", len(pipSet), build, metaKind, latency, runtime.NumCPU())
	fmt.Printf("row\t%s\t%s\t%.2fx\t%s\n", "installer cold (empty cache), "+cold.Round(10*time.Millisecond).String(),
		"pip install -r (serial), "+pipTime.Round(10*time.Millisecond).String(), pipTime.Seconds()/cold.Seconds(), cond)
	fmt.Printf("row\t%s\t%s\t%.2fx\t%s\n", "installer warm cache, "+warm.Round(10*time.Millisecond).String(),
		"pip install -r (serial), "+pipTime.Round(10*time.Millisecond).String(), pipTime.Seconds()/warm.Seconds(), cond)
	same := reflect.DeepEqual(pipSet, coldSet) && reflect.DeepEqual(pipSet, warmSet)
	verdict := "identical"
	if !same {
		verdict = "DIFFERENT"
		fmt.Fprintf(os.Stderr, "pip:  %v\ncold: %v\nwarm: %v\n", pipSet, coldSet, warmSet)
	}
	fmt.Printf("row\t%s\t%s\t%s\t%s\n", "installed package set and versions", "pip install -r", verdict, fmt.Sprintf("%d packages compared by name and version", len(pipSet)))
	if !same {
		return fmt.Errorf("installed sets differ")
	}
	return nil
}
