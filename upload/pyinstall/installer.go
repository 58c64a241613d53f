package pyinstall

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Stage is a step of one package's installation, reported through
// Config.Progress.
type Stage string

// Stages, in the order a package normally goes through them.
const (
	StageResolved   Stage = "resolved"   // pinned by the resolver
	StageCached     Stage = "cached"     // its wheel was already in the cache
	StageDownloaded Stage = "downloaded" // a file was fetched from an index
	StageCloned     Stage = "cloned"     // a git repository was cloned
	StageMetadata   Stage = "metadata"   // the PEP 517 metadata hook ran
	StageRetry      Stage = "retry"      // a download failed and is retried
	StageBuilt      Stage = "built"      // an sdist was built into a wheel
	StageInstalled  Stage = "installed"  // unpacked into the virtualenv
	StageFailed     Stage = "failed"     // it failed; Err says why
)

// Event is one progress report.
type Event struct {
	Package string // normalized name
	Version string
	Stage   Stage
	// Detail is a filename or URL, when there is one.
	Detail  string
	Elapsed time.Duration
	Err     error
}

// Config configures an Installer. Zero values are the documented defaults.
type Config struct {
	// IndexURL is the PEP 503 simple index. Default
	// "https://pypi.org/simple/". A requirements file's --index-url
	// overrides it.
	IndexURL string
	// ExtraIndexURLs are searched too, as with pip's --extra-index-url.
	ExtraIndexURLs []string
	// FindLinks are directories or HTML pages of links to distribution
	// files, as with pip's --find-links.
	FindLinks []string
	// NoIndex uses only FindLinks and direct references.
	NoIndex bool
	// CacheDir holds the shared wheel cache. Required.
	CacheDir string
	// Python is the interpreter the virtualenvs are made with and builds
	// run under. Default "/usr/bin/python3" (Debian's, which every
	// sandbox sees at the same path).
	Python string
	// Workers bounds concurrent downloads. Default 8.
	Workers int
	// BuildWorkers bounds concurrent build processes (a metadata hook
	// and the build_wheel that follows it in the same process). Default
	// 16: builds of an app's sdists overlap even on a small machine, as
	// many wait on I/O or on a child compiler.
	BuildWorkers int
	// Sandbox wraps every build process (PEP 517 hooks run code from the
	// upload). nil runs builds as plain child processes of the installer,
	// with its user and network: New logs a warning saying so, and only
	// tests and trusted uploads should do it.
	Sandbox BuildSandbox
	// BuildUser, when set, is the user the Sandbox runs builds as: what a
	// build writes (its unpacked source tree, its output directories, the
	// build server's home) is made that user's as it is made, and the
	// install's build directory (BuildDir) and build environments are
	// left readable to it; the rest stays the installer's, and what a
	// build produced is copied out of its reach before it is used. nil:
	// nothing changes owner (builds run as the installer's user).
	BuildUser *BuildUser
	// AllowedIndexes, when not empty, lists the URL prefixes (for example
	// "https://pypi.org/simple/") that a requirements file may name:
	// every remote location a Requirements value names (--index-url,
	// --extra-index-url, http(s) --find-links, direct URLs and git URLs)
	// must start with one of them, or Install and Resolve fail with an
	// *IndexNotAllowedError before any request. The Config's own
	// IndexURL, ExtraIndexURLs and FindLinks are the operator's and are
	// not checked.
	AllowedIndexes []string
	// Git is the git program VCS requirements are cloned with. Default
	// "git" (Debian's, apt-get install git).
	Git string
	// Now is the clock index pages' freshness is judged by. Default
	// time.Now.
	Now func() time.Time
	// Retries is how many times a failed index request or download is
	// retried (with backoff) before the install fails. Default 3.
	Retries int
	// HTTPClient is used for every request. Default: a client that keeps
	// 2*Workers idle connections per host, honours the proxy environment
	// variables, and gives up on a connect after 30 s or on response
	// headers after 60 s.
	HTTPClient *http.Client
	// Logger gets a line per package stage; nil means slog.Default().
	Logger *slog.Logger
	// Progress, if set, is called for every Event. It is called from
	// the installer's worker goroutines, possibly concurrently, and must
	// return quickly; it must not call back into the Installer.
	Progress func(Event)
}

// BuildUser is the user and group of sandboxed builds (Config.BuildUser).
type BuildUser struct {
	UID, GID int
}

