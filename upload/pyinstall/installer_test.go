package pyinstall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/paaskit/paaskit/internal/pyindex"
)

var (
	pipOnce sync.Once
	pipVenv *pyindex.Pip
	pipErr  error
	pipDir  string
)

func TestMain(m *testing.M) {
	if os.Getenv("PYINSTALL_HELPER") == "1" {
		os.Exit(helperInstall())
	}
	code := m.Run()
	if pipDir != "" {
		os.RemoveAll(pipDir)
	}
	os.Exit(code)
}

// helperInstall is the body of a concurrent installer process
// (TestConcurrentProcessesShareCache).
func helperInstall() int {
	in, err := New(Config{IndexURL: os.Getenv("PYINSTALL_INDEX"), CacheDir: os.Getenv("PYINSTALL_CACHE"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	reqs, err := ParseRequirementsFile(os.Getenv("PYINSTALL_REQS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if _, err := in.Install(context.Background(), reqs, os.Getenv("PYINSTALL_VENV"), InstallOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// oracle is a virtualenv with Debian's pip, shared by the tests that ask pip
// how it would resolve.
func oracle(t *testing.T) *pyindex.Pip {
	t.Helper()
	pipOnce.Do(func() {
		pipDir, pipErr = os.MkdirTemp("", "pyinstall-pip-")
		if pipErr == nil {
			pipVenv, pipErr = pyindex.NewPip(context.Background(), filepath.Join(pipDir, "venv"))
		}
	})
	require.NoError(t, pipErr, "pip oracle venv (apt-get install python3-venv python3-pip; make test installs them)")
	return pipVenv
}

// freshPip returns a virtualenv with pip at dir for a test that installs
// with pip: a copy of the oracle's, which is never installed into (it
// resolves with --dry-run). `python -m venv` spends several CPU-seconds
// installing pip from its wheel; a copy costs a fraction of one. The
// copy's interpreter takes its prefix from its own path (pyvenv.cfg
// beside bin/), so pip installs into the copy.
func freshPip(t *testing.T, dir string) *pyindex.Pip {
	t.Helper()
	src := oracle(t)
	out, err := exec.Command("cp", "-a", src.Venv, dir).CombinedOutput()
	require.NoError(t, err, "copy the pip virtualenv: %s", out)
	pip := &pyindex.Pip{Venv: dir}
	prefix, err := exec.Command(filepath.Join(dir, "bin", "python"), "-c", "import sys; print(sys.prefix)").Output()
	require.NoError(t, err)
	require.Equal(t, dir, strings.TrimSpace(string(prefix)), "the copied virtualenv is its own prefix")
	return pip
}

type fixture struct {
	t   *testing.T
	srv *pyindex.Server
	ix  *pyindex.Index
	dir string
	in  *Installer
	ev  *events
}

type events struct {
	mu  sync.Mutex
	all []Event
}

func (e *events) add(ev Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *events) count(stage Stage) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.all {
		if ev.Stage == stage {
			n++
		}
	}
	return n
}

func newFixture(t *testing.T, dists []pyindex.Dist, scfg pyindex.ServerConfig) *fixture {
	t.Helper()
	ix, err := pyindex.New(dists)
	require.NoError(t, err)
	if scfg.Latency == 0 {
		scfg.Latency = 5 * time.Millisecond
	}
	srv, err := pyindex.Serve(ix, scfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Close()) })
	f := &fixture{t: t, srv: srv, ix: ix, dir: t.TempDir(), ev: &events{}}
	f.in = f.installer(Config{})
	return f
}

func (f *fixture) installer(cfg Config) *Installer {
	f.t.Helper()
	if cfg.IndexURL == "" && !cfg.NoIndex {
		cfg.IndexURL = f.srv.URL()
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = filepath.Join(f.dir, "cache")
	}
	cfg.Progress = f.ev.add
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	in, err := New(cfg)
	require.NoError(f.t, err)
	return in
}

func (f *fixture) reqFile(lines ...string) string {
	f.t.Helper()
	fh, err := os.CreateTemp(f.dir, "requirements-*.txt")
	require.NoError(f.t, err)
	_, err = fh.WriteString(strings.Join(lines, "\n") + "\n")
	require.NoError(f.t, err)
	require.NoError(f.t, fh.Close())
	return fh.Name()
}

func (f *fixture) reqs(lines ...string) *Requirements {
	f.t.Helper()
	r, err := ParseRequirementsFile(f.reqFile(lines...))
	require.NoError(f.t, err)
	return r
}

func pinStrings(ps []Pin) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// requireSameAsPip resolves with the Go resolver and with pip and requires
// identical sets.
func (f *fixture) requireSameAsPip(lines ...string) []string {
	f.t.Helper()
	pins, err := f.in.Resolve(context.Background(), f.reqs(lines...))
	require.NoError(f.t, err)
	got := pinStrings(pins)
	want, err := oracle(f.t).Resolve(context.Background(), f.srv.URL(), "-r", f.reqFile(lines...))
	require.NoError(f.t, err)
	require.Equal(f.t, want, got, "the Go resolver must pick exactly what pip picks")
	return got
}

func diamond() []pyindex.Dist {
	return []pyindex.Dist{
		{Name: "top", Version: "1.0", Requires: []string{"left", "right"}},
		{Name: "left", Version: "1.0", Requires: []string{"base>=1.0,<3"}},
		{Name: "right", Version: "1.0", Requires: []string{"base>=2.0"}, Kind: pyindex.Sdist},
		{Name: "right", Version: "2.0", Requires: []string{"base>=3.0"}},
		{Name: "base", Version: "1.0"},
		{Name: "base", Version: "2.0"},
		{Name: "base", Version: "2.5", Kind: pyindex.Sdist},
		{Name: "base", Version: "3.0"},
	}
}

func TestResolveDiamondSameAsPip(t *testing.T) {
	t.Parallel()
	f := newFixture(t, diamond(), pyindex.ServerConfig{})
	got := f.requireSameAsPip("top")
	// right 2.0 needs base>=3, left needs <3: pip backtracks to right 1.0.
	require.Equal(t, []string{"base==2.5", "left==1.0", "right==1.0", "top==1.0"}, got)
}

func TestResolveMarkersAndExtrasSameAsPip(t *testing.T) {
	t.Parallel()
	dists := []pyindex.Dist{
		{Name: "app", Version: "1.0", Requires: []string{
			`py3only; python_version >= "3"`,
			`py2only; python_version < "3"`,
			`winonly; sys_platform == "win32"`,
			`linuxonly; platform_system == "Linux" and implementation_name == "cpython"`,
			`newpy; python_full_version >= "3.8.0"`,
			`feat[fast]`,
		}},
		{Name: "py3only", Version: "1.0"},
		{Name: "py2only", Version: "1.0"},
		{Name: "winonly", Version: "1.0"},
		{Name: "linuxonly", Version: "1.0"},
		{Name: "newpy", Version: "1.0", RequiresPython: ">=3.8"},
		{Name: "newpy", Version: "2.0", RequiresPython: ">=4.0"},
		{Name: "feat", Version: "1.0", Extras: []string{"fast", "slow"}, Requires: []string{
			`speedup; extra == "fast" and python_version >= "3.6"`,
			`turtle; extra == "slow"`,
			`oldspeed; extra == "fast" and python_version < "3"`,
		}},
		{Name: "speedup", Version: "1.0", Kind: pyindex.Sdist},
		{Name: "turtle", Version: "1.0"},
		{Name: "oldspeed", Version: "1.0"},
		{Name: "tool", Version: "1.0", Extras: []string{"cli"}, Requires: []string{`clickish; extra == "cli"`}},
		{Name: "clickish", Version: "1.0"},
	}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	got := f.requireSameAsPip("app", `tool[cli]; python_version >= "3"`, `feat[slow]; os_name == "nt"`)
	require.Equal(t, []string{"app==1.0", "clickish==1.0", "feat==1.0", "linuxonly==1.0", "newpy==1.0", "py3only==1.0", "speedup==1.0", "tool==1.0"}, got)
}

func TestResolveBenchSetSameAsPip(t *testing.T) {
	t.Parallel()
	ds, reqs := pyindex.BenchSet(0)
	f := newFixture(t, ds, pyindex.ServerConfig{Metadata: true})
	got := f.requireSameAsPip(reqs...)
	require.Len(t, got, 22)
}

func TestInstallChainWithScriptsAndImports(t *testing.T) {
	dists := pyindex.Chain("link", 5)
	dists[4].Kind = pyindex.Sdist
	dists[4].DynamicMetadata = true
	dists = append(dists, pyindex.Dist{Name: "Cli_Tool", Version: "2.0", ConsoleScripts: map[string]string{"cli-tool": "cli_tool:main"}, Requires: []string{"link-0"}})
	f := newFixture(t, dists, pyindex.ServerConfig{Metadata: true})
	venv := filepath.Join(f.dir, "venv")
	res, err := f.in.Install(context.Background(), f.reqs("cli-tool==2.0"), venv, InstallOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"cli-tool==2.0", "link-0==1.0", "link-1==1.0", "link-2==1.0", "link-3==1.0", "link-4==1.0"}, pinStrings(res.Packages))
	require.Equal(t, 1, res.Built)
	installed, err := pyindex.Installed(venv)
	require.NoError(t, err)
	require.Equal(t, pinStrings(res.Packages), installed)

	// The console script runs with the venv's interpreter.
	script := filepath.Join(venv, "bin", "cli-tool")
	b, err := os.ReadFile(script)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(b), "#!"+filepath.Join(venv, "bin", "python")+"\n"), "%s", b)
	out, err := exec.Command(script).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, "Cli_Tool 2.0\n", string(out))
	// Every module imports, and the sdist-built one too.
	out, err = exec.Command(filepath.Join(venv, "bin", "python"), "-c", "import link_4, link_0; print(link_4.VERSION)").CombinedOutput()
	require.NoError(t, err, "%s", out)
	// RECORD lists the script, relative to site-packages.
	rec, err := os.ReadFile(filepath.Join(venv, "lib", f.in.interp.VersionDir, "site-packages", "cli_tool-2.0.dist-info", "RECORD"))
	require.NoError(t, err)
	require.Contains(t, string(rec), "../../../bin/cli-tool,sha256=")
	require.FileExists(t, filepath.Join(venv, "lib", f.in.interp.VersionDir, "site-packages", "cli_tool-2.0.dist-info", "REQUESTED"))
	require.Equal(t, 6, f.ev.count(StageInstalled))
	require.Equal(t, 6, f.ev.count(StageResolved))
}

