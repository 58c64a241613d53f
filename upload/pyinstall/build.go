package pyinstall

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/paaskit/paaskit/upload/extract"
)

// BuildSandbox wraps the command of a build process so that it runs
// confined: the platform passes one built on runner's sandbox.
//
// A build process is the target interpreter (or a build environment's)
// running PEP 517 hooks on unpacked sources: for an install, one build
// server per interpreter, which forks a child per sdist (metadata hook, then
// build_wheel), and a plain process per source directory built on its own.
// All the builds of one install are of the same upload, so they may share a
// sandbox.
//
// It is called from the installer's goroutines, possibly concurrently, once
// per process, before it starts. cmd has Path, Args, Dir, Env and Stderr set
// (Stdin and Stdout are the installer's pipes, set up after the call, on
// whatever command is returned); ctx is the install's. It returns the
// command to run instead: cmd itself changed (a SysProcAttr with namespaces
// and credentials) or a new one that runs cmd's argv inside a sandbox, with
// the same Dir, Env and Stderr, leaving Stdin and Stdout nil. The builds
// need to read the interpreter and its build environments (under
// Config.CacheDir/tmp), to write the unpacked sources and output directories
// (also under CacheDir/tmp), and no network: the installer itself fetches
// everything a build needs. The process and its children must end when it
// is killed (the installer kills it with ctx, and its children die with it
// through PR_SET_PDEATHSIG). An error fails the builds that needed it.
type BuildSandbox func(ctx context.Context, cmd *exec.Cmd) (*exec.Cmd, error)

type buildDirKey struct{}

// BuildDir returns the directory of the install whose context ctx is (the
// one a BuildSandbox is called with): everything its builds read and
// write, other than the interpreter and the system, lies beneath it (build
// environments, unpacked sources, outputs, the build server's home), and
// nothing of any other install. A sandbox mounts it read-write at the same
// path, and nothing else of the cache. "" for a context that is not an
// install's.
func BuildDir(ctx context.Context) string {
	d, _ := ctx.Value(buildDirKey{}).(string)
	return d
}

// buildTemp makes a private directory for build work in the install's
// build directory (in the cache's tmp outside an install).
func (in *Installer) buildTemp(ctx context.Context, prefix string) (string, error) {
	if d := BuildDir(ctx); d != "" {
		return os.MkdirTemp(d, prefix)
	}
	return in.cache.TempDir(prefix)
}

// forBuild makes path (a directory the installer just made) something a
// build may use: the build user's own with own, else readable and
// traversable by it (mode). Without Config.BuildUser it does nothing.
func (in *Installer) forBuild(path string, own bool, mode os.FileMode) error {
	u := in.cfg.BuildUser
	if u == nil {
		return nil
	}
	if own {
		return os.Lchown(path, u.UID, u.GID)
	}
	return os.Chmod(path, mode)
}

// giveTree makes the tree at dir (just unpacked or copied by the
// installer) the build user's, without following links.
func (in *Installer) giveTree(dir string) error {
	u := in.cfg.BuildUser
	if u == nil {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, u.UID, u.GID)
	})
}

// BuildError is an sdist or source tree whose PEP 517 build or metadata hook
// failed.
type BuildError struct {
	// Package and Version name what was built ("" when unknown, e.g. a
	// source directory).
	Package, Version string
	// Source is the sdist file, directory or git URL.
	Source string
	// Step is the PEP 517 hook that failed: "build_wheel" or
	// "prepare_metadata_for_build_wheel".
	Step string
	// Err is the process error (exit status).
	Err error
	// StderrTail is the end of the build's output.
	StderrTail string
	// Network is set when the output says the build tried to reach the
	// network (which a sandboxed build may not).
	Network bool
	// Killed is set when the build died of SIGKILL, as the kernel's OOM
	// killer does at a sandbox's memory bound (a sandbox's init reports
	// it as exit status 137).
	Killed bool
}

