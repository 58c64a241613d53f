// Package pyindex is an offline Python package index for paaskit's tests and
// benchmarks: it generates real distributions (pure-Python wheels with a valid
// RECORD, and sdists that need a real PEP 517 build) and serves them as a
// PEP 503 "simple" index over HTTP on loopback, optionally with PEP 658/714
// metadata files and PEP 691 JSON pages (by Accept header), with ETags
// (If-None-Match gets 304) and Cache-Control max-age on pages, an injected
// per-request latency and faults such as a connection dropped in the middle
// of a download. NewGitRepo puts a generated project's source tree in a bare
// git repository, for git requirements.
//
// Generated sdists model what real ones do: Metadata-Version 2.1 PKG-INFO
// without dependencies (DynamicMetadata), a cheap
// prepare_metadata_for_build_wheel hook, or none (NoMetadataHook), a hook
// that crashes or disagrees with the wheel it builds, a slow build_wheel, and
// a build that downloads something (BuildFetches), to test sandboxes.
//
// There is no PyPI on the build machines, and Debian's setuptools cannot build
// wheels without the `wheel` package, so every generated sdist carries its own
// tiny pure-Python build backend (backend-path = ["."], requires = []) that
// writes the wheel with zipfile and can sleep to simulate a slow build or fail
// with a message on stderr.
//
// Both the Go installer and pip (the oracle) install from the same server, so
// tests can compare their results.
package pyindex

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Kind is the kind of a distribution file.
type Kind int

// Distribution kinds.
const (
	// Wheel is a pure-Python py3-none-any wheel.
	Wheel Kind = iota
	// Sdist is a source distribution (.tar.gz) with an in-tree PEP 517
	// backend.
	Sdist
)

// Dist describes one release of one project.
type Dist struct {
	// Name is the project name as written (it is normalized where PEP 503
	// says so).
	Name string
	// Version is a PEP 440 version.
	Version string
	// Kind selects a wheel or an sdist.
	Kind Kind
	// Requires are Requires-Dist lines (PEP 508), markers included, for
	// example `b>=1.0` or `c; extra == "fast"`.
	Requires []string
	// Extras are the Provides-Extra names.
	Extras []string
	// RequiresPython is the Requires-Python specifier ("" for none).
	RequiresPython string
	// ConsoleScripts maps a script name to an entry point "module:func".
	// The generated module has a function main() printing "NAME VERSION".
	ConsoleScripts map[string]string
	// BuildDelay is how long an sdist's backend sleeps in build_wheel,
	// to simulate compiling.
	BuildDelay time.Duration
	// FailBuild makes an sdist's build_wheel print a compiler-like error on
	// stderr and fail.
	FailBuild bool
	// DynamicMetadata makes an sdist's PKG-INFO Metadata-Version 2.1 (so
	// its dependencies are only known after a build, as with most
	// setuptools sdists); otherwise it is 2.2 with static Requires-Dist
	// (PEP 643).
	DynamicMetadata bool
	// Yanked marks the file yanked (PEP 592) with this reason.
	Yanked string
	// BuildBackend makes an sdist use a backend that is not in the tree:
	// pyproject.toml names this module as build-backend and lists
	// BuildRequires, so the builder must install them first (build
	// isolation). Publish the backend with BackendWheel.
	BuildBackend  string
	BuildRequires []string
	// NoMetadataHook makes an sdist's backend lack the PEP 517
	// prepare_metadata_for_build_wheel hook, so a resolver must build the
	// whole wheel to learn its dependencies.
	NoMetadataHook bool
	// FailMetadataHook makes the hook crash with a traceback on stderr.
	FailMetadataHook bool
	// HookExtraRequires are Requires-Dist lines the metadata hook reports
	// but the built wheel does not have: a backend whose prepared metadata
	// differs from its wheel's (pip refuses such a wheel).
	HookExtraRequires []string
	// HookVersion, when set, is the Version the metadata hook reports
	// instead of the real one (pip refuses such a candidate).
	HookVersion string
	// DynamicBuildRequires are requirements an sdist's in-tree backend
	// asks for in get_requires_for_build_wheel (as setuptools does for
	// setup_requires): its prepare_metadata_for_build_wheel and
	// build_wheel import each one's module (the project name with dashes
	// as underscores) and fail when it is not installed.
	DynamicBuildRequires []string
	// BuildScript is Python source that an sdist's build_wheel runs
	// first, in the build's directory: what a hostile setup.py does
	// (writing where it should not, connecting out, eating memory).
	BuildScript string
	// BuildFetches is a URL that build_wheel downloads before it builds, as
	// a setup.py that fetches a tarball does; with no network the build
	// fails.
	BuildFetches string

	moduleSource string
}