func TestInstallSameVenvAsPip(t *testing.T) {
	t.Parallel()
	ds, reqs := pyindex.BenchSet(0)
	f := newFixture(t, ds, pyindex.ServerConfig{Metadata: true})
	venv := filepath.Join(f.dir, "venv")
	_, err := f.in.Install(context.Background(), f.reqs(reqs...), venv, InstallOptions{})
	require.NoError(t, err)
	got, err := pyindex.Installed(venv)
	require.NoError(t, err)

	pip := freshPip(t, filepath.Join(f.dir, "pipvenv"))
	out, err := pip.Install(context.Background(), f.srv.URL(), "-r", f.reqFile(reqs...))
	require.NoError(t, err, "%s", out)
	want, err := pyindex.Installed(pip.Venv)
	require.NoError(t, err)
	require.Equal(t, want, got)
	// pip check agrees the installed set is consistent.
	out, err = exec.Command(filepath.Join(pip.Venv, "bin", "python"), "-m", "pip", "check").CombinedOutput()
	require.NoError(t, err, "%s", out)
}

func TestWarmCacheNeedsNoBuildOrDownload(t *testing.T) {
	ds, reqs := pyindex.BenchSet(0)
	f := newFixture(t, ds, pyindex.ServerConfig{})
	r := f.reqs(reqs...)
	res, err := f.in.Install(context.Background(), r, filepath.Join(f.dir, "v1"), InstallOptions{})
	require.NoError(t, err)
	require.Equal(t, 12, res.Built)
	require.Zero(t, res.CacheHits)
	// Another installer (as another process would) shares the cache.
	in2 := f.installer(Config{})
	res, err = in2.Install(context.Background(), r, filepath.Join(f.dir, "v2"), InstallOptions{})
	require.NoError(t, err)
	require.Zero(t, res.Built)
	require.Zero(t, res.Downloaded)
	require.Equal(t, 22, res.CacheHits)
}

