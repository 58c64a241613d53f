package buildsandbox_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/examples/internal/buildsandbox"
	"github.com/paaskit/paaskit/internal/pyindex"
	"github.com/paaskit/paaskit/runner"
	"github.com/paaskit/paaskit/upload/pyinstall"
)

func TestMain(m *testing.M) {
	// The runner builds each sandbox by re-executing this binary.
	runner.Init()
	os.Exit(m.Run())
}

var seq atomic.Int64

// newRunner is a running runner with full isolation and egress on its own
// subnet, whose bridge address (what a build reaches the host's index at)
// it returns too.
func newRunner(t testing.TB) (*runner.Runner, string) {
	t.Helper()
	require.Zero(t, os.Geteuid(), "the build sandbox test runs as root (the runner's isolation needs it)")
	state, err := os.MkdirTemp("", "bsb")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(state, 0o711))
	t.Cleanup(func() { os.RemoveAll(state) })
	n := os.Getpid()%200 + 20
	subnet := fmt.Sprintf("10.233.%d.0/24", n)
	r, err := runner.New(runner.Config{
		StateDir:     state,
		CgroupRoot:   fmt.Sprintf("paaskit-bsb-%d-%d", os.Getpid(), seq.Add(1)),
		EgressSubnet: subnet,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-r.Ready()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	iso := r.Isolation()
	require.True(t, iso.User && iso.SandboxRoot && iso.Cgroup && iso.Network && iso.Egress, "missing: %v", iso.Missing)
	return r, fmt.Sprintf("10.233.%d.1", n)
}

// realSdist is a setuptools sdist (setup.py, Metadata-Version 2.1 PKG-INFO)
// built with the Debian setuptools the target interpreter has.
func realSdist(t *testing.T, dir, name, setupPrelude string) {
	t.Helper()
	root := name + "-1.0/"
	files := map[string]string{
		root + "PKG-INFO":       "Metadata-Version: 2.1\nName: " + name + "\nVersion: 1.0\n",
		root + "pyproject.toml": "[build-system]\nrequires = []\nbuild-backend = \"setuptools.build_meta\"\n",
		root + "setup.py":       setupPrelude + "\nfrom setuptools import setup\nsetup(name=\"" + name + "\", version=\"1.0\", py_modules=[\"" + name + "\"], install_requires=[\"dep\"])\n",
		root + name + ".py":     "VALUE = 42\n",
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	require.NoError(t, tw.WriteHeader(&tar.Header{Name: root, Typeflag: tar.TypeDir, Mode: 0o755}))
	for name, body := range files {
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}))
		_, err := tw.Write([]byte(body))
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	require.NoError(t, gz.Close())
	require.NoError(t, os.WriteFile(filepath.Join(dir, root[:len(root)-1]+".tar.gz"), buf.Bytes(), 0o644))
}

// hostAddr is an IPv4 address of the host other than loopback and the
// runner's bridge, or "".
func hostAddr(bridge string) string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && n.IP.String() != bridge {
			return n.IP.String()
		}
	}
	return ""
}

// probeScript is a hostile build: it tries to write outside its build
// directory and to connect anywhere but the index, and reports on one line
// before it fails the build (so the report is in the BuildError).
const probeScript = `
import os, socket, sys
report = []
def write(p):
    try:
        with open(p, "w") as f:
            f.write("pwned")
        report.append("write %%s ok" %% p)
    except OSError as e:
        report.append("write %%s refused" %% p)
for p in %s:
    write(p)
cwd = os.getcwd()
write(os.path.join(cwd, "..", "..", "pwned-work"))
write(os.path.join(cwd, "..", "..", "..", "pwned-install"))
try:
    with open("made-in-build-dir", "w") as f:
        f.write("fine")
    report.append("build-dir ok")
except OSError as e:
    report.append("build-dir refused %%s" %% e)
for a in %s:
    h, port = a.rsplit(":", 1)
    try:
        socket.create_connection((h, int(port)), timeout=3).close()
        report.append("connect %%s ok" %% a)
    except OSError as e:
        report.append("connect %%s refused" %% a)
report.append("uid %%d" %% os.getuid())
sys.stderr.write("PROBE " + " | ".join(report) + "\n")
raise SystemExit(1)
`