func (e *BuildError) Error() string {
	step := e.Step
	if step == "" {
		step = "build"
	}
	net := ""
	if e.Network {
		net = " (the build tried to use the network, which the build sandbox does not allow: the package must build offline, or be published as a wheel)"
	}
	if e.Killed {
		net += " (killed by SIGKILL: the build sandbox's memory bound, most likely)"
	}
	return fmt.Sprintf("building %s %s from %s failed in %s: %v%s\n--- build output (tail) ---\n%s", e.Package, e.Version, filepath.Base(e.Source), step, e.Err, net, e.StderrTail)
}

func (e *BuildError) Unwrap() error { return e.Err }

// networkRe matches what Python and common tools print when a connection
// cannot be made for want of a network.
var networkRe = regexp.MustCompile(`(?i)network is unreachable|temporary failure in name resolution|name or service not known|could not resolve host|no route to host|connection refused`)

// MetadataMismatchError is a wheel whose METADATA differs from what the
// backend's prepare_metadata_for_build_wheel hook said, on which the
// resolution was based; pip refuses such a wheel too.
type MetadataMismatchError struct {
	Package, Version string
	// Field is the metadata field that differs.
	Field string
	// Hook and Wheel are its values from the metadata the resolver used
	// (the hook's) and from the other side (the built wheel's).
	Hook, Wheel string
	// Other names the other side when it is not the built wheel (for
	// example "the sdist's file name").
	Other string
}

func (e *MetadataMismatchError) Error() string {
	other := e.Other
	if other == "" {
		other = "the built wheel"
	}
	return fmt.Sprintf("%s %s: %s has %s %s, but the metadata (prepare_metadata_for_build_wheel) says %s; refused, as pip does", e.Package, e.Version, other, e.Field, e.Wheel, e.Hook)
}

// checkSameMetadata compares the metadata the resolver used with a built
// wheel's.
func checkSameMetadata(pkg, version string, hook, wheel *coreMetadata) error {
	if NormalizeName(hook.Name) != NormalizeName(wheel.Name) {
		return &MetadataMismatchError{Package: pkg, Version: version, Field: "Name", Hook: hook.Name, Wheel: wheel.Name}
	}
	if hook.Version != wheel.Version {
		return &MetadataMismatchError{Package: pkg, Version: version, Field: "Version", Hook: hook.Version, Wheel: wheel.Version}
	}
	a, b := append([]string(nil), hook.RequiresDist...), append([]string(nil), wheel.RequiresDist...)
	sort.Strings(a)
	sort.Strings(b)
	if strings.Join(a, "\n") != strings.Join(b, "\n") {
		return &MetadataMismatchError{Package: pkg, Version: version, Field: "Requires-Dist", Hook: strings.Join(a, "; "), Wheel: strings.Join(b, "; ")}
	}
	return nil
}