func TestConflictNamesBothRequirements(t *testing.T) {
	dists := []pyindex.Dist{
		{Name: "alpha", Version: "1.0", Requires: []string{"shared>=2"}},
		{Name: "beta", Version: "1.0", Requires: []string{"shared<2"}},
		{Name: "shared", Version: "1.0"},
		{Name: "shared", Version: "2.0"},
	}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	_, err := f.in.Resolve(context.Background(), f.reqs("alpha", "beta"))
	require.ErrorIs(t, err, ErrConflict)
	var re *ResolutionError
	require.ErrorAs(t, err, &re)
	require.Equal(t, "shared", re.Package)
	require.Contains(t, err.Error(), "shared>=2 (from alpha 1.0)")
	require.Contains(t, err.Error(), "shared<2 (from beta 1.0)")
	// pip agrees it is impossible.
	_, perr := oracle(t).Resolve(context.Background(), f.srv.URL(), "-r", f.reqFile("alpha", "beta"))
	require.Error(t, perr)

	// A direct conflict in the file is named too.
	_, err = f.in.Resolve(context.Background(), f.reqs("shared>=2", "beta"))
	require.ErrorIs(t, err, ErrConflict)
	require.Contains(t, err.Error(), "shared>=2 (from the requirements)")
	require.Contains(t, err.Error(), "shared<2 (from beta 1.0)")
}