// Installer resolves requirements the way pip does, fetches and builds
// wheels in parallel into a shared cache, and installs them into
// virtualenvs. It is safe for concurrent use; several processes may share
// its cache directory.
type Installer struct {
	cfg    Config
	log    *slog.Logger
	cache  *Cache
	client *http.Client

	interpOnce sync.Once
	interp     *Interpreter
	interpErr  error
}

// New validates cfg and opens the cache.
func New(cfg Config) (*Installer, error) {
	if cfg.CacheDir == "" {
		return nil, errors.New("pyinstall: Config.CacheDir is required")
	}
	if u := cfg.BuildUser; u != nil && (u.UID <= 0 || u.GID <= 0) {
		return nil, fmt.Errorf("pyinstall: Config.BuildUser %d:%d: want a UID and GID other than root's", u.UID, u.GID)
	}
	if cfg.Workers < 0 || cfg.Retries < 0 || cfg.BuildWorkers < 0 {
		return nil, fmt.Errorf("pyinstall: negative Workers (%d), BuildWorkers (%d) or Retries (%d)", cfg.Workers, cfg.BuildWorkers, cfg.Retries)
	}
	for _, a := range cfg.AllowedIndexes {
		if u, err := url.Parse(a); err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("pyinstall: AllowedIndexes entry %q is not an absolute URL", a)
		}
	}
	if cfg.IndexURL == "" {
		cfg.IndexURL = "https://pypi.org/simple/"
	}
	for _, u := range append([]string{cfg.IndexURL}, cfg.ExtraIndexURLs...) {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return nil, fmt.Errorf("pyinstall: index URL %q is not http(s)", u)
		}
	}
	if cfg.Python == "" {
		cfg.Python = "/usr/bin/python3"
	}
	if cfg.Workers == 0 {
		cfg.Workers = 8
	}
	if cfg.BuildWorkers == 0 {
		cfg.BuildWorkers = 16
	}
	if cfg.Retries == 0 {
		cfg.Retries = 3
	}
	if cfg.Git == "" {
		cfg.Git = "git"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	client := cfg.HTTPClient
	if client == nil {
		// No overall timeout (a large wheel may take long); a stalled
		// connection fails on the header timeout or is cut by ctx.
		client = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   30 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			MaxIdleConnsPerHost:   2 * cfg.Workers,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		}}
	}
	cache, err := OpenCache(cfg.CacheDir, cfg.Logger)
	if err != nil {
		return nil, err
	}
	if cfg.Sandbox == nil {
		cfg.Logger.Warn("pyinstall: no build sandbox: sdist builds run as plain processes with the installer's user and network (set Config.Sandbox)", "cache", cfg.CacheDir)
	}
	return &Installer{cfg: cfg, log: cfg.Logger, cache: cache, client: client}, nil
}

// Cache is the installer's wheel cache.
func (in *Installer) Cache() *Cache { return in.cache }

// Interpreter probes (once) and returns the target interpreter.
func (in *Installer) Interpreter(ctx context.Context) (*Interpreter, error) {
	in.interpOnce.Do(func() {
		in.interp, in.interpErr = ProbeInterpreter(ctx, in.cfg.Python, in.cache.Dir())
	})
	return in.interp, in.interpErr
}

func (in *Installer) emit(ev Event) {
	attrs := []any{"package", ev.Package, "version", ev.Version, "stage", string(ev.Stage)}
	if ev.Detail != "" {
		attrs = append(attrs, "detail", ev.Detail)
	}
	if ev.Elapsed > 0 {
		attrs = append(attrs, "elapsed", ev.Elapsed.Round(time.Millisecond))
	}
	if ev.Err != nil {
		in.log.Warn("pyinstall", append(attrs, "err", ev.Err)...)
	} else {
		in.log.Debug("pyinstall", attrs...)
	}
	if in.cfg.Progress != nil {
		in.cfg.Progress(ev)
	}
}

// Pin is one resolved distribution.
type Pin struct {
	Name    string // normalized
	Version string
	// Requested is true for a top-level requirement.
	Requested bool
}

func (p Pin) String() string { return p.Name + "==" + p.Version }

