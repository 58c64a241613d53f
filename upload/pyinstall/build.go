package pyinstall

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/paaskit/paaskit/upload/extract"
)

// BuildSandbox wraps the command of one build step (a PEP 517 hook run by
// the target interpreter in an unpacked source tree) so that it runs
// confined: the platform passes one built on runner's sandbox.
//
// It is called from the installer's build goroutines, possibly concurrently,
// once per build process, before the process starts. cmd has Path, Args, Dir
// (the source tree, writable), Env, Stdout and Stderr set; ctx is the
// install's. It returns the command to run instead: cmd itself changed (a
// SysProcAttr with namespaces and credentials) or a new one that runs cmd's
// argv inside a sandbox, with the same Dir, Env, Stdout and Stderr. The
// build needs to read the interpreter and its build environment (under
// Config.CacheDir/tmp), to write its source tree and the output directory
// (the last argument, also under CacheDir/tmp), and no network: the
// installer itself fetches everything a build needs. An error fails that
// build with the error.
type BuildSandbox func(ctx context.Context, cmd *exec.Cmd) (*exec.Cmd, error)

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
const buildDriver = `
import importlib, os, sys
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
hook = getattr(b, "prepare_metadata_for_build_wheel", None)
if mode == "metadata" and hook is not None:
    name = hook(out)
    sys.stdout.write("\nPAASKIT-METADATA:%s\n" % name)
else:
    name = b.build_wheel(out)
    sys.stdout.write("\nPAASKIT-WHEEL:%s\n" % name)
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
	python       string
}

// prepareSource unpacks an sdist, or copies a source directory (a git
// checkout in the cache, which builds must not write to), into a private
// directory and gets its build environment. The caller removes p.work.
func (in *Installer) prepareSource(ctx context.Context, source, pkg, version string, isDir bool, envFor func(context.Context, []string) (string, error)) (p *preparedSource, err error) {
	work, err := in.cache.TempDir("build-")
	if err != nil {
		return nil, fmt.Errorf("pyinstall: build %s: %w", source, err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(work)
		}
	}()
	p = &preparedSource{pkg: pkg, version: version, source: source, work: work}
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
	}
	return p, nil
}

// hookResult is what one run of the build driver produced: a
// .dist-info directory (metadata mode) or a wheel, under out.
type hookResult struct {
	metadataDir string
	wheel       string
}

// runHook runs the build driver in mode ("metadata" or "wheel") for a
// prepared source, through the sandbox, into a new directory under p.work.
func (in *Installer) runHook(ctx context.Context, p *preparedSource, mode string) (hookResult, error) {
	out, err := os.MkdirTemp(p.work, "out-")
	if err != nil {
		return hookResult{}, err
	}
	step := "build_wheel"
	if mode == "metadata" {
		step = "prepare_metadata_for_build_wheel"
	}
	cmd := exec.CommandContext(ctx, p.python, "-I", "-c", buildDriver, mode, p.dir, out)
	cmd.Dir = p.dir
	cmd.Env = []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=" + p.work,
		"LANG=C.UTF-8",
		"PYTHONDONTWRITEBYTECODE=1",
		"SOURCE_DATE_EPOCH=315532800",
	}
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	if in.cfg.Sandbox != nil {
		wrapped, err := in.cfg.Sandbox(ctx, cmd)
		if err != nil {
			return hookResult{}, fmt.Errorf("pyinstall: sandbox for %s of %s %s: %w", step, p.pkg, p.version, err)
		}
		cmd = wrapped
	}
	bad := func(err error) error {
		return &BuildError{Package: p.pkg, Version: p.version, Source: p.source, Step: step, Err: err, StderrTail: tail(output.Bytes(), 20),
			Network: networkRe.Match(output.Bytes())}
	}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return hookResult{}, ctx.Err()
		}
		return hookResult{}, bad(err)
	}
	var r hookResult
	for _, line := range strings.Split(output.String(), "\n") {
		if n, ok := strings.CutPrefix(line, "PAASKIT-WHEEL:"); ok {
			r = hookResult{wheel: strings.TrimSpace(n)}
		}
		if n, ok := strings.CutPrefix(line, "PAASKIT-METADATA:"); ok {
			r = hookResult{metadataDir: strings.TrimSpace(n)}
		}
	}
	name := r.wheel + r.metadataDir
	if name == "" || strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
		return hookResult{}, bad(errors.New("backend returned no usable name"))
	}
	if r.wheel != "" {
		if !strings.HasSuffix(r.wheel, ".whl") {
			return hookResult{}, bad(fmt.Errorf("backend returned %q, not a wheel", r.wheel))
		}
		r.wheel = filepath.Join(out, r.wheel)
		if _, err := os.Stat(r.wheel); err != nil {
			return hookResult{}, bad(fmt.Errorf("backend said %s but wrote no such file", filepath.Base(r.wheel)))
		}
	} else {
		r.metadataDir = filepath.Join(out, r.metadataDir)
		if _, err := os.Stat(filepath.Join(r.metadataDir, "METADATA")); err != nil {
			return hookResult{}, bad(fmt.Errorf("prepare_metadata_for_build_wheel returned %s, which has no METADATA", filepath.Base(r.metadataDir)))
		}
	}
	return r, nil
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