// BackendWheel is a wheel whose module is the generated PEP 517 backend, for
// sdists with BuildBackend set to the module name (the project name with
// dashes as underscores).
func BackendWheel(name, version string) Dist {
	return Dist{Name: name, Version: version, moduleSource: backendSource}
}

// File is one generated distribution file.
type File struct {
	Dist     Dist
	Filename string
	Data     []byte
	SHA256   string // hex
	// Metadata is the core metadata (the wheel's METADATA), served as
	// Filename+".metadata" when PEP 658 is on. Empty for sdists.
	Metadata []byte
}

// Index is a set of generated files, grouped by normalized project name.
type Index struct {
	projects map[string][]*File
	byName   map[string]*File
}

var nameRe = regexp.MustCompile(`^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$`)

// Normalize returns the PEP 503 normalized form of a project name.
func Normalize(name string) string {
	return strings.ToLower(regexp.MustCompile(`[-_.]+`).ReplaceAllString(name, "-"))
}

// distName is the name as it appears in wheel and sdist filenames.
func distName(name string) string {
	return strings.ReplaceAll(Normalize(name), "-", "_")
}

// New generates every distribution. It returns an error for an invalid name
// or a duplicated file.
func New(dists []Dist) (*Index, error) {
	ix := &Index{projects: map[string][]*File{}, byName: map[string]*File{}}
	for _, d := range dists {
		if !nameRe.MatchString(d.Name) || d.Version == "" {
			return nil, fmt.Errorf("pyindex: invalid distribution %q %q", d.Name, d.Version)
		}
		var f *File
		var err error
		switch d.Kind {
		case Wheel:
			f, err = makeWheel(d)
		case Sdist:
			f, err = makeSdist(d)
		default:
			err = fmt.Errorf("unknown kind %d", d.Kind)
		}
		if err != nil {
			return nil, fmt.Errorf("pyindex: generate %s %s: %w", d.Name, d.Version, err)
		}
		if _, dup := ix.byName[f.Filename]; dup {
			return nil, fmt.Errorf("pyindex: duplicate file %s", f.Filename)
		}
		sum := sha256.Sum256(f.Data)
		f.SHA256 = hex.EncodeToString(sum[:])
		n := Normalize(d.Name)
		ix.projects[n] = append(ix.projects[n], f)
		ix.byName[f.Filename] = f
	}
	return ix, nil
}

// Files returns every file, sorted by filename.
func (ix *Index) Files() []*File {
	out := make([]*File, 0, len(ix.byName))
	for _, f := range ix.byName {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Filename < out[j].Filename })
	return out
}

// File returns the file with this filename, or nil.
func (ix *Index) File(filename string) *File { return ix.byName[filename] }

// Projects returns the normalized project names, sorted.
func (ix *Index) Projects() []string {
	out := make([]string, 0, len(ix.projects))
	for p := range ix.projects {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// fixed time for reproducible archives.
var epoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

func moduleName(name string) string { return distName(name) }

func moduleSource(d Dist) string {
	if d.moduleSource != "" {
		return d.moduleSource
	}
	return fmt.Sprintf("NAME = %q\nVERSION = %q\n\n\ndef main():\n    print(NAME, VERSION)\n", d.Name, d.Version)
}

// coreMetadata renders METADATA / PKG-INFO.
func coreMetadata(d Dist, mdVersion string, dynamic bool) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "Metadata-Version: %s\nName: %s\nVersion: %s\n", mdVersion, d.Name, d.Version)
	if dynamic {
		b.WriteString("Dynamic: Requires-Dist\n")
	}
	if d.RequiresPython != "" {
		fmt.Fprintf(&b, "Requires-Python: %s\n", d.RequiresPython)
	}
	for _, e := range d.Extras {
		fmt.Fprintf(&b, "Provides-Extra: %s\n", e)
	}
	if mdVersion != "2.1" || !dynamic {
		for _, r := range d.Requires {
			fmt.Fprintf(&b, "Requires-Dist: %s\n", r)
		}
	}
	b.WriteString("\n")
	return []byte(b.String())
}