// Result is what an Install did.
type Result struct {
	// Packages is the installed set, sorted by name.
	Packages []Pin
	// Built counts sdists built now; CacheHits wheels taken from the
	// cache; Downloaded files fetched.
	Built, CacheHits, Downloaded int
	// MetadataHooks counts PEP 517 prepare_metadata_for_build_wheel calls;
	// Cloned git repositories cloned (a commit not yet in the cache).
	MetadataHooks, Cloned int
	// Requests counts HTTP requests made (0 for a warm install whose
	// index pages are all within their max-age).
	Requests       int
	Resolve, Total time.Duration
}

// InstallOptions are per-installation settings.
type InstallOptions struct {
	// ScriptPython is the interpreter path written into scripts'
	// shebangs. Default: <venv>/bin/python. Set it when the venv will be
	// seen at another path (for example inside an image mounted at
	// /app).
	ScriptPython string
}

// Resolve pins the complete set of distributions for reqs without
// installing anything.
func (in *Installer) Resolve(ctx context.Context, reqs *Requirements) ([]Pin, error) {
	s, err := in.newSession(ctx, reqs, 0)
	if err != nil {
		return nil, err
	}
	defer s.close()
	return s.resolve()
}

// Install resolves reqs, fetches or builds every wheel in parallel (through
// the cache) and installs them into the virtualenv at venv, creating it with
// `python -m venv --without-pip` if it does not exist. Nothing is installed
// unless every wheel was obtained.
func (in *Installer) Install(ctx context.Context, reqs *Requirements, venv string, opts InstallOptions) (*Result, error) {
	return in.install(ctx, reqs, venv, opts, 0)
}

// install is Install at a build-environment depth (0 for an app).
func (in *Installer) install(ctx context.Context, reqs *Requirements, venv string, opts InstallOptions, depth int) (*Result, error) {
	t0 := time.Now()
	venv, err := filepath.Abs(venv)
	if err != nil {
		return nil, fmt.Errorf("pyinstall: venv %s: %w", venv, err)
	}
	s, err := in.newSession(ctx, reqs, depth)
	if err != nil {
		return nil, err
	}
	defer s.close()

	// The venv is made while the resolver works.
	venvDone := make(chan error, 1)
	s.goBackground(func() { venvDone <- in.makeVenv(s.ctx, venv) })

	pins, err := s.resolve()
	if err != nil {
		return nil, err
	}
	res := &Result{Packages: pins, Resolve: time.Since(t0)}

	// Fetch or build every wheel, in parallel.
	type got struct {
		path string
		err  error
	}
	wheels := make([]got, len(pins))
	var wg sync.WaitGroup
	for i, p := range pins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rel, err := s.release(p.Name, p.Version)
			if err == nil {
				var w wheelResult
				w, err = s.wheel(rel).wait(s.ctx)
				wheels[i].path = w.path
			}
			wheels[i].err = err
		}()
	}
	wg.Wait()
	var errs []error
	for i, w := range wheels {
		if w.err != nil {
			in.emit(Event{Package: pins[i].Name, Version: pins[i].Version, Stage: StageFailed, Err: w.err})
			errs = append(errs, w.err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("pyinstall: %w", errors.Join(errs...))
	}
	if err := <-venvDone; err != nil {
		return nil, err
	}
	interp := s.interp
	lay := venvLayout{
		root:    venv,
		site:    filepath.Join(venv, "lib", interp.VersionDir, "site-packages"),
		bin:     filepath.Join(venv, "bin"),
		include: filepath.Join(venv, "include", "site", interp.VersionDir),
		shebang: opts.ScriptPython,
	}
	if lay.shebang == "" {
		lay.shebang = filepath.Join(venv, "bin", "python")
	}
	// Unpack in parallel: distributions own disjoint files.
	sem := make(chan struct{}, in.cfg.Workers)
	ierrs := make([]error, len(pins))
	for i, p := range pins {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t := time.Now()
			if err := installWheel(wheels[i].path, lay, p.Requested); err != nil {
				ierrs[i] = fmt.Errorf("install %s %s: %w", p.Name, p.Version, err)
				in.emit(Event{Package: p.Name, Version: p.Version, Stage: StageFailed, Err: ierrs[i]})
				return
			}
			in.emit(Event{Package: p.Name, Version: p.Version, Stage: StageInstalled, Elapsed: time.Since(t)})
		}()
	}
	wg.Wait()
	if err := errors.Join(ierrs...); err != nil {
		return nil, fmt.Errorf("pyinstall: %w", err)
	}
	s.mu.Lock()
	res.Built, res.CacheHits, res.Downloaded = s.built, s.cacheHits, s.downloaded
	res.MetadataHooks, res.Cloned = s.hooks, s.cloned
	s.mu.Unlock()
	res.Requests = int(s.f.requests.Load())
	res.Total = time.Since(t0)
	in.log.Info("pyinstall: installed", "venv", venv, "packages", len(pins), "built", res.Built, "metadata_hooks", res.MetadataHooks, "cloned", res.Cloned, "requests", res.Requests, "cache_hits", res.CacheHits, "downloaded", res.Downloaded, "elapsed", res.Total.Round(time.Millisecond))
	return res, nil
}