// buildDriver runs inside the target interpreter (or the build's isolated
// environment): it loads the backend that pyproject.toml declares (PEP 517,
// with backend-path), or setuptools' legacy backend when there is no
// pyproject.toml, and calls one hook. Mode "metadata" calls
// prepare_metadata_for_build_wheel, or build_wheel when the backend has no
// such hook (PEP 517 makes it optional); mode "wheel" calls build_wheel.
// First it asks get_requires_for_build_wheel, when the backend has it, for
// the build's dynamic requirements: if any is not among those the build
// environment was made with (argv[4], a JSON list), it prints them and
// exits without building, and the installer makes an environment with them
// and runs it again (pip installs them into its environment the same way).
const buildDriver = unmetRequiresPy + `
import importlib, json, os, sys
mode, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
os.chdir(src)
bs = {}
if os.path.exists("pyproject.toml"):
    import tomllib
    with open("pyproject.toml", "rb") as f:
        bs = tomllib.load(f).get("build-system", {})
backend = bs.get("build-backend") or "setuptools.build_meta:__legacy__"
for p in reversed(bs.get("backend-path", [])):
    sys.path.insert(0, os.path.abspath(p))
mod, _, obj = backend.partition(":")
b = importlib.import_module(mod)
for a in [x for x in obj.split(".") if x]:
    b = getattr(b, a)
gr = getattr(b, "get_requires_for_build_wheel", None)
if gr is not None:
    sys.stdout.write("\nPAASKIT-STEP:get_requires_for_build_wheel\n")
    asked = gr(None)
    if not isinstance(asked, (list, tuple)) or not all(isinstance(x, str) for x in asked):
        raise TypeError("get_requires_for_build_wheel returned %r, not a list of strings" % (asked,))
    if _unmet(asked, json.loads(sys.argv[4])):
        sys.stdout.write("\nPAASKIT-REQUIRES:%s\n" % json.dumps(list(asked)))
        sys.exit(0)
hook = getattr(b, "prepare_metadata_for_build_wheel", None)
if gr is not None:
    nxt = "prepare_metadata_for_build_wheel" if mode in ("metadata", "both") and hook is not None else "build_wheel"
    sys.stdout.write("\nPAASKIT-STEP:%s\n" % nxt)
    sys.stdout.flush()
if mode in ("metadata", "both") and hook is not None:
    md = os.path.join(out, "metadata")
    os.mkdir(md)
    name = hook(md)
    sys.stdout.write("\nPAASKIT-METADATA:metadata/%s\n" % name)
    sys.stdout.flush()
    if mode == "metadata":
        sys.exit(0)
    # The wheel is built in the same process, given the prepared
    # metadata as PEP 517 allows (pip does the same).
    wd = os.path.join(out, "wheel")
    os.mkdir(wd)
    name = b.build_wheel(wd, None, os.path.join(md, name))
    sys.stdout.write("\nPAASKIT-WHEEL:wheel/%s\n" % name)
else:
    name = b.build_wheel(out)
    sys.stdout.write("\nPAASKIT-WHEEL:%s\n" % name)
`

// unmetRequiresPy defines _unmet(asked, have): the requirements of asked
// (what get_requires_for_build_wheel returned) that neither are among have
// (those the build environment was made with) nor are satisfied by what the
// interpreter has installed (pip, too, installs only what a build
// environment lacks; the target interpreter, used as it is for a project
// with no build-system.requires, may have setuptools' wheel already). It
// parses requirements with packaging where the interpreter has it (on its
// own, vendored by setuptools or pip), and otherwise takes only a bare
// installed name as satisfied; when every requirement asked for is among
// have (an empty list, most often) it imports nothing.
const unmetRequiresPy = `
def _unmet(asked, have):
    norm = lambda r: "".join(r.split()).lower()
    hv = set(norm(r) for r in have)
    asked = [r for r in asked if norm(r) not in hv]
    if not asked:
        # Nothing to check: no import of packaging, which may mean
        # importing setuptools or pip (hundreds of milliseconds of CPU
        # in every build child).
        return []
    import importlib, importlib.metadata, re
    req = None
    for m in ("packaging.requirements", "setuptools.extern.packaging.requirements", "pip._vendor.packaging.requirements"):
        try:
            req = importlib.import_module(m).Requirement
            break
        except Exception:
            pass
    out = []
    for r in asked:
        ok = False
        try:
            if req is not None:
                q = req(r)
                if q.marker is not None and not q.marker.evaluate():
                    continue
                ok = q.specifier.contains(importlib.metadata.version(q.name), prereleases=True)
            else:
                m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*", r)
                ok = m is not None and importlib.metadata.version(m.group(1)) is not None
        except Exception:
            ok = False
        if not ok:
            out.append(r)
    return out
`

