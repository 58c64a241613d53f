// Command pyinstall installs Python requirements into a virtualenv with
// paaskit's installer (upload/pyinstall): pip's resolution, in parallel,
// through a shared cache. It takes pip's usual flags for `install -r`.
//
// Usage:
//
//	pyinstall install [pip flags] --venv DIR [-r requirements.txt ...] [requirement ...]
//
// Flags as pip has them: -r/--requirement, -c/--constraint, -i/--index-url,
// --extra-index-url, -f/--find-links, --no-index, --pre, --only-binary,
// --no-binary, --prefer-binary, --require-hashes, --cache-dir, -q/--quiet,
// -v/--verbose; and --venv (the virtualenv to install into, made with
// `python -m venv --without-pip` when missing), --python (the interpreter,
// default Debian's /usr/bin/python3), --allow-index (restrict the indexes a
// requirements file may name; repeatable).
//
// On a terminal it shows one progress line (packages resolved, downloaded,
// built, installed) redrawn in place; otherwise it prints one plain line per
// package and stage, for logs. Builds run as plain processes unless
// --sandbox STATE is given (root only): then a runner with its state in
// STATE runs every build in a sandbox (examples/internal/buildsandbox: its
// own UID, a read-only system, the install's build directory only, a
// bounded cgroup, a network that reaches the index only), as the platform
// does. One pyinstall at a time may use a STATE.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paaskit/paaskit/examples/internal/buildsandbox"
	"github.com/paaskit/paaskit/runner"
	"github.com/paaskit/paaskit/upload/pyinstall"
)

func main() {
	// With --sandbox the runner builds each sandbox by re-executing this
	// binary.
	runner.Init()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, isTerminal(os.Stderr))
	stop()
	os.Exit(code)
}

// isTerminal reports whether f is a terminal (TCGETS succeeds).
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// funcFlag applies each value as it is given (for --only-binary and
// --no-binary, whose order matters, as in pip).
type funcFlag func(string) error

