package pyinstall

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/internal/pyindex"
)

// dynamicBenchSet is the realistic index: every sdist has
// Metadata-Version 2.1 PKG-INFO (dependencies dynamic) and a cheap metadata
// hook.
func dynamicBenchSet() ([]pyindex.Dist, []string) {
	ds, reqs := pyindex.BenchSet(0)
	for i := range ds {
		ds[i].DynamicMetadata = true
	}
	return ds, reqs
}

func TestDynamicSdistsUseMetadataHookSameAsPip(t *testing.T) {
	t.Parallel()
	ds, reqs := dynamicBenchSet()
	f := newFixture(t, ds, pyindex.ServerConfig{}) // no PEP 658, HTML only
	got := f.requireSameAsPip(reqs...)
	require.Len(t, got, 22)
	// Resolving asked the hook of every sdist it considered and built
	// nothing synchronously; the install then built the 12 chosen ones.
	res, err := f.installer(Config{CacheDir: filepath.Join(f.dir, "c2")}).Install(context.Background(), f.reqs(reqs...), filepath.Join(f.dir, "venv"), InstallOptions{})
	require.NoError(t, err)
	require.Equal(t, 12, res.MetadataHooks)
	require.Equal(t, 12, res.Built)
	installed, err := pyindex.Installed(filepath.Join(f.dir, "venv"))
	require.NoError(t, err)
	require.Equal(t, got, installed)
}

func TestBackendWithoutMetadataHookIsBuiltOnce(t *testing.T) {
	t.Parallel()
	dists := []pyindex.Dist{
		{Name: "app", Version: "1.0", Requires: []string{"nohook"}},
		{Name: "nohook", Version: "2.0", Kind: pyindex.Sdist, DynamicMetadata: true, NoMetadataHook: true, Requires: []string{"dep"}},
		{Name: "dep", Version: "1.0"},
	}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	require.Equal(t, []string{"app==1.0", "dep==1.0", "nohook==2.0"}, f.requireSameAsPip("app"))
	res, err := f.installer(Config{CacheDir: filepath.Join(f.dir, "c2")}).Install(context.Background(), f.reqs("app"), filepath.Join(f.dir, "venv"), InstallOptions{})
	require.NoError(t, err)
	require.Zero(t, res.MetadataHooks)
	require.Equal(t, 1, res.Built, "the build that gave the metadata is the one installed")
	require.Zero(t, res.CacheHits)
}

func TestCrashingMetadataHookIsAClearError(t *testing.T) {
	t.Parallel()
	dists := []pyindex.Dist{
		{Name: "app", Version: "1.0", Requires: []string{"crashy"}},
		{Name: "crashy", Version: "0.1", Kind: pyindex.Sdist, DynamicMetadata: true, FailMetadataHook: true},
	}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	venv := filepath.Join(f.dir, "venv")
	_, err := f.in.Install(context.Background(), f.reqs("app"), venv, InstallOptions{})
	var be *BuildError
	require.ErrorAs(t, err, &be)
	require.Equal(t, "crashy", be.Package)
	require.Equal(t, "prepare_metadata_for_build_wheel", be.Step)
	require.Contains(t, err.Error(), "simulated crash in prepare_metadata_for_build_wheel of crashy")
	got, _ := pyindex.Installed(venv)
	require.Empty(t, got)
	// pip fails too.
	_, perr := oracle(t).Resolve(context.Background(), f.srv.URL(), "app")
	require.Error(t, perr)
}

