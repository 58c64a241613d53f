package pyinstall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Interpreter describes the target Python: what markers evaluate against,
// which wheel tags it accepts (most preferred first) and where a virtualenv's
// site-packages is.
type Interpreter struct {
	// Path is the interpreter's path, e.g. /usr/bin/python3.
	Path string `json:"path"`
	// Markers are the PEP 508 environment values.
	Markers Env `json:"markers"`
	// Tags are the supported wheel tags "py-abi-platform", most preferred
	// first.
	Tags []string `json:"tags"`
	// VersionDir is "python3.11": the lib/ subdirectory of a venv.
	VersionDir string `json:"version_dir"`
}

const probeScript = `
import json, os, platform, sys
impl = sys.implementation.name
iver = "%d.%d.%d" % sys.implementation.version[:3]
m = {
    "implementation_name": impl,
    "implementation_version": iver,
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
tags = []
try:
    from pip._vendor.packaging import tags as t
    tags = [str(x) for x in t.sys_tags()]
except Exception:
    v = "%d%d" % sys.version_info[:2]
    tags = ["cp%s-cp%s-linux_%s" % (v, v, platform.machine()), "cp%s-abi3-linux_%s" % (v, platform.machine()),
            "py%s-none-any" % v, "py3-none-any", "cp%s-none-any" % v]
    for minor in range(sys.version_info[1] - 1, -1, -1):
        tags.append("py3%d-none-any" % minor)
print(json.dumps({"markers": m, "tags": tags, "version_dir": "python%d.%d" % sys.version_info[:2]}))
`

// ProbeInterpreter runs the interpreter once to learn its markers and tags.
// When cacheDir is not empty the answer is kept there, keyed by the
// interpreter's path, size and modification time, so a warm install does not
// pay for the probe.
func ProbeInterpreter(ctx context.Context, python, cacheDir string) (*Interpreter, error) {
	real, err := filepath.EvalSymlinks(python)
	if err != nil {
		return nil, fmt.Errorf("pyinstall: interpreter %s: %w", python, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return nil, fmt.Errorf("pyinstall: interpreter %s: %w", python, err)
	}
	var cachePath string
	if cacheDir != "" {
		sum := sha256.Sum256([]byte(fmt.Sprintf("%s|%s|%d|%d|v1", python, real, fi.Size(), fi.ModTime().UnixNano())))
		cachePath = filepath.Join(cacheDir, "interp", hex.EncodeToString(sum[:8])+".json")
		if data, err := os.ReadFile(cachePath); err == nil {
			var in Interpreter
			if json.Unmarshal(data, &in) == nil && len(in.Tags) > 0 && in.VersionDir != "" {
				in.Path = python
				return &in, nil
			}
		}
	}
	// -I: no user site, no PYTHON* variables; site stays on so pip's
	// vendored packaging (the tag list pip itself uses) is found.
	out, err := exec.CommandContext(ctx, python, "-I", "-c", probeScript).Output()
	if err != nil {
		return nil, fmt.Errorf("pyinstall: probe interpreter %s: %w", python, err)
	}
	var in Interpreter
	if err := json.Unmarshal(out, &in); err != nil {
		return nil, fmt.Errorf("pyinstall: probe interpreter %s: %w: %s", python, err, out)
	}
	if len(in.Tags) == 0 || !strings.HasPrefix(in.VersionDir, "python") {
		return nil, fmt.Errorf("pyinstall: probe interpreter %s: incomplete answer %s", python, out)
	}
	in.Path = python
	if cachePath != "" {
		data, _ := json.Marshal(in)
		_ = writeFileAtomic(cachePath, data)
	}
	return &in, nil
}

// tagRank returns a wheel filename's best tag rank (lower is better), or -1
// if the interpreter cannot use the wheel.
func (in *Interpreter) tagRank(ranks map[string]int, wheelTags string) int {
	// wheelTags is "py-abi-plat" where each part may be a dotted set.
	parts := strings.Split(wheelTags, "-")
	if len(parts) != 3 {
		return -1
	}
	best := -1
	for _, py := range strings.Split(parts[0], ".") {
		for _, abi := range strings.Split(parts[1], ".") {
			for _, plat := range strings.Split(parts[2], ".") {
				if r, ok := ranks[py+"-"+abi+"-"+plat]; ok && (best < 0 || r < best) {
					best = r
				}
			}
		}
	}
	return best
}

func (in *Interpreter) tagRanks() map[string]int {
	m := make(map[string]int, len(in.Tags))
	for i, t := range in.Tags {
		if _, ok := m[t]; !ok {
			m[t] = i
		}
	}
	return m
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, synced and renamed into place, so a reader (in this process or
// another) sees either nothing or the whole file.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