// makeVenv creates a virtualenv without pip, unless one exists: a copy of a
// template the interpreter made once (`python -m venv --without-pip`, kept
// in the cache), with the template's path replaced by venv's in the files
// that name it (pyvenv.cfg, the activate scripts). Copying takes a
// millisecond where starting the interpreter takes tens, and makes exactly
// what it would have made.
func (in *Installer) makeVenv(ctx context.Context, venv string) error {
	if _, err := os.Stat(filepath.Join(venv, "pyvenv.cfg")); err == nil {
		return nil
	}
	tmpl, origin, err := in.venvTemplate(ctx)
	if err == nil {
		if err = copyVenv(tmpl, origin, venv); err == nil {
			return nil
		}
		in.log.Warn("pyinstall: copying the venv template failed; making the venv with python", "venv", venv, "err", err)
		_ = os.RemoveAll(venv)
	}
	return in.runVenv(ctx, venv)
}

func (in *Installer) runVenv(ctx context.Context, venv string) error {
	out, err := exec.CommandContext(ctx, in.cfg.Python, "-m", "venv", "--without-pip", venv).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pyinstall: %s -m venv --without-pip %s: %w: %s (apt-get install python3-venv)", in.cfg.Python, venv, err, tail(out, 5))
	}
	return nil
}

// venvTemplateName is the template venv's directory name, distinctive so
// that replacing it in the activate scripts' prompt touches nothing else.
const venvTemplateName = "paaskit-venv-template"

// venvTemplate returns the cached template venv of the interpreter and the
// path it was made at, making it the first time (in a temporary directory
// renamed into place, so racing installers never see half a template).
func (in *Installer) venvTemplate(ctx context.Context) (dir, origin string, err error) {
	interp, err := in.Interpreter(ctx)
	if err != nil {
		return "", "", err
	}
	real, err := filepath.EvalSymlinks(in.cfg.Python)
	if err != nil {
		return "", "", err
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", "", err
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s|%s|%d|%d|%s", in.cfg.Python, real, fi.Size(), fi.ModTime().UnixNano(), TagsKey(interp))))
	final := filepath.Join(in.cache.Dir(), "venvs", hex.EncodeToString(sum[:8]))
	read := func() (string, string, error) {
		o, err := os.ReadFile(filepath.Join(final, "origin"))
		if err != nil {
			return "", "", err
		}
		return filepath.Join(final, venvTemplateName), strings.TrimSpace(string(o)), nil
	}
	if d, o, err := read(); err == nil {
		return d, o, nil
	}
	tmp, err := in.cache.TempDir("venv-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(tmp)
	origin = filepath.Join(tmp, venvTemplateName)
	if err := in.runVenv(ctx, origin); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, "origin"), []byte(origin+"\n"), 0o644); err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return "", "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		// Another installer made it first.
		if d, o, rerr := read(); rerr == nil {
			return d, o, nil
		}
		return "", "", err
	}
	return read()
}

// copyVenv copies the template venv made at origin (now at tmpl) to venv.
func copyVenv(tmpl, origin, venv string) error {
	venv = filepath.Clean(venv)
	fix := func(b []byte) []byte {
		b = bytes.ReplaceAll(b, []byte(origin), []byte(venv))
		return bytes.ReplaceAll(b, []byte(venvTemplateName), []byte(filepath.Base(venv)))
	}
	return filepath.WalkDir(tmpl, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(tmpl, p)
		if err != nil {
			return err
		}
		dst := filepath.Join(venv, rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(string(fix([]byte(target))), dst)
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		default:
			fi, err := d.Info()
			if err != nil {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, fix(data), fi.Mode().Perm())
		}
	})
}

// sortPins sorts by name.
func sortPins(p []Pin) {
	sort.Slice(p, func(i, j int) bool { return p[i].Name < p[j].Name })
}