func TestMissingPackageNamed(t *testing.T) {
	dists := []pyindex.Dist{{Name: "needy", Version: "1.0", Requires: []string{"ghost-package>=1"}}}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	_, err := f.in.Install(context.Background(), f.reqs("needy"), filepath.Join(f.dir, "venv"), InstallOptions{})
	require.ErrorIs(t, err, ErrPackageMissing)
	require.Contains(t, err.Error(), "ghost-package")
	require.Contains(t, err.Error(), "from needy 1.0")
	_, err = f.in.Resolve(context.Background(), f.reqs("not-there-at-all"))
	require.ErrorIs(t, err, ErrPackageMissing)
	require.Contains(t, err.Error(), "not-there-at-all")
}

func TestFailingSdistBuildShowsStderr(t *testing.T) {
	dists := []pyindex.Dist{
		{Name: "ok", Version: "1.0", Requires: []string{"broken"}},
		{Name: "broken", Version: "0.1", Kind: pyindex.Sdist, FailBuild: true},
	}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	venv := filepath.Join(f.dir, "venv")
	_, err := f.in.Install(context.Background(), f.reqs("ok"), venv, InstallOptions{})
	var be *BuildError
	require.ErrorAs(t, err, &be)
	require.Equal(t, "broken", be.Package)
	require.Contains(t, be.StderrTail, "simulated compiler failure building broken")
	require.Contains(t, err.Error(), "error: command 'gcc' failed with exit code 1")
	// Nothing was installed.
	got, _ := pyindex.Installed(venv)
	require.Empty(t, got)
	require.GreaterOrEqual(t, f.ev.count(StageFailed), 1)
}