func (f funcFlag) String() string     { return "" }
func (f funcFlag) Set(v string) error { return f(v) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer, tty bool) int {
	if len(args) == 0 || args[0] != "install" {
		fmt.Fprintln(stderr, "usage: pyinstall install [pip flags] --venv DIR [-r requirements.txt] [requirement ...] (pyinstall install -h for the flags)")
		return 2
	}
	fs := flag.NewFlagSet("pyinstall install", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var reqFiles, constraints, extraIndexes, findLinks, allowed multi
	var binary pyinstall.BinaryPolicy
	var indexURL, venv, cacheDir, python, sandboxState string
	var noIndex, pre, preferBinary, requireHashes, quiet, verbose bool
	for _, n := range []string{"r", "requirement"} {
		fs.Var(&reqFiles, n, "install from this requirements file (repeatable)")
	}
	for _, n := range []string{"c", "constraint"} {
		fs.Var(&constraints, n, "constrain versions with this file (repeatable)")
	}
	for _, n := range []string{"i", "index-url"} {
		fs.StringVar(&indexURL, n, "", "base URL of the PEP 503 index (default https://pypi.org/simple/)")
	}
	fs.Var(&extraIndexes, "extra-index-url", "another index to search (repeatable)")
	for _, n := range []string{"f", "find-links"} {
		fs.Var(&findLinks, n, "a directory or HTML page of links to distributions (repeatable)")
	}
	fs.BoolVar(&noIndex, "no-index", false, "ignore indexes; use --find-links and direct references only")
	fs.BoolVar(&pre, "pre", false, "include pre-release and development versions")
	fs.Var(funcFlag(binary.SetOnlyBinary), "only-binary", "install these projects (comma-separated, :all: or :none:) from wheels only")
	fs.Var(funcFlag(binary.SetNoBinary), "no-binary", "build these projects (comma-separated, :all: or :none:) from sdists")
	fs.BoolVar(&preferBinary, "prefer-binary", false, "prefer older wheels to newer sdists")
	fs.BoolVar(&requireHashes, "require-hashes", false, "require a --hash for every distribution")
	fs.StringVar(&cacheDir, "cache-dir", defaultCacheDir(), "the shared cache (wheels, builds, index pages, git checkouts)")
	fs.StringVar(&venv, "venv", "", "the virtualenv to install into (created when missing; required)")
	fs.StringVar(&python, "python", "/usr/bin/python3", "the interpreter the virtualenv is made with")
	fs.Var(&allowed, "allow-index", "a URL prefix the requirements files may name as an index, find-links, direct or git URL (repeatable; default: any); the command line's own -i/--extra-index-url/-f are not restricted")
	fs.StringVar(&sandboxState, "sandbox", "", "run builds in a runner sandbox whose state is in this directory (root only; builds reach the index only)")
	for _, n := range []string{"q", "quiet"} {
		fs.BoolVar(&quiet, n, false, "print only errors and the summary")
	}
	for _, n := range []string{"v", "verbose"} {
		fs.BoolVar(&verbose, n, false, "log every step")
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if venv == "" {
		fmt.Fprintln(stderr, "pyinstall: --venv DIR is required")
		return 2
	}
	if len(reqFiles) == 0 && fs.NArg() == 0 {
		fmt.Fprintln(stderr, "pyinstall: nothing to install: give -r FILE or requirements")
		return 2
	}

	reqs := &pyinstall.Requirements{}
	for _, f := range reqFiles {
		r, err := pyinstall.ParseRequirementsFile(f)
		if err != nil {
			fmt.Fprintln(stderr, "pyinstall:", err)
			return 1
		}
		merge(reqs, r)
	}
	for _, f := range constraints {
		r, err := pyinstall.ParseRequirementsFile(f)
		if err != nil {
			fmt.Fprintln(stderr, "pyinstall:", err)
			return 1
		}
		reqs.Constraints = append(reqs.Constraints, r.Requirements...)
		reqs.Constraints = append(reqs.Constraints, r.Constraints...)
	}
	if fs.NArg() > 0 {
		cwd, _ := os.Getwd()
		r, err := pyinstall.ParseRequirements(strings.NewReader(strings.Join(fs.Args(), "\n")), "command line", cwd)
		if err != nil {
			fmt.Fprintln(stderr, "pyinstall:", err)
			return 1
		}
		merge(reqs, r)
	}
	// Command-line options, as pip's, add to the files' own.
	reqs.Pre = reqs.Pre || pre
	reqs.PreferBinary = reqs.PreferBinary || preferBinary
	reqs.RequireHashes = reqs.RequireHashes || requireHashes
	for n := range binary.OnlyBinary {
		_ = reqs.Binary.SetOnlyBinary(n)
	}
	for n := range binary.NoBinary {
		_ = reqs.Binary.SetNoBinary(n)
	}

	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	prog := newProgress(stderr, tty && !quiet && !verbose, quiet)
	cfg := pyinstall.Config{
		IndexURL: indexURL, ExtraIndexURLs: extraIndexes, FindLinks: findLinks, NoIndex: noIndex,
		CacheDir: cacheDir, Python: python, AllowedIndexes: allowed,
		Logger: log, Progress: prog.event,
	}
	if sandboxState != "" {
		stop, err := sandboxBuilds(ctx, &cfg, sandboxState, log)
		if err != nil {
			fmt.Fprintln(stderr, "pyinstall: --sandbox:", err)
			return 1
		}
		defer stop()
	}
	in, err := pyinstall.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "pyinstall:", err)
		return 1
	}
	res, err := in.Install(ctx, reqs, venv, pyinstall.InstallOptions{})
	prog.done()
	if err != nil {
		fmt.Fprintln(stderr, "pyinstall:", err)
		return 1
	}
	names := make([]string, len(res.Packages))
	for i, p := range res.Packages {
		names[i] = p.String()
	}
	fmt.Fprintf(stdout, "Installed %d packages into %s in %v (resolved in %v; built %d, metadata hooks %d, from cache %d, downloaded %d, cloned %d, %d requests): %s\n",
		len(res.Packages), venv, res.Total.Round(time.Millisecond), res.Resolve.Round(time.Millisecond),
		res.Built, res.MetadataHooks, res.CacheHits, res.Downloaded, res.Cloned, res.Requests, strings.Join(names, " "))
	return 0
}

// merge adds r's requirements and options to into, as pip merges several
// -r files.
func merge(into, r *pyinstall.Requirements) {
	into.Requirements = append(into.Requirements, r.Requirements...)
	into.Constraints = append(into.Constraints, r.Constraints...)
	if r.IndexURL != "" {
		into.IndexURL = r.IndexURL
	}
	into.ExtraIndexURLs = append(into.ExtraIndexURLs, r.ExtraIndexURLs...)
	into.FindLinks = append(into.FindLinks, r.FindLinks...)
	into.NoIndex = into.NoIndex || r.NoIndex
	into.Pre = into.Pre || r.Pre
	into.PreferBinary = into.PreferBinary || r.PreferBinary
	into.RequireHashes = into.RequireHashes || r.RequireHashes
	for n := range r.Binary.OnlyBinary {
		_ = into.Binary.SetOnlyBinary(n)
	}
	for n := range r.Binary.NoBinary {
		_ = into.Binary.SetNoBinary(n)
	}
}

func defaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "paaskit-pyinstall")
	}
	return filepath.Join(os.TempDir(), "paaskit-pyinstall")
}

// progress shows installer events: one line redrawn in place on a terminal,
// or one plain line per event.
type progress struct {
	w           io.Writer
	live, quiet bool
	start       time.Time

	mu                                         sync.Mutex
	resolved, downloaded, built, hooks, cached int
	installed, cloned, failed                  int
	last                                       time.Time
	width                                      int
}

func newProgress(w io.Writer, live, quiet bool) *progress {
	return &progress{w: w, live: live, quiet: quiet, start: time.Now()}
}

// event is the installer's Progress hook: called from its workers,
// concurrently, so it takes the lock and only formats.
func (p *progress) event(ev pyinstall.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev.Stage {
	case pyinstall.StageResolved:
		p.resolved++
	case pyinstall.StageDownloaded:
		p.downloaded++
	case pyinstall.StageBuilt:
		p.built++
	case pyinstall.StageMetadata:
		p.hooks++
	case pyinstall.StageCached:
		p.cached++
	case pyinstall.StageInstalled:
		p.installed++
	case pyinstall.StageCloned:
		p.cloned++
	case pyinstall.StageFailed:
		p.failed++
	}
	if p.live {
		// Redraw at most every 50 ms, and always at the last install.
		if now := time.Now(); now.Sub(p.last) >= 50*time.Millisecond || ev.Stage == pyinstall.StageInstalled && p.installed == p.resolved {
			p.last = now
			p.draw()
		}
		return
	}
	if p.quiet && ev.Stage != pyinstall.StageFailed {
		return
	}
	line := fmt.Sprintf("%-10s %s %s", ev.Stage, ev.Package, ev.Version)
	if ev.Detail != "" {
		line += " (" + ev.Detail + ")"
	}
	if ev.Elapsed > 0 {
		line += " in " + ev.Elapsed.Round(time.Millisecond).String()
	}
	if ev.Err != nil {
		line += ": " + strings.SplitN(ev.Err.Error(), "\n", 2)[0]
	}
	fmt.Fprintln(p.w, strings.TrimSpace(line))
}

func (p *progress) draw() {
	s := fmt.Sprintf("%5.1fs  resolved %d · downloaded %d · metadata %d · built %d · cached %d · installed %d/%d",
		time.Since(p.start).Seconds(), p.resolved, p.downloaded, p.hooks, p.built, p.cached, p.installed, p.resolved)
	if p.cloned > 0 {
		s += fmt.Sprintf(" · cloned %d", p.cloned)
	}
	if p.failed > 0 {
		s += fmt.Sprintf(" · FAILED %d", p.failed)
	}
	pad := ""
	if n := p.width - len(s); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	p.width = len(s)
	fmt.Fprintf(p.w, "\r%s%s", s, pad)
}

// done ends the live line.
func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.live {
		p.draw()
		fmt.Fprintln(p.w)
	}
}

// sandboxBuilds starts a runner with its state under state and sets cfg's
// builds to run in its build sandbox, reaching cfg's index (by default
// PyPI) only. stop ends the runner.
func sandboxBuilds(ctx context.Context, cfg *pyinstall.Config, state string, log *slog.Logger) (stop func(), err error) {
	if err := os.MkdirAll(state, 0o711); err != nil {
		return nil, err
	}
	r, err := runner.New(runner.Config{
		StateDir:     filepath.Join(state, "runner"),
		CgroupRoot:   "paaskit-pyinstall",
		EgressSubnet: "10.231.0.0/24",
		Logger:       log,
	})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	stop = func() {
		cancel()
		<-done
	}
	<-r.Ready()
	if iso := r.Isolation(); !iso.User || !iso.SandboxRoot || !iso.Cgroup || !iso.Network {
		stop()
		return nil, fmt.Errorf("the runner cannot isolate builds here (run as root): %s", strings.Join(iso.Missing, "; "))
	}
	index := cfg.IndexURL
	if index == "" {
		index = "https://pypi.org/simple/"
	}
	allow, err := buildsandbox.AllowIndex(index)
	if err == nil {
		var sb *buildsandbox.Sandbox
		sb, err = buildsandbox.New(buildsandbox.Config{Runner: r, StateDir: state, Allow: []string{allow}})
		if err == nil {
			sb.Apply(cfg)
		}
	}
	if err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}