func pyList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func TestBuildsRunInTheRunnersSandbox(t *testing.T) {
	r, bridge := newRunner(t)
	admin, err := net.Listen("tcp", "0.0.0.0:0")
	require.NoError(t, err)
	defer admin.Close()
	go func() {
		for {
			c, err := admin.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	adminPort := admin.Addr().(*net.TCPAddr).Port
	cacheDir := t.TempDir()
	forbiddenPaths := []string{
		filepath.Join(cacheDir, "pwned"), filepath.Join(cacheDir, "tmp", "pwned"), filepath.Join(cacheDir, "built", "pwned"),
		"/usr/pwned", "/app/pwned", "/data/pwned", "/etc/pwned", "/root/pwned", "/pwned",
	}
	// The index listens on all the host's addresses; the installer
	// reaches it on loopback, builds at the bridge's address.
	var srv *pyindex.Server
	addrsFor := func(indexPort int) []string {
		a := []string{
			fmt.Sprintf("%s:%d", bridge, indexPort), // the index: allowed
			fmt.Sprintf("%s:%d", bridge, adminPort),
			fmt.Sprintf("127.0.0.1:%d", indexPort),
			fmt.Sprintf("127.0.0.1:%d", adminPort),
			"169.254.169.254:80",
		}
		if h := hostAddr(bridge); h != "" {
			a = append(a, fmt.Sprintf("%s:%d", h, indexPort))
		}
		return a
	}
	// The probe needs the index's port, known once it listens: serve a
	// first index to learn a free port, then the real one on it.
	probeSrv, err := pyindex.Serve(mustIndex(t, nil), pyindex.ServerConfig{Addr: "0.0.0.0:0"})
	require.NoError(t, err)
	port := probeSrv.Port()
	require.NoError(t, probeSrv.Close())
	addrs := addrsFor(port)
	dists := []pyindex.Dist{
		{Name: "dep", Version: "1.0"},
		{Name: "plain-sdist", Version: "2.0", Kind: pyindex.Sdist, DynamicMetadata: true, Requires: []string{"dep"}},
	}
	// Each hostile build twice: with static metadata it is built by a
	// build process of its own, with dynamic metadata by a child of the
	// build server.
	hog := "import sys\nx = b'x' * (600 << 20)\nsys.stderr.write('allocated %d bytes\\n' % len(x))\n"
	for _, dynamic := range []bool{false, true} {
		suffix := ""
		if dynamic {
			suffix = "-served"
		}
		dists = append(dists,
			pyindex.Dist{Name: "hostile" + suffix, Version: "0.1", Kind: pyindex.Sdist, NoMetadataHook: true, DynamicMetadata: dynamic,
				BuildScript: fmt.Sprintf(probeScript, pyList(forbiddenPaths), pyList(addrs))},
			pyindex.Dist{Name: "hog" + suffix, Version: "0.1", Kind: pyindex.Sdist, NoMetadataHook: true, DynamicMetadata: dynamic, BuildScript: hog})
	}
	srv, err = pyindex.Serve(mustIndex(t, dists), pyindex.ServerConfig{Addr: fmt.Sprintf("0.0.0.0:%d", port)})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })

	allow, err := buildsandbox.AllowIndex(fmt.Sprintf("http://%s:%d/simple/", bridge, port))
	require.NoError(t, err)
	sb, err := buildsandbox.New(buildsandbox.Config{Runner: r, StateDir: t.TempDir(), Allow: []string{allow},
		Limits: runner.Limits{Memory: 192 << 20, Processes: 256, CPUs: 1}})
	require.NoError(t, err)
	links := t.TempDir()
	realSdist(t, links, "realpkg", "")
	// A hostile setup.py, run by setuptools' get_requires_for_build_wheel.
	realSdist(t, links, "evilsetup", fmt.Sprintf(probeScript, pyList(forbiddenPaths), pyList(addrs)))
	cfg := pyinstall.Config{IndexURL: srv.URL(), FindLinks: []string{links}, CacheDir: cacheDir,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	sb.Apply(&cfg)
	require.Equal(t, sb.User(), *cfg.BuildUser)
	in, err := pyinstall.New(cfg)
	require.NoError(t, err)
	reqs := func(lines ...string) *pyinstall.Requirements {
		rq, err := pyinstall.ParseRequirements(strings.NewReader(strings.Join(lines, "\n")), "test", t.TempDir())
		require.NoError(t, err)
		return rq
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Real builds succeed: setuptools from a setup.py, and an in-tree
	// backend through the metadata hook.
	venv := filepath.Join(t.TempDir(), "venv")
	res, err := in.Install(ctx, reqs("realpkg", "plain-sdist"), venv, pyinstall.InstallOptions{})
	require.NoError(t, err)
	require.Equal(t, 2, res.Built)
	out, err := exec.Command(filepath.Join(venv, "bin", "python"), "-c", "import realpkg, plain_sdist, dep; print(realpkg.VALUE)").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, "42\n", string(out))

	hostileBuild(ctx, t, in, "evilsetup", forbiddenPaths, addrs, sb.User().UID)
	for _, suffix := range []string{"", "-served"} {
		hostileBuild(ctx, t, in, "hostile"+suffix, forbiddenPaths, addrs, sb.User().UID)
		// A build over the memory bound is killed, and says so.
		_, err = in.Install(ctx, reqs("hog"+suffix), filepath.Join(t.TempDir(), "venv"), pyinstall.InstallOptions{})
		var be *pyinstall.BuildError
		require.ErrorAs(t, err, &be, "hog%s", suffix)
		require.True(t, be.Killed, "%v", err)
		require.Contains(t, err.Error(), "killed by SIGKILL")
		require.NotContains(t, err.Error(), "allocated")
	}

	// Nothing of the builds is left in the cache's tmp.
	tmp, _ := os.ReadDir(filepath.Join(cacheDir, "tmp"))
	require.Empty(t, tmp)
}

func mustIndex(t *testing.T, dists []pyindex.Dist) *pyindex.Index {
	t.Helper()
	if dists == nil {
		dists = []pyindex.Dist{{Name: "placeholder", Version: "1.0"}}
	}
	ix, err := pyindex.New(dists)
	require.NoError(t, err)
	return ix
}

// hostileBuild installs the hostile package name: its build must write
// nowhere but its build directory and reach nothing but the index (the
// first of addrs), as the build user.
func hostileBuild(ctx context.Context, t *testing.T, in *pyinstall.Installer, name string, forbiddenPaths, addrs []string, uid int) {
	t.Helper()
	rq, err := pyinstall.ParseRequirements(strings.NewReader(name), "test", t.TempDir())
	require.NoError(t, err)
	_, err = in.Install(ctx, rq, filepath.Join(t.TempDir(), "venv"), pyinstall.InstallOptions{})
	var be *pyinstall.BuildError
	require.ErrorAs(t, err, &be, name)
	i := strings.Index(be.StderrTail, "PROBE ")
	require.GreaterOrEqual(t, i, 0, "no report: %s", be.StderrTail)
	report := map[string]bool{}
	for _, item := range strings.Split(strings.TrimSpace(strings.SplitN(be.StderrTail[i+6:], "\n", 2)[0]), " | ") {
		report[item] = true
	}
	for _, p := range forbiddenPaths {
		require.True(t, report["write "+p+" refused"], "%s wrote %s: %v", name, p, report)
		_, err := os.Stat(p)
		require.ErrorIs(t, err, os.ErrNotExist, "%s exists on the host", p)
	}
	require.True(t, report["build-dir ok"], "%v", report)
	n := 0
	for k := range report {
		if strings.HasPrefix(k, "write ") && strings.Contains(k, "pwned-") {
			require.True(t, strings.HasSuffix(k, " refused"), "the install's own directories: %s", k)
			n++
		}
	}
	require.Equal(t, 2, n, "%v", report)
	require.True(t, report["connect "+addrs[0]+" ok"], "the index: %v", report)
	for _, a := range addrs[1:] {
		require.True(t, report["connect "+a+" refused"], "%s reached %s: %v", name, a, report)
	}
	require.True(t, report[fmt.Sprintf("uid %d", uid)], "%v", report)
}

func TestBadUseIsAClearError(t *testing.T) {
	// A runner without isolation gives no sandbox, rather than a
	// partial one.
	plain, err := runner.New(runner.Config{StateDir: t.TempDir(), Isolation: runner.Isolation{Off: true},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	_, err = buildsandbox.New(buildsandbox.Config{Runner: plain, StateDir: t.TempDir()})
	require.ErrorContains(t, err, "lacks isolation a build sandbox needs")
	_, err = buildsandbox.New(buildsandbox.Config{StateDir: t.TempDir()})
	require.ErrorContains(t, err, "Config.Runner and Config.StateDir are required")
	_, err = buildsandbox.AllowIndex("ftp://example.org/simple/")
	require.ErrorContains(t, err, `scheme "ftp"`)
	hp, err := buildsandbox.AllowIndex("https://pypi.org/simple/")
	require.NoError(t, err)
	require.Equal(t, "pypi.org:443", hp)

	r, _ := newRunner(t)
	sb, err := buildsandbox.New(buildsandbox.Config{Runner: r, StateDir: t.TempDir()})
	require.NoError(t, err)
	_, err = sb.Wrap(context.Background(), exec.Command("/usr/bin/python3", "-c", "pass"))
	require.ErrorContains(t, err, "not an install's build")
}