func TestDroppedConnectionRetriedThenClearError(t *testing.T) {
	dists := []pyindex.Dist{{Name: "flaky", Version: "1.0"}, {Name: "doomed", Version: "1.0", Kind: pyindex.Sdist}}
	ix, err := pyindex.New(dists)
	require.NoError(t, err)
	var flakyFile, doomedFile string
	for _, fl := range ix.Files() {
		if strings.HasPrefix(fl.Filename, "flaky") {
			flakyFile = fl.Filename
		} else {
			doomedFile = fl.Filename
		}
	}
	f := newFixture(t, dists, pyindex.ServerConfig{Drop: map[string]int{flakyFile: 2, doomedFile: -1}})
	res, err := f.in.Install(context.Background(), f.reqs("flaky"), filepath.Join(f.dir, "v1"), InstallOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"flaky==1.0"}, pinStrings(res.Packages))
	require.Equal(t, 2, f.ev.count(StageRetry))

	_, err = f.in.Install(context.Background(), f.reqs("doomed"), filepath.Join(f.dir, "v2"), InstallOptions{})
	require.Error(t, err)
	require.Contains(t, err.Error(), doomedFile)
	require.Contains(t, err.Error(), "giving up after 4 attempts")
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	// No partial file was left in the cache.
	tmp, _ := os.ReadDir(filepath.Join(f.dir, "cache", "tmp"))
	require.Empty(t, tmp)
}

func TestTamperedCacheDetectedAndRebuilt(t *testing.T) {
	dists := []pyindex.Dist{
		{Name: "wheelpkg", Version: "1.0", Requires: []string{"sdistpkg"}},
		{Name: "sdistpkg", Version: "1.0", Kind: pyindex.Sdist},
	}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	r := f.reqs("wheelpkg")
	_, err := f.in.Install(context.Background(), r, filepath.Join(f.dir, "v1"), InstallOptions{})
	require.NoError(t, err)

	cache := f.in.Cache()
	var wheelSHA string
	for _, fl := range f.ix.Files() {
		if strings.HasPrefix(fl.Filename, "wheelpkg") {
			wheelSHA = fl.SHA256
		}
	}
	// Truncate the downloaded wheel.
	wp := cache.BlobPath(wheelSHA)
	data, err := os.ReadFile(wp)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(wp, data[:len(data)/2], 0o644))
	// Tamper with the built wheel: same size, one byte changed.
	var sdistSHA string
	for _, fl := range f.ix.Files() {
		if strings.HasPrefix(fl.Filename, "sdistpkg") {
			sdistSHA = fl.SHA256
		}
	}
	_, bp, ok := cache.Built(TagsKey(f.in.interp), sdistSHA)
	require.True(t, ok)
	data, err = os.ReadFile(bp)
	require.NoError(t, err)
	data[len(data)/2] ^= 0xff
	require.NoError(t, os.WriteFile(bp, data, 0o644))

	// A new installer (a new process: no in-memory verification) notices
	// both, fetches and rebuilds.
	in2 := f.installer(Config{})
	res, err := in2.Install(context.Background(), r, filepath.Join(f.dir, "v2"), InstallOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Built)
	require.Equal(t, 1, res.Downloaded) // the wheel again; the cached sdist was intact
	got, err := fileSHA256(cache.BlobPath(wheelSHA))
	require.NoError(t, err)
	require.Equal(t, wheelSHA, got)
	out, err := exec.Command(filepath.Join(f.dir, "v2", "bin", "python"), "-c", "import wheelpkg, sdistpkg").CombinedOutput()
	require.NoError(t, err, "%s", out)
}