func entryPoints(d Dist) string {
	if len(d.ConsoleScripts) == 0 {
		return ""
	}
	names := make([]string, 0, len(d.ConsoleScripts))
	for n := range d.ConsoleScripts {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("[console_scripts]\n")
	for _, n := range names {
		fmt.Fprintf(&b, "%s = %s\n", n, d.ConsoleScripts[n])
	}
	return b.String()
}

func recordHash(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256=" + base64.RawURLEncoding.EncodeToString(sum[:])
}

func makeWheel(d Dist) (*File, error) {
	dn := distName(d.Name)
	info := fmt.Sprintf("%s-%s.dist-info", dn, d.Version)
	meta := coreMetadata(d, "2.1", false)
	files := []struct {
		name string
		data []byte
	}{
		{moduleName(d.Name) + "/__init__.py", []byte(moduleSource(d))},
		{info + "/METADATA", meta},
		{info + "/WHEEL", []byte("Wheel-Version: 1.0\nGenerator: paaskit-pyindex\nRoot-Is-Purelib: true\nTag: py3-none-any\n\n")},
	}
	if ep := entryPoints(d); ep != "" {
		files = append(files, struct {
			name string
			data []byte
		}{info + "/entry_points.txt", []byte(ep)})
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	var record strings.Builder
	for _, f := range files {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Deflate, Modified: epoch})
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(f.data); err != nil {
			return nil, err
		}
		fmt.Fprintf(&record, "%s,%s,%d\n", f.name, recordHash(f.data), len(f.data))
	}
	fmt.Fprintf(&record, "%s/RECORD,,\n", info)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: info + "/RECORD", Method: zip.Deflate, Modified: epoch})
	if err != nil {
		return nil, err
	}
	if _, err := w.Write([]byte(record.String())); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return &File{Dist: d, Filename: fmt.Sprintf("%s-%s-py3-none-any.whl", dn, d.Version), Data: buf.Bytes(), Metadata: meta}, nil
}

// backendSource is the in-tree PEP 517 backend of every generated sdist. It
// reads its settings from pkbuild.json next to it.
const backendSource = `"""In-tree PEP 517 backend generated by paaskit's pyindex."""
import base64
import hashlib
import json
import os
import sys
import time
import zipfile

def _cfg():
    # PEP 517 runs hooks in the source tree.
    with open("pkbuild.json") as f:
        return json.load(f)


def get_requires_for_build_wheel(config_settings=None):
    return list(_cfg().get("wheel_requires", []))


def _import_wheel_requires(c, hook):
    # What get_requires_for_build_wheel asked for must be installed
    # before the frontend calls the other hooks.
    import importlib
    for m in c.get("wheel_requires_modules", []):
        try:
            importlib.import_module(m)
        except ImportError as e:
            sys.stderr.write("%s of %s: %s (asked for by get_requires_for_build_wheel)\n" % (hook, c["dist"], e))
            raise


def get_requires_for_build_sdist(config_settings=None):
    return []


def _info_name(c):
    return "%s-%s.dist-info" % (c["dist"], c["version"])


def _files(c):
    out = [(c["module"] + "/__init__.py", c["source"].encode())]
    info = _info_name(c)
    out.append((info + "/METADATA", c["metadata"].encode()))
    out.append((info + "/WHEEL", b"Wheel-Version: 1.0\nGenerator: pkbackend\nRoot-Is-Purelib: true\nTag: py3-none-any\n\n"))
    if c["entry_points"]:
        out.append((info + "/entry_points.txt", c["entry_points"].encode()))
    return out


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    c = _cfg()
    _import_wheel_requires(c, "prepare_metadata_for_build_wheel")
    if c.get("fail_hook"):
        raise RuntimeError("simulated crash in prepare_metadata_for_build_wheel of %s" % c["dist"])
    info = _info_name(c)
    d = os.path.join(metadata_directory, info)
    os.makedirs(d, exist_ok=True)
    for name, data in _files(c):
        if name.startswith(info + "/"):
            if name.endswith("/METADATA") and c.get("hook_metadata"):
                data = c["hook_metadata"].encode()
            with open(os.path.join(metadata_directory, name), "wb") as f:
                f.write(data)
    return info


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    c = _cfg()
    _import_wheel_requires(c, "build_wheel")
    if c.get("script"):
        exec(compile(c["script"], "pkbuild-script", "exec"), {"__name__": "pkbuild_script"})
    if c["fail"]:
        sys.stderr.write("gcc: error: simulated compiler failure building %s\n" % c["dist"])
        sys.stderr.write("error: command 'gcc' failed with exit code 1\n")
        sys.stderr.flush()
        raise SystemExit(1)
    if c.get("fetch"):
        import urllib.request
        try:
            urllib.request.urlopen(c["fetch"], timeout=10).read()
        except OSError as e:
            sys.stderr.write("error: could not download %s: %s\n" % (c["fetch"], e))
            raise SystemExit(1)
    if c["delay"]:
        time.sleep(c["delay"])
    info = _info_name(c)
    name = "%s-%s-py3-none-any.whl" % (c["dist"], c["version"])
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for fn, data in _files(c):
            z.writestr(zipfile.ZipInfo(fn, (2020, 1, 1, 0, 0, 0)), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append("%s,sha256=%s,%d" % (fn, digest, len(data)))
        record.append(info + "/RECORD,,")
        z.writestr(zipfile.ZipInfo(info + "/RECORD", (2020, 1, 1, 0, 0, 0)), "\n".join(record) + "\n")
    return name


def build_sdist(sdist_directory, config_settings=None):
    raise NotImplementedError("pkbackend builds wheels only")


try:
    if _cfg().get("no_hook"):
        # A backend without the optional hook (PEP 517 lets it be
        # missing): frontends must build the wheel to learn its metadata.
        del prepare_metadata_for_build_wheel
except OSError:
    pass
`