func TestMetadataHookDisagreeingWithWheelIsRefused(t *testing.T) {
	t.Parallel()
	dists := []pyindex.Dist{
		{Name: "liar", Version: "1.0", Kind: pyindex.Sdist, DynamicMetadata: true, HookVersion: "1.1"},
		{Name: "fibber", Version: "1.0", Kind: pyindex.Sdist, DynamicMetadata: true, HookExtraRequires: []string{"dep"}},
		{Name: "dep", Version: "1.0"},
	}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	// A hook whose version is not the file's: refused at once, as pip
	// refuses it (MetadataInconsistent).
	_, err := f.in.Install(context.Background(), f.reqs("liar"), filepath.Join(f.dir, "v1"), InstallOptions{})
	var me *MetadataMismatchError
	require.ErrorAs(t, err, &me)
	require.Equal(t, "Version", me.Field)
	require.Contains(t, err.Error(), "liar")
	_, perr := oracle(t).Resolve(context.Background(), f.srv.URL(), "liar")
	require.Error(t, perr)
	// A hook whose dependencies are not the wheel's: the resolution was
	// made on the hook's, so the wheel is refused and nothing installed.
	venv := filepath.Join(f.dir, "v2")
	_, err = f.in.Install(context.Background(), f.reqs("fibber"), venv, InstallOptions{})
	require.ErrorAs(t, err, &me)
	require.Equal(t, "Requires-Dist", me.Field)
	got, _ := pyindex.Installed(venv)
	require.Empty(t, got)
	// Nothing wrong was cached: the next try fails the same way.
	_, err = f.installer(Config{}).Install(context.Background(), f.reqs("fibber"), venv, InstallOptions{})
	require.ErrorAs(t, err, &me)
}

func TestWarmInstallWithinMaxAgeMakesNoRequest(t *testing.T) {
	t.Parallel()
	ds, reqs := dynamicBenchSet()
	f := newFixture(t, ds, pyindex.ServerConfig{MaxAge: 10 * time.Minute})
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	cfg := Config{Now: func() time.Time { return time.Unix(0, clock.Load()) }}
	_, err := f.installer(cfg).Install(context.Background(), f.reqs(reqs...), filepath.Join(f.dir, "v1"), InstallOptions{})
	require.NoError(t, err)

	before := f.srv.Requests()
	res, err := f.installer(cfg).Install(context.Background(), f.reqs(reqs...), filepath.Join(f.dir, "v2"), InstallOptions{})
	require.NoError(t, err)
	require.Zero(t, f.srv.Requests()-before, "a warm install within max-age asks the index nothing")
	require.Zero(t, res.Requests)
	require.Zero(t, res.Built)
	require.Zero(t, res.MetadataHooks)

	// Past max-age every page is revalidated (If-None-Match, 304) and
	// reused; no file is fetched again.
	clock.Add(int64(11 * time.Minute))
	before, nm := f.srv.Requests(), f.srv.NotModified()
	res, err = f.installer(cfg).Install(context.Background(), f.reqs(reqs...), filepath.Join(f.dir, "v3"), InstallOptions{})
	require.NoError(t, err)
	pages := f.srv.Requests() - before
	require.Equal(t, pages, f.srv.NotModified()-nm, "every request was a revalidation answered 304")
	require.GreaterOrEqual(t, pages, int64(22))
	require.Zero(t, res.Downloaded)
	// And fresh again after that: no request.
	before = f.srv.Requests()
	_, err = f.installer(cfg).Install(context.Background(), f.reqs(reqs...), filepath.Join(f.dir, "v4"), InstallOptions{})
	require.NoError(t, err)
	require.Zero(t, f.srv.Requests()-before)
}

func TestPagesWithoutMaxAgeAreRevalidated(t *testing.T) {
	f := newFixture(t, diamond(), pyindex.ServerConfig{})
	_, err := f.in.Resolve(context.Background(), f.reqs("top"))
	require.NoError(t, err)
	nm := f.srv.NotModified()
	_, err = f.installer(Config{}).Resolve(context.Background(), f.reqs("top"))
	require.NoError(t, err)
	require.Equal(t, int64(4), f.srv.NotModified()-nm, "four project pages, each revalidated by its ETag")
}

func TestJSONPagesPreferredAndMetadataFilesUsed(t *testing.T) {
	t.Parallel()
	ds, reqs := pyindex.BenchSet(0)
	f := newFixture(t, ds, pyindex.ServerConfig{JSON: true, Metadata: true})
	got := f.requireSameAsPip(reqs...)
	require.Len(t, got, 22)
	require.GreaterOrEqual(t, f.srv.JSONPages(), int64(22), "pip and the installer both asked for PEP 691 JSON")
	// The page cache holds JSON.
	pages, err := filepath.Glob(filepath.Join(f.dir, "cache", "pages", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, pages)
	var p cachedPage
	data, err := os.ReadFile(pages[0])
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &p))
	require.True(t, isJSONPage(p.ContentType), p.ContentType)
}