func TestConcurrentProcessesShareCache(t *testing.T) {
	t.Parallel()
	ds, reqs := pyindex.BenchSet(0)
	f := newFixture(t, ds, pyindex.ServerConfig{})
	reqFile := f.reqFile(reqs...)
	cacheDir := filepath.Join(f.dir, "shared-cache")
	const procs = 4
	errs := make(chan error, procs)
	for i := 0; i < procs; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "PYINSTALL_HELPER=1", "PYINSTALL_INDEX="+f.srv.URL(), "PYINSTALL_CACHE="+cacheDir,
			"PYINSTALL_REQS="+reqFile, fmt.Sprintf("PYINSTALL_VENV=%s/venv-%d", f.dir, i))
		go func() {
			out, err := cmd.CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%w: %s", err, out)
			}
			errs <- err
		}()
	}
	for i := 0; i < procs; i++ {
		require.NoError(t, <-errs)
	}
	for i := 0; i < procs; i++ {
		got, err := pyindex.Installed(fmt.Sprintf("%s/venv-%d", f.dir, i))
		require.NoError(t, err)
		require.Len(t, got, 22)
	}
	// Every blob is whole and named by its hash; nothing is left in tmp.
	blobs, err := filepath.Glob(filepath.Join(cacheDir, "blobs", "sha256", "*", "*"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(blobs), 22+12)
	for _, b := range blobs {
		sum, err := fileSHA256(b)
		require.NoError(t, err)
		require.Equal(t, filepath.Base(b), sum)
	}
	tmp, _ := os.ReadDir(filepath.Join(cacheDir, "tmp"))
	require.Empty(t, tmp)
	// And a later install from that cache builds nothing.
	in := f.installer(Config{CacheDir: cacheDir})
	res, err := in.Install(context.Background(), f.reqs(reqs...), filepath.Join(f.dir, "venv-after"), InstallOptions{})
	require.NoError(t, err)
	require.Zero(t, res.Built)
}

