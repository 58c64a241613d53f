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

type options struct {
	latency, build, maxAge time.Duration
	workers                int
	dynamic, pep658, json  bool
	git, pipWarm, pip      bool
	trace                  bool
}

func main() {
	var o options
	flag.DurationVar(&o.latency, "latency", 100*time.Millisecond, "added latency per index request")
	flag.DurationVar(&o.build, "build", time.Second, "time each sdist build (build_wheel) takes")
	flag.IntVar(&o.workers, "workers", 0, "installer workers (0: the default)")
	flag.BoolVar(&o.dynamic, "dynamic", false, "sdists carry Metadata-Version 2.1 PKG-INFO (dependencies dynamic), so both installers ask the PEP 517 metadata hook")
	flag.BoolVar(&o.pep658, "pep658", true, "the index serves PEP 658/714 metadata files for wheels")
	flag.BoolVar(&o.json, "json", false, "the index offers PEP 691 JSON pages (else PEP 503 HTML only)")
	flag.DurationVar(&o.maxAge, "maxage", 600*time.Second, "Cache-Control max-age of index pages (0: none)")
	flag.BoolVar(&o.git, "git", false, "one requirement (cli-helpers) comes from a local bare git repository (name @ git+file://…@main)")
	flag.BoolVar(&o.pipWarm, "pipwarm", true, "also measure pip with a warm cache (--cache-dir filled by a first pip run)")
	flag.BoolVar(&o.pip, "pip", true, "measure pip (false: only paaskit's installer, no comparison rows)")
	flag.BoolVar(&o.trace, "trace", false, "print the installer's progress events and debug log on stderr, with the time since the install started")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "installbench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	ctx := context.Background()
	dists, reqs := pyindex.BenchSet(o.build)
	var conds []string
	if o.dynamic {
		conds = append(conds, "Metadata-Version 2.1 sdists (cheap metadata hook)")
		for i := range dists {
			dists[i].DynamicMetadata = true
		}
	} else {
		conds = append(conds, "static PEP 643 sdist metadata")
	}
	if o.pep658 {
		conds = append(conds, "PEP 658 metadata files")
	} else {
		conds = append(conds, "no PEP 658")
	}
	if o.json {
		conds = append(conds, "PEP 691 JSON offered")
	} else {
		conds = append(conds, "PEP 503 HTML only")
	}
	if o.maxAge > 0 {
		conds = append(conds, fmt.Sprintf("pages max-age %v", o.maxAge))
	}
	work, err := os.MkdirTemp("", "installbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if o.git {
		for i, d := range dists {
			if d.Name != "cli-helpers" {
				continue
			}
			repo, err := pyindex.NewGitRepo(ctx, filepath.Join(work, "git", "cli-helpers.git"), d)
			if err != nil {
				return err
			}
			dists = append(dists[:i], dists[i+1:]...)
			for j, r := range reqs {
				if r == "cli-helpers" {
					reqs[j] = "cli-helpers @ git+" + repo.URL + "@main"
				}
			}
			conds = append(conds, "cli-helpers from git (file://, branch main)")
			break
		}
	}
	ix, err := pyindex.New(dists)
	if err != nil {
		return err
	}
	srv, err := pyindex.Serve(ix, pyindex.ServerConfig{Latency: o.latency, Metadata: o.pep658, JSON: o.json, MaxAge: o.maxAge})
	if err != nil {
		return err
	}
	defer srv.Close()
	reqFile := filepath.Join(work, "requirements.txt")
	if err := os.WriteFile(reqFile, []byte(strings.Join(reqs, "\n")+"\n"), 0o644); err != nil {
		return err
	}

	// Serial pip, the peer: a fresh venv, no cache.
	pipRun := func(venv, cache string) (time.Duration, []string, error) {
		pip, err := pyindex.NewPip(ctx, filepath.Join(work, venv))
		if err != nil {
			return 0, nil, err
		}
		pip.CacheDir = cache
		t0 := time.Now()
		if out, err := pip.Install(ctx, srv.URL(), "-r", reqFile); err != nil {
			return 0, nil, fmt.Errorf("%w: %s", err, out)
		}
		d := time.Since(t0)
		set, err := pyindex.Installed(pip.Venv)
		return d, set, err
	}
	var pipTime, pipWarm time.Duration
	var pipSet, pipWarmSet []string
	if o.pip {
		pipTime, pipSet, err = pipRun("pip-venv", "")
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "pip install -r --no-cache-dir: %v, %d packages\n", pipTime.Round(time.Millisecond), len(pipSet))
	}
	if o.pip && o.pipWarm {
		pipCache := filepath.Join(work, "pip-cache")
		fill, _, err := pipRun("pip-fill-venv", pipCache)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "pip install -r, empty --cache-dir (filling it): %v\n", fill.Round(time.Millisecond))
		pipWarm, pipWarmSet, err = pipRun("pip-warm-venv", pipCache)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "pip install -r, warm --cache-dir: %v\n", pipWarm.Round(time.Millisecond))
	}

	parsed, err := pyinstall.ParseRequirementsFile(reqFile)
	if err != nil {
		return err
	}
	cache := filepath.Join(work, "cache")
	var traceStart time.Time
	newInstaller := func() (*pyinstall.Installer, error) {
		cfg := pyinstall.Config{IndexURL: srv.URL(), CacheDir: cache, Workers: o.workers,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		if o.trace {
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug,
				ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
					if len(groups) == 0 && a.Key == slog.TimeKey {
						return slog.String("t", time.Since(traceStart).Round(time.Millisecond).String())
					}
					return a
				}}))
		}
		return pyinstall.New(cfg)
	}
	// Cold: empty cache (the interpreter probe is not cached either).
	in, err := newInstaller()
	if err != nil {
		return err
	}
	t0 := time.Now()
	traceStart = t0
	res, err := in.Install(ctx, parsed, filepath.Join(work, "cold-venv"), pyinstall.InstallOptions{})
	if err != nil {
		return err
	}
	cold := time.Since(t0)
	coldSet, err := pyindex.Installed(filepath.Join(work, "cold-venv"))
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "paaskit cold: %v (%+v)\n", cold.Round(time.Millisecond), summary(res))

	// Warm: a new installer (as a new process would be) on the same cache,
	// into a new venv.
	in, err = newInstaller()
	if err != nil {
		return err
	}
	reqsBefore := srv.Requests()
	t0 = time.Now()
	traceStart = t0
	res, err = in.Install(ctx, parsed, filepath.Join(work, "warm-venv"), pyinstall.InstallOptions{})
	if err != nil {
		return err
	}
	warm := time.Since(t0)
	warmRequests := srv.Requests() - reqsBefore
	warmSet, err := pyindex.Installed(filepath.Join(work, "warm-venv"))
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "paaskit warm: %v (%+v), %d index requests\n", warm.Round(time.Millisecond), summary(res), warmRequests)

	if !o.pip {
		return nil
	}
	cond := fmt.Sprintf("15 reqs -> %d pkgs, 12 sdists, build_wheel %v each, %s, %v/request, %d cores", len(pipSet), o.build, strings.Join(conds, ", "), o.latency, runtime.NumCPU())
	r10 := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
	fmt.Printf("row\t%s\t%s\t%.2fx\t%s\n", "installer cold (empty cache), "+r10(cold),
		"pip install -r (serial, --no-cache-dir), "+r10(pipTime), pipTime.Seconds()/cold.Seconds(), cond)
	fmt.Printf("row\t%s\t%s\t%.2fx\t%s\n", "installer warm cache, "+r10(warm),
		"pip install -r (serial, --no-cache-dir), "+r10(pipTime), pipTime.Seconds()/warm.Seconds(), cond)
	if o.pipWarm {
		fmt.Printf("row\t%s\t%s\t%.2fx\t%s\n", "installer warm cache, "+r10(warm),
			"pip install -r (serial, warm --cache-dir), "+r10(pipWarm), pipWarm.Seconds()/warm.Seconds(), cond)
	}
	same := reflect.DeepEqual(pipSet, coldSet) && reflect.DeepEqual(pipSet, warmSet) && (!o.pipWarm || reflect.DeepEqual(pipSet, pipWarmSet))
	verdict := "identical"
	if !same {
		verdict = "DIFFERENT"
		fmt.Fprintf(os.Stderr, "pip:  %v\npip warm: %v\ncold: %v\nwarm: %v\n", pipSet, pipWarmSet, coldSet, warmSet)
	}
	fmt.Printf("row\t%s\t%s\t%s\t%s\n", "installed package set and versions", "pip install -r (cold and warm)", verdict, fmt.Sprintf("%d packages compared by name and version", len(pipSet)))
	fmt.Printf("bar\t%s\t%d requests\t0 requests\t%s\n", "installer warm cache, index requests", warmRequests, "pages within max-age, wheels and builds cached")
	if o.git {
		fmt.Printf("bar\t%s\t%s\t%s\t%s\n", "git requirement on the warm run", vcsSummary(res), "0 clones, 0 builds", "branch resolved to a commit, commit found in the cache")
	}
	if !same {
		return fmt.Errorf("installed sets differ")
	}
	return nil
}

func summary(r *pyinstall.Result) string {
	return fmt.Sprintf("resolve %v, built %d, metadata hooks %d, cache hits %d, downloaded %d",
		r.Resolve.Round(time.Millisecond), r.Built, r.MetadataHooks, r.CacheHits, r.Downloaded)
}

func vcsSummary(r *pyinstall.Result) string {
	return fmt.Sprintf("%d clones, %d builds", r.Cloned, r.Built)
}