func TestBuiltWheelCacheKeyedByInterpreterTags(t *testing.T) {
	dists := []pyindex.Dist{{Name: "native", Version: "1.0", Kind: pyindex.Sdist, DynamicMetadata: true}}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	res, err := f.in.Install(context.Background(), f.reqs("native"), filepath.Join(f.dir, "v1"), InstallOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Built)

	// Another Python with other tags (as a 3.12, or a musl build, would
	// have) on the same cache: it builds its own wheel.
	other := f.installer(Config{})
	interp, err := other.Interpreter(context.Background())
	require.NoError(t, err)
	alt := *interp
	alt.Tags = append([]string{"cp399-cp399-linux_other"}, interp.Tags...)
	other.interp = &alt
	res, err = other.Install(context.Background(), f.reqs("native"), filepath.Join(f.dir, "v2"), InstallOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Built)
	require.Equal(t, 1, res.MetadataHooks, "prepared metadata is per interpreter too")
	// The first Python still gets its own from the cache.
	res, err = f.installer(Config{}).Install(context.Background(), f.reqs("native"), filepath.Join(f.dir, "v3"), InstallOptions{})
	require.NoError(t, err)
	require.Zero(t, res.Built)
	dirs, _ := os.ReadDir(filepath.Join(f.dir, "cache", "built"))
	require.Len(t, dirs, 2)
}

// gitFixture is an index with one project and a bare git repository of
// another.
func gitFixture(t *testing.T) (*fixture, *pyindex.GitRepo) {
	t.Helper()
	dists := []pyindex.Dist{{Name: "gitdep", Version: "1.0"}, {Name: "gitdep", Version: "2.0"}}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	repo, err := pyindex.NewGitRepo(context.Background(), filepath.Join(f.dir, "repos", "from-git.git"),
		pyindex.Dist{Name: "from-git", Version: "0.5", Kind: pyindex.Sdist, Requires: []string{"gitdep<2"}})
	require.NoError(t, err)
	return f, repo
}

func TestGitRequirementsSameAsPipAndCachedByCommit(t *testing.T) {
	t.Parallel()
	f, repo := gitFixture(t)
	for _, line := range []string{
		"from-git @ git+" + repo.URL + "@main",
		"git+" + repo.URL + "@v0.5#egg=from-git",
	} {
		t.Run(line, func(t *testing.T) {
			fc := *f
			fc.t = t
			require.Equal(t, []string{"from-git==0.5", "gitdep==1.0"}, fc.requireSameAsPip(line))
		})
	}
	for _, line := range []string{"from-git @ git+" + repo.URL + "@" + repo.Commits[0], "from-git @ git+" + repo.URL} {
		pins, err := f.in.Resolve(context.Background(), f.reqs(line))
		require.NoError(t, err, line)
		require.Equal(t, []string{"from-git==0.5", "gitdep==1.0"}, pinStrings(pins), line)
	}
	line := "from-git @ git+" + repo.URL + "@main"
	venv := filepath.Join(f.dir, "venv")
	res, err := f.installer(Config{CacheDir: filepath.Join(f.dir, "c2")}).Install(context.Background(), f.reqs(line), venv, InstallOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Cloned)
	require.Equal(t, 1, res.Built)
	out, err := exec.Command(filepath.Join(venv, "bin", "python"), "-c", "import from_git; print(from_git.VERSION)").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, "0.5\n", string(out))
	// Second run: the branch is resolved again (one ls-remote), its commit
	// is in the cache: no clone, no build.
	res, err = f.installer(Config{CacheDir: filepath.Join(f.dir, "c2")}).Install(context.Background(), f.reqs(line), filepath.Join(f.dir, "venv2"), InstallOptions{})
	require.NoError(t, err)
	require.Zero(t, res.Cloned)
	require.Zero(t, res.Built)
	// The branch moves: the next install gets the new commit.
	_, err = repo.Commit(context.Background(), pyindex.Dist{Name: "from-git", Version: "0.6", Kind: pyindex.Sdist, Requires: []string{"gitdep"}})
	require.NoError(t, err)
	res, err = f.installer(Config{CacheDir: filepath.Join(f.dir, "c2")}).Install(context.Background(), f.reqs(line), filepath.Join(f.dir, "venv3"), InstallOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Cloned)
	require.Equal(t, []string{"from-git==0.6", "gitdep==2.0"}, pinStrings(res.Packages))
}