// requirementName is the project name a PEP 508 requirement starts with.
func requirementName(r string) string {
	r = strings.TrimSpace(r)
	for i, c := range r {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return r[:i]
		}
	}
	return r
}

// treeFile is one file of a generated source tree.
type treeFile struct {
	name string
	data []byte
}

// sourceTree returns an sdist's top-level directory name and its files
// (names include that directory).
func sourceTree(d Dist) (string, []treeFile) {
	dn := distName(d.Name)
	root := fmt.Sprintf("%s-%s", dn, d.Version)
	wheelMeta := coreMetadata(d, "2.1", false)
	hookMeta := ""
	if len(d.HookExtraRequires) > 0 || d.HookVersion != "" {
		hd := d
		hd.Requires = append(append([]string(nil), d.Requires...), d.HookExtraRequires...)
		if d.HookVersion != "" {
			hd.Version = d.HookVersion
		}
		hookMeta = string(coreMetadata(hd, "2.1", false))
	}
	dynReqs := []string{}
	dynMods := []string{}
	for _, r := range d.DynamicBuildRequires {
		dynReqs = append(dynReqs, r)
		dynMods = append(dynMods, moduleName(requirementName(r)))
	}
	dynReqsJSON, _ := json.Marshal(dynReqs)
	dynModsJSON, _ := json.Marshal(dynMods)
	cfg := fmt.Sprintf(`{"dist": %q, "version": %q, "module": %q, "source": %q, "metadata": %q, "entry_points": %q, "delay": %g, "fail": %t, "no_hook": %t, "fail_hook": %t, "hook_metadata": %q, "fetch": %q, "wheel_requires": %s, "wheel_requires_modules": %s, "script": %q}`,
		dn, d.Version, moduleName(d.Name), moduleSource(d), string(wheelMeta), entryPoints(d), d.BuildDelay.Seconds(), d.FailBuild,
		d.NoMetadataHook, d.FailMetadataHook, hookMeta, d.BuildFetches, dynReqsJSON, dynModsJSON, d.BuildScript)
	var pkginfo []byte
	if d.DynamicMetadata {
		pkginfo = coreMetadata(d, "2.1", true)
	} else {
		pkginfo = coreMetadata(d, "2.2", false)
	}
	pyproject := "[build-system]\nrequires = []\nbuild-backend = \"pkbackend\"\nbackend-path = [\".\"]\n\n[project]\nname = \"" + d.Name + "\"\nversion = \"" + d.Version + "\"\n"
	if d.BuildBackend != "" {
		var reqs []string
		for _, r := range d.BuildRequires {
			reqs = append(reqs, fmt.Sprintf("%q", r))
		}
		pyproject = fmt.Sprintf("[build-system]\nrequires = [%s]\nbuild-backend = %q\n\n[project]\nname = %q\nversion = %q\n", strings.Join(reqs, ", "), d.BuildBackend, d.Name, d.Version)
	}
	files := []treeFile{
		{root + "/PKG-INFO", pkginfo},
		{root + "/pkbuild.json", []byte(cfg)},
		{root + "/pyproject.toml", []byte(pyproject)},
		{root + "/" + moduleName(d.Name) + "/__init__.py", []byte(moduleSource(d))},
	}
	if d.BuildBackend == "" {
		files = append(files[:1], append([]treeFile{{root + "/pkbackend.py", []byte(backendSource)}}, files[1:]...)...)
	}
	return root, files
}

func makeSdist(d Dist) (*File, error) {
	root, files := sourceTree(d)
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	gz.ModTime = epoch
	tw := tar.NewWriter(gz)
	dirs := map[string]bool{}
	for _, f := range files {
		dir := f.name[:strings.LastIndex(f.name, "/")]
		if !dirs[dir] {
			dirs[dir] = true
			if err := tw.WriteHeader(&tar.Header{Name: dir + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f.data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return &File{Dist: d, Filename: root + ".tar.gz", Data: buf.Bytes()}, nil
}

// ErrNotFound is returned for an unknown project or file.
var ErrNotFound = errors.New("pyindex: not found")
