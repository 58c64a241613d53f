package pyindex

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Python is the interpreter the platform builds virtualenvs with: Debian's,
// not whatever python3 comes first on PATH.
const Python = "/usr/bin/python3"

// Pip is the oracle: Debian's pip run inside a fresh virtualenv.
type Pip struct {
	// Venv is the virtualenv directory pip installs into.
	Venv string
	// CacheDir, when set, is pip's cache (HTTP responses and built
	// wheels, --cache-dir); when empty pip runs with --no-cache-dir.
	CacheDir string
}

// NewPip creates a virtualenv (with pip, from Debian's ensurepip wheels) at
// dir.
func NewPip(ctx context.Context, dir string) (*Pip, error) {
	cmd := exec.CommandContext(ctx, Python, "-m", "venv", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pyindex: %s -m venv %s: %w: %s (apt-get install python3-venv; make test installs it)", Python, dir, err, out)
	}
	return &Pip{Venv: dir}, nil
}

// Install runs `pip install --no-cache-dir args...` (or --cache-dir
// CacheDir) with the given index (and no other), returning pip's combined
// output.
func (p *Pip) Install(ctx context.Context, indexURL string, args ...string) ([]byte, error) {
	full := []string{"-m", "pip", "install", "--disable-pip-version-check", "--no-input"}
	env := append(os.Environ(), "PIP_DISABLE_PIP_VERSION_CHECK=1", "PIP_CONFIG_FILE=/dev/null", "PYTHONDONTWRITEBYTECODE=1")
	if p.CacheDir != "" {
		full = append(full, "--cache-dir", p.CacheDir)
	} else {
		full = append(full, "--no-cache-dir")
		env = append(env, "PIP_NO_CACHE_DIR=1")
	}
	if indexURL != "" {
		full = append(full, "--index-url", indexURL)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(p.Venv, "bin", "python"), full...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		return out.Bytes(), fmt.Errorf("pyindex: pip install %s: %w", strings.Join(args, " "), err)
	}
	return out.Bytes(), nil
}

// Resolve asks pip what it would install (`pip install --dry-run
// --ignore-installed --report`), as sorted "name==version" strings with
// normalized names. This is the oracle for the Go resolver.
func (p *Pip) Resolve(ctx context.Context, indexURL string, args ...string) ([]string, error) {
	report, err := os.CreateTemp("", "pip-report-*.json")
	if err != nil {
		return nil, err
	}
	report.Close()
	defer os.Remove(report.Name())
	full := append([]string{"--dry-run", "--ignore-installed", "--quiet", "--report", report.Name()}, args...)
	if out, err := p.Install(ctx, indexURL, full...); err != nil {
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	data, err := os.ReadFile(report.Name())
	if err != nil {
		return nil, err
	}
	var rep struct {
		Install []struct {
			Metadata struct {
				Name    string `json:"name"`
				Version string `json:"version"`
			} `json:"metadata"`
		} `json:"install"`
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		return nil, fmt.Errorf("pyindex: pip report: %w", err)
	}
	var out []string
	for _, in := range rep.Install {
		out = append(out, Normalize(in.Metadata.Name)+"=="+in.Metadata.Version)
	}
	sortByName(out)
	return out, nil
}

// Installed lists the distributions in a virtualenv's site-packages as
// sorted "name==version" strings with normalized names, reading the
// .dist-info directories (so it works for venvs made without pip too). pip,
// setuptools and wheel themselves are left out.
func Installed(venv string) ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(venv, "lib", "python3*", "site-packages", "*.dist-info", "METADATA"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range matches {
		data, err := os.ReadFile(m)
		if err != nil {
			return nil, fmt.Errorf("pyindex: %w", err)
		}
		var name, version string
		for _, line := range strings.Split(string(data), "\n") {
			if line == "" {
				break
			}
			if v, ok := strings.CutPrefix(line, "Name: "); ok {
				name = Normalize(strings.TrimSpace(v))
			}
			if v, ok := strings.CutPrefix(line, "Version: "); ok {
				version = strings.TrimSpace(v)
			}
		}
		switch name {
		case "pip", "setuptools", "wheel", "pkg-resources":
			continue
		}
		out = append(out, name+"=="+version)
	}
	sortByName(out)
	return out, nil
}

// sortByName sorts "name==version" strings by name.
func sortByName(s []string) {
	sort.Slice(s, func(i, j int) bool {
		a, _, _ := strings.Cut(s[i], "==")
		b, _, _ := strings.Cut(s[j], "==")
		if a != b {
			return a < b
		}
		return s[i] < s[j]
	})
}