func TestGitRequirementBadInputs(t *testing.T) {
	t.Parallel()
	f, repo := gitFixture(t)
	cases := []struct {
		name, line, want string
		gone             bool
	}{
		{"repository does not exist", "ghost @ git+file://" + filepath.Join(f.dir, "nowhere.git") + "@main", "ls-remote", false},
		{"unreachable host", "ghost @ git+https://127.0.0.1:1/ghost.git@main", "ls-remote", false},
		{"branch gone", "from-git @ git+" + repo.URL + "@deleted-branch", "no branch or tag", true},
		{"commit gone", "from-git @ git+" + repo.URL + "@" + strings.Repeat("ab", 20), "not in the repository", true},
		{"wrong project", "other-name @ git+" + repo.URL + "@main", "not other-name", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.in.Install(context.Background(), f.reqs(c.line), filepath.Join(f.dir, "venv-"+strings.ReplaceAll(c.name, " ", "-")), InstallOptions{})
			require.Error(t, err)
			require.Contains(t, err.Error(), c.want)
			if c.gone {
				require.ErrorIs(t, err, ErrRevisionNotFound)
			}
		})
	}
	// Hash-checking mode cannot check a git requirement.
	_, err := f.in.Resolve(context.Background(), f.reqs("--require-hashes", "from-git @ git+"+repo.URL+"@main"))
	require.ErrorContains(t, err, "--require-hashes")
}

// unshareSandbox runs each build in a fresh network namespace (only a
// loopback, down): a build gets no network at all.
func unshareSandbox(calls *atomic.Int64) BuildSandbox {
	return func(ctx context.Context, cmd *exec.Cmd) (*exec.Cmd, error) {
		calls.Add(1)
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			return nil, fmt.Errorf("unshare (apt-get install util-linux): %w", err)
		}
		w := exec.CommandContext(ctx, unshare, append([]string{"--net", "--", cmd.Path}, cmd.Args[1:]...)...)
		w.Dir, w.Env, w.Stdout, w.Stderr = cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr
		return w, nil
	}
}

func TestSandboxedBuildThatNeedsNetworkFailsNamingThePackage(t *testing.T) {
	t.Parallel()
	dists := []pyindex.Dist{{Name: "offline-ok", Version: "1.0", Kind: pyindex.Sdist, DynamicMetadata: true}, {Name: "ext-data", Version: "1.0"}}
	ix, err := pyindex.New(dists)
	require.NoError(t, err)
	f := newFixture(t, dists, pyindex.ServerConfig{})
	fetchURL := f.srv.FileURL(ix.Files()[0].Filename)
	f2 := newFixture(t, append(dists, pyindex.Dist{Name: "downloader", Version: "3.0", Kind: pyindex.Sdist, DynamicMetadata: true, BuildFetches: fetchURL}), pyindex.ServerConfig{})

	// Unsandboxed, the build reaches the index and succeeds.
	_, err = f2.in.Install(context.Background(), f2.reqs("downloader"), filepath.Join(f2.dir, "v0"), InstallOptions{})
	require.NoError(t, err)

	var calls atomic.Int64
	in := f2.installer(Config{Sandbox: unshareSandbox(&calls), CacheDir: filepath.Join(f2.dir, "sandboxed-cache")})
	// A build that needs no network works in the sandbox.
	res, err := in.Install(context.Background(), f2.reqs("offline-ok"), filepath.Join(f2.dir, "v1"), InstallOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Built)
	require.Equal(t, int64(1), calls.Load(), "the metadata hook and the build (one process) ran through the sandbox")
	// One that downloads during its build fails, naming it.
	_, err = in.Install(context.Background(), f2.reqs("downloader"), filepath.Join(f2.dir, "v2"), InstallOptions{})
	var be *BuildError
	require.ErrorAs(t, err, &be)
	require.Equal(t, "downloader", be.Package)
	require.True(t, be.Network, "%v", err)
	require.Contains(t, err.Error(), "building downloader 3.0")
	require.Contains(t, err.Error(), "build sandbox does not allow")
}