// tail returns the last n lines (at most 4 KiB) of b.
func tail(b []byte, n int) string {
	s := strings.TrimRight(string(b), "\n")
	if len(s) > 4096 {
		s = s[len(s)-4096:]
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// preparedSource is a source tree unpacked (or copied) for building, with the
// interpreter that has its build requirements.
type preparedSource struct {
	pkg, version string
	source       string // what it came from, for errors
	dir          string // the project directory
	work         string // the private directory holding it
	envFor       func(context.Context, []string) (string, error)

	mu sync.Mutex
	// python is the interpreter of the build environment, made with
	// requires (build-system.requires, then with what
	// get_requires_for_build_wheel added, once extended).
	python   string
	requires []string
	extended bool
}

// env returns the build environment's interpreter and the requirements it
// was made with.
func (p *preparedSource) env() (python string, requires []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.python, p.requires
}

// dynamicRequiresError is a hook run that stopped before building because
// the backend's get_requires_for_build_wheel asked for requirements its
// build environment was not made with.
type dynamicRequiresError struct {
	asked []string
}

func (e *dynamicRequiresError) Error() string {
	return fmt.Sprintf("get_requires_for_build_wheel asks for %s", strings.Join(e.asked, ", "))
}

// addBuildRequires makes p's build environment again with what the
// backend's get_requires_for_build_wheel asked for (PEP 517: a frontend
// installs them before it calls the metadata or build hook). It does so
// once: a backend that asks for more once they are installed is refused.
// python is the environment the run that asked was given: when another run
// extended p in the meantime, nothing is done again.
func (in *Installer) addBuildRequires(ctx context.Context, p *preparedSource, python string, asked []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.python != python {
		return nil
	}
	if p.extended || p.envFor == nil {
		return &BuildError{Package: p.pkg, Version: p.version, Source: p.source, Step: "get_requires_for_build_wheel",
			Err:        fmt.Errorf("the backend asks for %s, which are not all in its build environment (%s) even after they were installed", strings.Join(asked, ", "), strings.Join(p.requires, ", ")),
			StderrTail: strings.Join(asked, "\n")}
	}
	union := append([]string(nil), p.requires...)
	seen := map[string]bool{}
	for _, r := range union {
		seen[strings.ToLower(strings.Join(strings.Fields(r), ""))] = true
	}
	for _, r := range asked {
		if k := strings.ToLower(strings.Join(strings.Fields(r), "")); !seen[k] {
			seen[k] = true
			union = append(union, r)
		}
	}
	py, err := p.envFor(ctx, union)
	if err != nil {
		return fmt.Errorf("pyinstall: build requirements of %s %s from get_requires_for_build_wheel (%s): %w", p.pkg, p.version, strings.Join(union, ", "), err)
	}
	in.log.Info("pyinstall: build environment extended by get_requires_for_build_wheel", "package", p.pkg, "version", p.version, "requires", union)
	p.python, p.requires, p.extended = py, union, true
	return nil
}

// prepareSource unpacks an sdist, or copies a source directory (a git
// checkout in the cache, which builds must not write to), into a private
// directory and gets its build environment. The caller removes p.work.
func (in *Installer) prepareSource(ctx context.Context, source, pkg, version string, isDir bool, envFor func(context.Context, []string) (string, error)) (p *preparedSource, err error) {
	work, err := in.buildTemp(ctx, "build-")
	if err == nil {
		// The build may enter its work directory but not replace
		// what the installer puts there.
		err = in.forBuild(work, false, 0o711)
	}
	if err != nil {
		return nil, fmt.Errorf("pyinstall: build %s: %w", source, err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(work)
		}
	}()
	p = &preparedSource{pkg: pkg, version: version, source: source, work: work, envFor: envFor}
	if isDir {
		p.dir = filepath.Join(work, "src")
		// cp -a keeps symbolic links and modes, as a checkout has them.
		if out, err := exec.CommandContext(ctx, "cp", "-a", "--", source, p.dir).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("pyinstall: copy source tree %s: %w: %s", source, err, tail(out, 3))
		}
	} else {
		// An sdist is untrusted input: unpack it with the same checks
		// as an uploaded bundle.
		dst := filepath.Join(work, "src")
		if err := extract.FromFile(ctx, source, dst, extract.FormatAuto, extract.Config{Logger: in.log}); err != nil {
			return nil, fmt.Errorf("pyinstall: unpack sdist %s: %w", filepath.Base(source), err)
		}
		p.dir, err = sdistRoot(dst)
		if err != nil {
			return nil, fmt.Errorf("pyinstall: sdist %s: %w", filepath.Base(source), err)
		}
	}
	if err := in.giveTree(filepath.Join(work, "src")); err != nil {
		return nil, fmt.Errorf("pyinstall: build %s: hand the source tree to the build user: %w", source, err)
	}
	p.python = in.interp.Path
	requires, err := in.buildRequires(ctx, p.dir)
	if err != nil {
		return nil, &BuildError{Package: pkg, Version: version, Source: source, Step: "pyproject.toml", Err: err, StderrTail: err.Error()}
	}
	if len(requires) > 0 && envFor != nil {
		p.python, err = envFor(ctx, requires)
		if err != nil {
			return nil, fmt.Errorf("pyinstall: build requirements of %s %s (%s): %w", pkg, version, strings.Join(requires, ", "), err)
		}
		p.requires = requires
	}
	return p, nil
}

// hookResult is what one run of the build driver produced: a
// .dist-info directory (metadata mode) or a wheel, under out.
type hookResult struct {
	metadataDir string
	wheel       string
}

// hookRun is one build-driver process: in mode "both" it reports the
// prepared metadata (metaDone) and then goes on to build the wheel in the
// same process (done), saving an interpreter start and a second unpack per
// sdist.
type hookRun struct {
	metaDone chan struct{}
	meta     hookResult // metadataDir, or wheel for a backend without the hook
	metaErr  error

	done  chan struct{}
	wheel string
	err   error
}

// lockedBuffer is the build's combined output, written by the process's
// stdout reader and stderr copier.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.b.Bytes()...)
}