func TestFindLinksAndNoIndex(t *testing.T) {
	dists := []pyindex.Dist{{Name: "local-a", Version: "1.0", Requires: []string{"local-b"}}, {Name: "local-b", Version: "2.0", Kind: pyindex.Sdist}}
	ix, err := pyindex.New(dists)
	require.NoError(t, err)
	dir := t.TempDir()
	links := filepath.Join(dir, "wheelhouse")
	require.NoError(t, ix.WriteDir(links))
	in, err := New(Config{NoIndex: true, FindLinks: []string{links}, CacheDir: filepath.Join(dir, "cache"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	res, err := in.Install(context.Background(), &Requirements{Requirements: []Requirement{{Name: "local-a"}}}, filepath.Join(dir, "venv"), InstallOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"local-a==1.0", "local-b==2.0"}, pinStrings(res.Packages))

	// The same through a requirements file's own options, against an
	// HTTP find-links page (the index server's project page).
	f := newFixture(t, dists, pyindex.ServerConfig{})
	r := f.reqs("--no-index", "--find-links "+f.srv.URL()+"local-a/", "--find-links "+f.srv.URL()+"local-b/", "local-a")
	in2 := f.installer(Config{IndexURL: "http://127.0.0.1:1/simple/"})
	pins, err := in2.Resolve(context.Background(), r)
	require.NoError(t, err)
	require.Equal(t, []string{"local-a==1.0", "local-b==2.0"}, pinStrings(pins))
}

func TestDirectURLsAndLocalPaths(t *testing.T) {
	dists := []pyindex.Dist{
		{Name: "direct-wheel", Version: "3.0", Requires: []string{"dep"}},
		{Name: "direct-sdist", Version: "1.5", Kind: pyindex.Sdist},
		{Name: "dep", Version: "1.0"},
	}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	local := filepath.Join(f.dir, "dl")
	require.NoError(t, f.ix.WriteDir(local))
	var wheelFile, sdistFile, wheelSHA string
	for _, fl := range f.ix.Files() {
		switch {
		case strings.HasPrefix(fl.Filename, "direct_wheel"):
			wheelFile, wheelSHA = fl.Filename, fl.SHA256
		case strings.HasPrefix(fl.Filename, "direct_sdist"):
			sdistFile = fl.Filename
		}
	}
	// An unpacked source tree, built from its directory.
	tree := filepath.Join(f.dir, "tree")
	require.NoError(t, os.MkdirAll(tree, 0o755))
	out, err := exec.Command("tar", "-xzf", filepath.Join(local, sdistFile), "-C", tree, "--strip-components=1").CombinedOutput()
	require.NoError(t, err, "%s", out)

	for _, line := range []string{
		"direct-wheel @ " + f.srv.FileURL(wheelFile) + "#sha256=" + wheelSHA,
		f.srv.FileURL(wheelFile),
		"./dl/" + wheelFile,
		"file://" + filepath.Join(local, wheelFile),
	} {
		t.Run(line, func(t *testing.T) {
			pins, err := f.in.Resolve(context.Background(), f.reqs(line))
			require.NoError(t, err)
			require.Equal(t, []string{"dep==1.0", "direct-wheel==3.0"}, pinStrings(pins))
		})
	}
	res, err := f.in.Install(context.Background(), f.reqs("./dl/"+sdistFile, "./tree"), filepath.Join(f.dir, "venv"), InstallOptions{})
	// Both name direct-sdist: the same project from two places.
	require.Error(t, err)
	require.Nil(t, res)
	res, err = f.in.Install(context.Background(), f.reqs("./tree"), filepath.Join(f.dir, "venv"), InstallOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"direct-sdist==1.5"}, pinStrings(res.Packages))
	// A name that does not match the file is refused.
	_, err = f.in.Resolve(context.Background(), f.reqs("other @ "+f.srv.FileURL(wheelFile)))
	require.Error(t, err)
	require.Contains(t, err.Error(), "not other")
}

func TestHashCheckingMode(t *testing.T) {
	dists := []pyindex.Dist{{Name: "pinned", Version: "1.0", Requires: []string{"dep"}}, {Name: "dep", Version: "1.0"}}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	sha := map[string]string{}
	for _, fl := range f.ix.Files() {
		sha[strings.SplitN(fl.Filename, "-", 2)[0]] = fl.SHA256
	}
	good := f.reqs("pinned==1.0 --hash=sha256:"+sha["pinned"], "dep==1.0 --hash sha256:"+sha["dep"])
	_, err := f.in.Install(context.Background(), good, filepath.Join(f.dir, "v1"), InstallOptions{})
	require.NoError(t, err)

	bad := f.reqs("pinned==1.0 --hash=sha256:"+strings.Repeat("0", 64), "dep==1.0 --hash=sha256:"+sha["dep"])
	_, err = f.in.Resolve(context.Background(), bad)
	require.Error(t, err, "no file of pinned matches the hash")

	partial := f.reqs("pinned==1.0 --hash=sha256:" + sha["pinned"])
	_, err = f.in.Resolve(context.Background(), partial)
	require.Error(t, err)
	require.Contains(t, err.Error(), "dep==1.0 has no --hash")
}

func TestConstraintsFile(t *testing.T) {
	t.Parallel()
	dists := []pyindex.Dist{{Name: "lib", Version: "1.0"}, {Name: "lib", Version: "2.0"}, {Name: "app", Version: "1.0", Requires: []string{"lib"}}}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	c := filepath.Join(f.dir, "constraints.txt")
	require.NoError(t, os.WriteFile(c, []byte("lib<2\nunused==9\n"), 0o644))
	got := f.requireSameAsPip("-c "+c, "app")
	require.Equal(t, []string{"app==1.0", "lib==1.0"}, got)
}

func TestInstallConfigValidation(t *testing.T) {
	_, err := New(Config{})
	require.Error(t, err)
	_, err = New(Config{CacheDir: t.TempDir(), IndexURL: "ftp://x/"})
	require.Error(t, err)
	_, err = New(Config{CacheDir: t.TempDir(), Workers: -1})
	require.Error(t, err)
}

func TestResolveCancelled(t *testing.T) {
	f := newFixture(t, diamond(), pyindex.ServerConfig{Latency: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := f.in.Resolve(ctx, f.reqs("top"))
	require.True(t, errors.Is(err, context.Canceled), "%v", err)
}

func TestInstallLeavesNoGoroutines(t *testing.T) {
	ds, reqs := pyindex.BenchSet(0)
	f := newFixture(t, ds, pyindex.ServerConfig{Metadata: true})
	tr := &http.Transport{}
	in := f.installer(Config{HTTPClient: &http.Client{Transport: tr}})
	if _, err := in.Interpreter(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	// A failing install (cancelled in the middle) and a good one: neither
	// leaves a prefetch, download or build goroutine behind.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	_, err := in.Install(ctx, f.reqs(reqs...), filepath.Join(f.dir, "v0"), InstallOptions{})
	cancel()
	require.Error(t, err)
	_, err = in.Install(context.Background(), f.reqs(reqs...), filepath.Join(f.dir, "v1"), InstallOptions{})
	require.NoError(t, err)
	tr.CloseIdleConnections()
}

func TestYankedOnlyForExactPinsSameAsPip(t *testing.T) {
	t.Parallel()
	dists := []pyindex.Dist{
		{Name: "lib", Version: "1.0"},
		{Name: "lib", Version: "2.0", Yanked: "broken release"},
		{Name: "user", Version: "1.0", Requires: []string{"lib>=1"}},
	}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	require.Equal(t, []string{"lib==1.0", "user==1.0"}, f.requireSameAsPip("user"))
	require.Equal(t, []string{"lib==2.0"}, f.requireSameAsPip("lib==2.0"))
}

func TestBuildRequiresInstalledInIsolation(t *testing.T) {
	t.Parallel()
	dists := []pyindex.Dist{
		pyindex.BackendWheel("pk-backend-lib", "1.0"),
		{Name: "needs-backend", Version: "0.3", Kind: pyindex.Sdist, BuildBackend: "pk_backend_lib", BuildRequires: []string{"pk-backend-lib>=1"}},
		{Name: "needs-backend-too", Version: "0.1", Kind: pyindex.Sdist, BuildBackend: "pk_backend_lib", BuildRequires: []string{"pk-backend-lib"}},
		{Name: "orphan-backend", Version: "1.0", Kind: pyindex.Sdist, BuildBackend: "nowhere_backend", BuildRequires: []string{"nowhere-backend"}},
	}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	venv := filepath.Join(f.dir, "venv")
	res, err := f.in.Install(context.Background(), f.reqs("needs-backend", "needs-backend-too"), venv, InstallOptions{})
	require.NoError(t, err)
	// The backend was installed for the builds, not into the app's venv.
	require.Equal(t, []string{"needs-backend==0.3", "needs-backend-too==0.1"}, pinStrings(res.Packages))
	got, err := pyindex.Installed(venv)
	require.NoError(t, err)
	require.Equal(t, pinStrings(res.Packages), got)
	// pip does the same.
	pip := freshPip(t, filepath.Join(f.dir, "pipvenv"))
	out, err := pip.Install(context.Background(), f.srv.URL(), "needs-backend", "needs-backend-too")
	require.NoError(t, err, "%s", out)
	want, err := pyindex.Installed(pip.Venv)
	require.NoError(t, err)
	require.Equal(t, want, got)
	// No build environment is left behind.
	tmp, _ := os.ReadDir(filepath.Join(f.dir, "cache", "tmp"))
	require.Empty(t, tmp)

	// A build requirement that no index has is a clear error.
	_, err = f.in.Install(context.Background(), f.reqs("orphan-backend"), filepath.Join(f.dir, "venv2"), InstallOptions{})
	require.ErrorIs(t, err, ErrPackageMissing)
	require.Contains(t, err.Error(), "nowhere-backend")
	require.Contains(t, err.Error(), "build requirements of orphan-backend 1.0")
}