func TestIndexNotAllowedRefusedBeforeAnyRequest(t *testing.T) {
	f := newFixture(t, diamond(), pyindex.ServerConfig{})
	other := newFixture(t, diamond(), pyindex.ServerConfig{})
	in := f.installer(Config{AllowedIndexes: []string{f.srv.URL()}})
	for _, lines := range [][]string{
		{"--index-url " + other.srv.URL(), "top"},
		{"--extra-index-url " + other.srv.URL(), "top"},
		{"--find-links " + other.srv.URL() + "top/", "top"},
		{"top @ " + other.srv.FileURL("top-1.0-py3-none-any.whl")},
		{"top @ git+https://git.example.com/top.git@main"},
	} {
		t.Run(lines[0], func(t *testing.T) {
			b1, b2 := f.srv.Requests(), other.srv.Requests()
			_, err := in.Install(context.Background(), f.reqs(lines...), filepath.Join(f.dir, "venv"), InstallOptions{})
			var ne *IndexNotAllowedError
			require.ErrorAs(t, err, &ne)
			require.Contains(t, err.Error(), "is not an allowed index")
			require.Equal(t, b1, f.srv.Requests())
			require.Equal(t, b2, other.srv.Requests())
			_, err = os.Stat(filepath.Join(f.dir, "venv"))
			require.ErrorIs(t, err, os.ErrNotExist)
		})
	}
	// The allowed index, named by the file, works.
	_, err := in.Resolve(context.Background(), f.reqs("--index-url "+f.srv.URL(), "top"))
	require.NoError(t, err)
	_, err = New(Config{CacheDir: t.TempDir(), AllowedIndexes: []string{"pypi.org"}})
	require.ErrorContains(t, err, "not an absolute URL")
}

func TestRequireHashes(t *testing.T) {
	t.Parallel()
	dists := []pyindex.Dist{{Name: "pinned", Version: "1.0", Requires: []string{"dep"}}, {Name: "dep", Version: "1.0"}, {Name: "dep", Version: "1.1"}}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	sha := map[string]string{}
	for _, fl := range f.ix.Files() {
		sha[fl.Filename] = fl.SHA256
	}
	hp, hd := sha["pinned-1.0-py3-none-any.whl"], sha["dep-1.0-py3-none-any.whl"]
	// Good: every distribution pinned with its hash.
	_, err := f.in.Install(context.Background(), f.reqs("--require-hashes", "pinned==1.0 --hash=sha256:"+hp, "dep==1.0 --hash=sha256:"+hd), filepath.Join(f.dir, "v1"), InstallOptions{})
	require.NoError(t, err)
	// A top-level requirement without a hash, or not pinned: refused
	// before any request.
	before := f.srv.Requests()
	_, err = f.in.Resolve(context.Background(), f.reqs("--require-hashes", "pinned==1.0 --hash=sha256:"+hp, "dep==1.0"))
	require.ErrorContains(t, err, "--require-hashes: dep==1.0")
	require.ErrorContains(t, err, "has no --hash")
	_, err = f.in.Resolve(context.Background(), f.reqs("--require-hashes", "pinned>=1.0 --hash=sha256:"+hp))
	require.ErrorContains(t, err, "is not pinned with ==")
	require.Equal(t, before, f.srv.Requests())
	// A dependency without a hash.
	_, err = f.in.Resolve(context.Background(), f.reqs("--require-hashes", "pinned==1.0 --hash=sha256:"+hp))
	require.ErrorContains(t, err, "dep==1.1 has no --hash")
	// A wrong hash: a mismatch naming both, nothing installed.
	venv := filepath.Join(f.dir, "v2")
	_, err = f.in.Install(context.Background(), f.reqs("--require-hashes", "pinned==1.0 --hash=sha256:"+strings.Repeat("0", 64), "dep==1.0 --hash=sha256:"+hd), venv, InstallOptions{})
	var he *HashMismatchError
	require.ErrorAs(t, err, &he)
	require.Equal(t, hp, he.Got)
	got, _ := pyindex.Installed(venv)
	require.Empty(t, got)
	// pip agrees on each.
	_, perr := oracle(t).Resolve(context.Background(), f.srv.URL(), "-r", f.reqFile("--require-hashes", "pinned==1.0 --hash=sha256:"+strings.Repeat("0", 64), "dep==1.0 --hash=sha256:"+hd))
	require.Error(t, perr)
	_, perr = oracle(t).Resolve(context.Background(), f.srv.URL(), "-r", f.reqFile("--require-hashes", "pinned==1.0 --hash=sha256:"+hp))
	require.Error(t, perr)
}

