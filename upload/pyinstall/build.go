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
	"strings"

	"github.com/paaskit/paaskit/upload/extract"
)

// BuildError is an sdist or source tree whose PEP 517 build failed.
type BuildError struct {
	// Package and Version name what was built ("" when unknown, e.g. a
	// source directory).
	Package, Version string
	// Source is the sdist file or directory.
	Source string
	// Err is the process error (exit status).
	Err error
	// StderrTail is the end of the build's output.
	StderrTail string
}

func (e *BuildError) Error() string {
	return fmt.Sprintf("building %s %s from %s failed: %v\n--- build output (tail) ---\n%s", e.Package, e.Version, filepath.Base(e.Source), e.Err, e.StderrTail)
}

func (e *BuildError) Unwrap() error { return e.Err }

// buildDriver runs inside the target interpreter: it loads the backend that
// pyproject.toml declares (PEP 517, with backend-path), or setuptools' legacy
// backend when there is no pyproject.toml, and calls build_wheel.
const buildDriver = `
import importlib, os, sys
src, out = sys.argv[1], sys.argv[2]
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

// buildWheel builds a wheel from an sdist archive or a source directory and
// returns the path of the wheel (inside a temporary directory the caller
// removes with cleanup).
//
// envFor, when not nil, is asked for an interpreter that has the source's
// build-system.requires installed (build isolation, as pip does); nil builds
// with the target interpreter itself.
func (in *Installer) buildWheel(ctx context.Context, source, pkg, version string, envFor func(context.Context, []string) (string, error)) (wheel string, cleanup func(), err error) {
	work, err := in.cache.TempDir("build-")
	if err != nil {
		return "", nil, fmt.Errorf("pyinstall: build %s: %w", source, err)
	}
	remove := func() { _ = os.RemoveAll(work) }
	defer func() {
		if err != nil {
			remove()
		}
	}()
	srcDir := source
	if fi, serr := os.Stat(source); serr != nil {
		return "", nil, fmt.Errorf("pyinstall: build %s: %w", source, serr)
	} else if !fi.IsDir() {
		// An sdist is untrusted input: unpack it with the same checks
		// as an uploaded bundle.
		dst := filepath.Join(work, "src")
		if err := extract.FromFile(ctx, source, dst, extract.FormatAuto, extract.Config{Logger: in.log}); err != nil {
			return "", nil, fmt.Errorf("pyinstall: unpack sdist %s: %w", filepath.Base(source), err)
		}
		srcDir, err = sdistRoot(dst)
		if err != nil {
			return "", nil, fmt.Errorf("pyinstall: sdist %s: %w", filepath.Base(source), err)
		}
	}
	python := in.interp.Path
	requires, err := in.buildRequires(ctx, srcDir)
	if err != nil {
		return "", nil, &BuildError{Package: pkg, Version: version, Source: source, Err: err, StderrTail: err.Error()}
	}
	if len(requires) > 0 && envFor != nil {
		python, err = envFor(ctx, requires)
		if err != nil {
			return "", nil, fmt.Errorf("pyinstall: build requirements of %s %s (%s): %w", pkg, version, strings.Join(requires, ", "), err)
		}
	}
	out := filepath.Join(work, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, python, "-I", "-c", buildDriver, srcDir, out)
	cmd.Dir = srcDir
	cmd.Env = []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=" + work,
		"LANG=C.UTF-8",
		"PYTHONDONTWRITEBYTECODE=1",
		"SOURCE_DATE_EPOCH=315532800",
	}
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", nil, ctx.Err()
		}
		return "", nil, &BuildError{Package: pkg, Version: version, Source: source, Err: err, StderrTail: tail(output.Bytes(), 20)}
	}
	var name string
	for _, line := range strings.Split(output.String(), "\n") {
		if n, ok := strings.CutPrefix(line, "PAASKIT-WHEEL:"); ok {
			name = strings.TrimSpace(n)
		}
	}
	if name == "" || strings.ContainsAny(name, "/\\") || !strings.HasSuffix(name, ".whl") {
		return "", nil, &BuildError{Package: pkg, Version: version, Source: source, Err: errors.New("backend returned no wheel name"), StderrTail: tail(output.Bytes(), 20)}
	}
	wheel = filepath.Join(out, name)
	if _, err := os.Stat(wheel); err != nil {
		return "", nil, &BuildError{Package: pkg, Version: version, Source: source, Err: fmt.Errorf("backend said %s but wrote no such file", name), StderrTail: tail(output.Bytes(), 20)}
	}
	return wheel, remove, nil
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