// runHook runs the build driver in mode ("metadata" or "wheel") for a
// prepared source, through the sandbox, and waits for it.
// A backend whose get_requires_for_build_wheel asks for more gets an
// environment with them and a second run.
func (in *Installer) runHook(ctx context.Context, p *preparedSource, mode string) (hookResult, error) {
	var r *hookRun
	for {
		python, _ := p.env()
		var err error
		r, err = in.startHook(ctx, p, mode)
		if err != nil {
			return hookResult{}, err
		}
		<-r.done
		var dyn *dynamicRequiresError
		if !errors.As(r.err, &dyn) {
			break
		}
		if err := in.addBuildRequires(ctx, p, python, dyn.asked); err != nil {
			return hookResult{}, err
		}
	}
	if r.err != nil {
		return hookResult{}, r.err
	}
	if mode == "metadata" && r.meta.metadataDir != "" {
		return r.meta, nil
	}
	return hookResult{wheel: r.wheel}, nil
}

// startHook starts the build driver in mode ("metadata", "wheel" or "both")
// for a prepared source, through the sandbox, into a new directory under
// p.work. The process stops with ctx.
func (in *Installer) startHook(ctx context.Context, p *preparedSource, mode string) (*hookRun, error) {
	out, err := os.MkdirTemp(p.work, "out-")
	if err == nil {
		err = in.forBuild(out, true, 0)
	}
	if err != nil {
		return nil, err
	}
	python, have := p.env()
	haveJSON, err := json.Marshal(append([]string{}, have...))
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, python, "-I", "-c", buildDriver, mode, p.dir, out, string(haveJSON))
	cmd.Dir = p.dir
	cmd.Env = []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=" + p.work,
		"LANG=C.UTF-8",
		"PYTHONDONTWRITEBYTECODE=1",
		"PYTHONUNBUFFERED=1",
		"SOURCE_DATE_EPOCH=315532800",
	}
	output := &lockedBuffer{}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = output
	if in.cfg.Sandbox != nil {
		wrapped, err := in.cfg.Sandbox(ctx, cmd)
		if err != nil {
			pr.Close()
			pw.Close()
			return nil, fmt.Errorf("pyinstall: build sandbox for %s %s: %w", p.pkg, p.version, err)
		}
		cmd = wrapped
	}
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("pyinstall: start build of %s %s: %w", p.pkg, p.version, err)
	}
	pw.Close()
	// A command the sandbox made is not tied to ctx: kill it when ctx
	// ends, as exec.CommandContext would.
	stopKill := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	r := &hookRun{metaDone: make(chan struct{}), done: make(chan struct{})}
	step := "build_wheel"
	if mode != "wheel" {
		step = "prepare_metadata_for_build_wheel"
	}
	bad := func(step string, err error) error {
		out := output.bytes()
		return &BuildError{Package: p.pkg, Version: p.version, Source: p.source, Step: step, Err: err, StderrTail: tail(out, 20),
			Network: networkRe.Match(out)}
	}
	go func() {
		defer close(r.done)
		metaOpen := true
		endMeta := func(err error) {
			if metaOpen {
				r.metaErr = err
				close(r.metaDone)
				metaOpen = false
			}
		}
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var wheelName string
		var asked []string
		for sc.Scan() {
			line := sc.Text()
			_, _ = output.Write([]byte(line + "\n"))
			if n, ok := strings.CutPrefix(line, "PAASKIT-STEP:"); ok && metaOpen {
				step = strings.TrimSpace(n)
			}
			if n, ok := strings.CutPrefix(line, "PAASKIT-REQUIRES:"); ok {
				if err := json.Unmarshal([]byte(n), &asked); err != nil || asked == nil {
					asked = []string{}
				}
			}
			if n, ok := strings.CutPrefix(line, "PAASKIT-METADATA:"); ok && metaOpen {
				dir, err := takeHookResult(out, strings.TrimSpace(n), true)
				if err != nil {
					endMeta(bad("prepare_metadata_for_build_wheel", err))
					continue
				}
				r.meta = hookResult{metadataDir: dir}
				endMeta(nil)
				step = "build_wheel"
			}
			if n, ok := strings.CutPrefix(line, "PAASKIT-WHEEL:"); ok {
				wheelName = strings.TrimSpace(n)
			}
		}
		_, _ = io.Copy(io.Discard, pr)
		pr.Close()
		werr := cmd.Wait()
		stopKill()
		switch {
		case ctx.Err() != nil:
			r.err = ctx.Err()
		case werr != nil:
			be := bad(step, werr)
			var xe *exec.ExitError
			if errors.As(werr, &xe) {
				ws, _ := xe.Sys().(syscall.WaitStatus)
				be.(*BuildError).Killed = xe.ExitCode() == 128+int(syscall.SIGKILL) || ws.Signaled() && ws.Signal() == syscall.SIGKILL
			}
			r.err = be
		case asked != nil:
			r.err = &dynamicRequiresError{asked: asked}
		case wheelName == "" && mode != "metadata":
			r.err = bad(step, errors.New("backend returned no wheel name"))
		case wheelName != "":
			w, err := takeHookResult(out, wheelName, false)
			if err != nil {
				r.err = bad("build_wheel", err)
			}
			r.wheel = w
			if metaOpen && r.err == nil {
				// No metadata hook: the wheel is the metadata.
				r.meta = hookResult{wheel: w}
			}
		case metaOpen:
			r.err = bad(step, errors.New("the backend reported no metadata"))
		}
		if r.err != nil && r.metaErr == nil && metaOpen {
			endMeta(r.err)
		}
		endMeta(nil)
	}()
	return r, nil
}