func TestBinaryAndPreOptionsSameAsPip(t *testing.T) {
	t.Parallel()
	dists := []pyindex.Dist{
		{Name: "lib", Version: "1.0"},
		{Name: "lib", Version: "2.0", Kind: pyindex.Sdist, DynamicMetadata: true},
		{Name: "lib", Version: "3.0b1"},
		{Name: "app", Version: "1.0", Requires: []string{"lib"}},
	}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	cases := []struct {
		opts []string
		want string
	}{
		{nil, "lib==2.0"},
		{[]string{"--pre"}, "lib==3.0b1"},
		{[]string{"--prefer-binary"}, "lib==1.0"},
		{[]string{"--only-binary :all:"}, "lib==1.0"},
		{[]string{"--no-binary lib", "--pre"}, "lib==2.0"},
		{[]string{"--only-binary :all:", "--no-binary lib"}, "lib==2.0"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.opts, " "), func(t *testing.T) {
			t.Parallel()
			fc := *f
			fc.t = t
			got := fc.requireSameAsPip(append(append([]string(nil), c.opts...), "app")...)
			require.Equal(t, []string{"app==1.0", c.want}, got)
		})
	}
}

func TestRacingInstallersOnOneColdCache(t *testing.T) {
	t.Parallel()
	ds, reqs := dynamicBenchSet()
	f := newFixture(t, ds, pyindex.ServerConfig{MaxAge: time.Minute})
	repo, err := pyindex.NewGitRepo(context.Background(), filepath.Join(f.dir, "repos", "from-git.git"),
		pyindex.Dist{Name: "from-git", Version: "0.5", Kind: pyindex.Sdist, Requires: []string{"corelib"}})
	require.NoError(t, err)
	reqs = append(reqs, "from-git @ git+"+repo.URL+"@main")
	reqFile := f.reqFile(reqs...)
	cacheDir := filepath.Join(f.dir, "shared-cache")
	const procs = 2
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
		require.Len(t, got, 23)
	}
	// No torn file: every blob is named by its hash, every page and
	// record parses, every checkout is whole; nothing is left in tmp.
	blobs, err := filepath.Glob(filepath.Join(cacheDir, "blobs", "sha256", "*", "*"))
	require.NoError(t, err)
	for _, b := range blobs {
		sum, err := fileSHA256(b)
		require.NoError(t, err)
		require.Equal(t, filepath.Base(b), sum)
	}
	pages, _ := filepath.Glob(filepath.Join(cacheDir, "pages", "*.json"))
	require.GreaterOrEqual(t, len(pages), 22)
	for _, p := range pages {
		data, err := os.ReadFile(p)
		require.NoError(t, err)
		var cp cachedPage
		require.NoError(t, json.Unmarshal(data, &cp), p)
		require.NotEmpty(t, cp.Body)
	}
	in := f.installer(Config{CacheDir: cacheDir})
	interp, err := in.Interpreter(context.Background())
	require.NoError(t, err)
	records, _ := filepath.Glob(filepath.Join(cacheDir, "built", TagsKey(interp), "*"))
	require.Len(t, records, 13)
	for _, r := range records {
		_, _, ok := in.Cache().Built(TagsKey(interp), filepath.Base(r))
		require.True(t, ok, r)
	}
	checkouts, _ := filepath.Glob(filepath.Join(cacheDir, "vcs", "*", "*", "pyproject.toml"))
	require.Len(t, checkouts, 1)
	tmp, _ := os.ReadDir(filepath.Join(cacheDir, "tmp"))
	require.Empty(t, tmp)
	// A later install from that cache builds, hooks and clones nothing.
	res, err := in.Install(context.Background(), f.reqs(reqs...), filepath.Join(f.dir, "venv-after"), InstallOptions{})
	require.NoError(t, err)
	require.Zero(t, res.Built)
	require.Zero(t, res.MetadataHooks)
	require.Zero(t, res.Cloned)
	require.Zero(t, res.Requests)
}

func TestDynamicSdistWhoseBuildFailsShowsItsOutput(t *testing.T) {
	dists := []pyindex.Dist{{Name: "brittle", Version: "0.2", Kind: pyindex.Sdist, DynamicMetadata: true, FailBuild: true}}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	_, err := f.in.Install(context.Background(), f.reqs("brittle"), filepath.Join(f.dir, "venv"), InstallOptions{})
	var be *BuildError
	require.ErrorAs(t, err, &be)
	require.Equal(t, "brittle", be.Package)
	require.Equal(t, "build_wheel", be.Step, "the hook succeeded; the build after it failed")
	require.Contains(t, be.StderrTail, "simulated compiler failure building brittle")
	require.False(t, be.Network)
}

// TestDynamicBuildRequiresFromBackendHook: a backend (in-tree, through
// backend-path) whose get_requires_for_build_wheel asks for a package that
// build-system.requires does not list, and whose metadata and build hooks
// import it, builds only when the installer installs it first, as pip does:
// through the build server (an sdist from the index) and through a build
// process of its own (a local project directory).
func TestDynamicBuildRequiresFromBackendHook(t *testing.T) {
	t.Parallel()
	dists := []pyindex.Dist{
		{Name: "app", Version: "1.0", Requires: []string{"dyn-build"}},
		{Name: "dyn-build", Version: "0.4", Kind: pyindex.Sdist, DynamicMetadata: true, DynamicBuildRequires: []string{"build-helper >= 1"}, Requires: []string{"dep"}},
		{Name: "build-helper", Version: "0.9"},
		{Name: "build-helper", Version: "1.2"},
		{Name: "dep", Version: "1.0"},
		{Name: "asks-missing", Version: "1.0", Kind: pyindex.Sdist, DynamicMetadata: true, DynamicBuildRequires: []string{"not-on-any-index"}},
	}
	f := newFixture(t, dists, pyindex.ServerConfig{})
	got := f.requireSameAsPip("app")
	require.Equal(t, []string{"app==1.0", "dep==1.0", "dyn-build==0.4"}, got)

	venv := filepath.Join(f.dir, "venv")
	res, err := f.installer(Config{CacheDir: filepath.Join(f.dir, "c2")}).Install(context.Background(), f.reqs("app"), venv, InstallOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.MetadataHooks)
	require.Equal(t, 1, res.Built)
	installed, err := pyindex.Installed(venv)
	require.NoError(t, err)
	// The build requirement went into the build environment only.
	require.Equal(t, got, installed)
	tmp, _ := os.ReadDir(filepath.Join(f.dir, "c2", "tmp"))
	require.Empty(t, tmp, "build environments are removed")

	// A local project directory is built by a process of its own.
	proj := filepath.Join(f.dir, "proj")
	require.NoError(t, pyindex.WriteSourceTree(proj, pyindex.Dist{Name: "local-dyn", Version: "2.1", Kind: pyindex.Sdist, DynamicBuildRequires: []string{"build-helper>=1"}, Requires: []string{"dep"}}))
	venv2 := filepath.Join(f.dir, "venv2")
	res, err = f.installer(Config{CacheDir: filepath.Join(f.dir, "c3")}).Install(context.Background(), f.reqs(proj), venv2, InstallOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"dep==1.0", "local-dyn==2.1"}, pinStrings(res.Packages))

	// Without the hook's requirement, the same backend fails: the test
	// above passes only because it was installed.
	py, err := exec.LookPath("/usr/bin/python3")
	require.NoError(t, err)
	bare := exec.Command(py, "-I", "-c", "import sys; sys.path.insert(0, '.'); import pkbackend, tempfile; pkbackend.build_wheel(tempfile.mkdtemp())")
	bare.Dir = proj
	out, err := bare.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "No module named 'build_helper'")

	// A requirement the hook asks for that no index has is a clear error
	// naming the hook.
	_, err = f.in.Install(context.Background(), f.reqs("asks-missing"), filepath.Join(f.dir, "venv3"), InstallOptions{})
	require.ErrorIs(t, err, ErrPackageMissing)
	require.Contains(t, err.Error(), "not-on-any-index")
	require.Contains(t, err.Error(), "get_requires_for_build_wheel")
}