// takeHookResult takes what a build left under out at name (a wheel, or
// with metadata a .dist-info directory's METADATA) into a new directory of
// the installer's own beside out, and returns the copy's path (the wheel's,
// or the directory holding METADATA). The build may still run, and owns
// out: the file is opened beneath out without following any link that
// leads out of it, so a build that swapped its output for a link to a host
// file gets an error, never that file.
func takeHookResult(out, name string, metadata bool) (string, error) {
	p, err := checkHookName(out, name)
	if err != nil {
		return "", err
	}
	rel, _ := filepath.Rel(out, p)
	if !metadata && !strings.HasSuffix(rel, ".whl") {
		return "", fmt.Errorf("backend returned %q, not a wheel", name)
	}
	src := rel
	if metadata {
		src = filepath.Join(rel, "METADATA")
	}
	root, err := os.OpenRoot(out)
	if err != nil {
		return "", err
	}
	defer root.Close()
	f, err := root.Open(src)
	if err != nil {
		if metadata {
			return "", fmt.Errorf("prepare_metadata_for_build_wheel returned %s, which has no METADATA: %w", filepath.Base(p), err)
		}
		return "", fmt.Errorf("backend said %s but left no such file under its output directory: %w", filepath.Base(p), err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("backend's %s is not a regular file", src)
	}
	dst, err := os.MkdirTemp(filepath.Dir(out), "taken-")
	if err != nil {
		return "", err
	}
	target := filepath.Join(dst, filepath.Base(rel))
	if metadata {
		if err := os.Mkdir(target, 0o700); err != nil {
			return "", err
		}
		target = filepath.Join(target, "METADATA")
	}
	w, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(w, f); err != nil {
		w.Close()
		return "", fmt.Errorf("copy the build's %s: %w", src, err)
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	if metadata {
		return filepath.Dir(target), nil
	}
	return target, nil
}

// checkHookName resolves a name the driver printed (relative to out, one or
// two plain path elements) to a path under out.
func checkHookName(out, name string) (string, error) {
	parts := strings.Split(name, "/")
	if name == "" || len(parts) > 2 {
		return "", fmt.Errorf("backend returned an unusable name %q", name)
	}
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || strings.ContainsRune(p, '\\') {
			return "", fmt.Errorf("backend returned an unusable name %q", name)
		}
	}
	return filepath.Join(out, filepath.FromSlash(name)), nil
}

// buildWheel builds a wheel from an sdist archive or a source directory and
// returns its path (inside a private directory the caller removes with
// cleanup).
func (in *Installer) buildWheel(ctx context.Context, source, pkg, version string, isDir bool, envFor func(context.Context, []string) (string, error)) (wheel string, cleanup func(), err error) {
	p, err := in.prepareSource(ctx, source, pkg, version, isDir, envFor)
	if err != nil {
		return "", nil, err
	}
	r, err := in.runHook(ctx, p, "wheel")
	if err != nil {
		_ = os.RemoveAll(p.work)
		return "", nil, err
	}
	return r.wheel, func() { _ = os.RemoveAll(p.work) }, nil
}

// legacyBuildRequires is what pip installs to build a project without a
// pyproject.toml [build-system] table.
var legacyBuildRequires = []string{"setuptools>=40.8.0", "wheel"}

var noRequiresRe = regexp.MustCompile(`(?m)^\s*requires\s*=\s*\[\s*\]`)

const buildRequiresScript = `
import json, sys, tomllib
with open(sys.argv[1], "rb") as f:
    bs = tomllib.load(f).get("build-system")
print(json.dumps(None if bs is None else bs.get("requires", [])))
`

// buildRequires reads a source tree's build-system.requires (PEP 518).
func (in *Installer) buildRequires(ctx context.Context, srcDir string) ([]string, error) {
	p := filepath.Join(srcDir, "pyproject.toml")
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return legacyBuildRequires, nil
	} else if err != nil {
		return nil, err
	}
	if noRequiresRe.Match(data) {
		return nil, nil
	}
	out, err := exec.CommandContext(ctx, in.interp.Path, "-I", "-c", buildRequiresScript, p).Output()
	if err != nil {
		return nil, fmt.Errorf("read build-system.requires from pyproject.toml: %w", err)
	}
	var reqs *[]string
	if err := json.Unmarshal(out, &reqs); err != nil {
		return nil, fmt.Errorf("pyproject.toml: build-system.requires is not a list of strings: %w", err)
	}
	if reqs == nil {
		return legacyBuildRequires, nil
	}
	return *reqs, nil
}

// sdistRoot finds the project directory of an unpacked sdist: the single
// top-level directory.
func sdistRoot(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	if len(ents) == 1 && ents[0].IsDir() {
		return filepath.Join(dir, ents[0].Name()), nil
	}
	for _, f := range []string{"pyproject.toml", "setup.py"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("no single top-level directory and no pyproject.toml")
}
