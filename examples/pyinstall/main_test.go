package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/internal/pyindex"
	"github.com/paaskit/paaskit/runner"
)

func TestMain(m *testing.M) {
	// --sandbox's runner re-executes the test binary for its sandboxes.
	runner.Init()
	os.Exit(m.Run())
}

// TestSandboxedBuilds: with --sandbox, builds run in the runner's build
// sandbox: they succeed, and one that tries to write to the host's /usr or
// to the cache outside its build directory cannot.
func TestSandboxedBuilds(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("--sandbox needs root: run the tests as root, as make test does")
	}
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	targets := []string{"/usr/pwned-by-pyinstall-test", filepath.Join(cache, "pwned"), "/root/pwned-by-pyinstall-test"}
	script := "import sys\nfor p in " + fmt.Sprintf("%q, %q, %q", targets[0], targets[1], targets[2]) + ":\n" +
		"    try:\n        open(p, 'w').write('x')\n    except OSError:\n        continue\n    sys.exit('wrote ' + p)\n"
	ix, err := pyindex.New([]pyindex.Dist{
		{Name: "webapp", Version: "1.0", Requires: []string{"helper", "sneaky"}},
		{Name: "helper", Version: "2.1", Kind: pyindex.Sdist, DynamicMetadata: true},
		{Name: "sneaky", Version: "0.1", Kind: pyindex.Sdist, BuildScript: script},
	})
	require.NoError(t, err)
	srv, err := pyindex.Serve(ix, pyindex.ServerConfig{})
	require.NoError(t, err)
	defer srv.Close()
	var out, errs bytes.Buffer
	code := run(context.Background(), []string{"install", "-i", srv.URL(), "--cache-dir", cache, "--venv", filepath.Join(dir, "v"),
		"--sandbox", filepath.Join(dir, "sandbox"), "webapp"}, &out, &errs, false)
	require.Equal(t, 0, code, errs.String())
	require.Contains(t, out.String(), "helper==2.1 sneaky==0.1 webapp==1.0")
	require.NotContains(t, errs.String(), "no build sandbox")
	for _, p := range targets {
		_, err := os.Stat(p)
		require.ErrorIs(t, err, os.ErrNotExist, p)
	}
}

func TestInstallWithPipFlagsPlainAndLive(t *testing.T) {
	ix, err := pyindex.New([]pyindex.Dist{
		{Name: "webapp", Version: "1.0", Requires: []string{"helper>=2"}},
		{Name: "helper", Version: "1.0"},
		{Name: "helper", Version: "2.1", Kind: pyindex.Sdist, DynamicMetadata: true},
		{Name: "helper", Version: "3.0rc1"},
	})
	require.NoError(t, err)
	srv, err := pyindex.Serve(ix, pyindex.ServerConfig{})
	require.NoError(t, err)
	defer srv.Close()
	dir := t.TempDir()
	reqFile := filepath.Join(dir, "requirements.txt")
	require.NoError(t, os.WriteFile(reqFile, []byte("webapp\n"), 0o644))
	cache := filepath.Join(dir, "cache")

	// Not a terminal: one plain line per package and stage.
	var out, errs bytes.Buffer
	code := run(context.Background(), []string{"install", "-i", srv.URL(), "--cache-dir", cache, "--venv", filepath.Join(dir, "v1"), "-r", reqFile}, &out, &errs, false)
	require.Equal(t, 0, code, errs.String())
	require.Contains(t, out.String(), "Installed 2 packages")
	require.Contains(t, out.String(), "helper==2.1 webapp==1.0")
	require.Contains(t, errs.String(), "resolved   helper 2.1")
	require.Contains(t, errs.String(), "metadata   helper 2.1")
	require.Contains(t, errs.String(), "built      helper 2.1")
	require.Contains(t, errs.String(), "installed  webapp 1.0")
	require.NotContains(t, errs.String(), "\r")

	// A terminal: one line redrawn in place. pip's flags change the pick.
	out.Reset()
	errs.Reset()
	code = run(context.Background(), []string{"install", "--index-url", srv.URL(), "--cache-dir", cache, "--venv", filepath.Join(dir, "v2"), "--pre", "--only-binary", ":all:", "-r", reqFile}, &out, &errs, true)
	require.Equal(t, 0, code, errs.String())
	require.Contains(t, out.String(), "helper==3.0rc1 webapp==1.0")
	require.Contains(t, errs.String(), "\r")
	require.Contains(t, errs.String(), "installed 2/2")
	live := errs.String()[strings.Index(errs.String(), "\r"):] // after the log's sandbox warning
	require.Equal(t, 1, strings.Count(live, "\n"), "one live line: %q", live)
	require.Contains(t, errs.String(), "no build sandbox", "running builds unsandboxed is logged")

	out.Reset()
	errs.Reset()
	code = run(context.Background(), []string{"install", "--index-url", srv.URL(), "--cache-dir", cache, "--venv", filepath.Join(dir, "v3"), "--prefer-binary", "webapp"}, &out, &errs, false)
	require.Equal(t, 0, code, errs.String())
	require.Contains(t, out.String(), "helper==2.1", "--prefer-binary still needs helper>=2")
}

func TestBadInvocations(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{nil, 2, "usage"},
		{[]string{"install", "-r", "x.txt"}, 2, "--venv DIR is required"},
		{[]string{"install", "--venv", dir}, 2, "nothing to install"},
		{[]string{"install", "--frobnicate"}, 2, "flag provided but not defined"},
		{[]string{"install", "--only-binary", "-bad", "--venv", dir, "x"}, 2, "--only-binary needs"},
		{[]string{"install", "--venv", dir, "-r", filepath.Join(dir, "missing.txt")}, 1, "no such file"},
		{[]string{"install", "--venv", dir, "--cache-dir", filepath.Join(dir, "c"), "--allow-index", "https://pypi.org/simple/", "-r", writeFile(t, dir, "--index-url http://evil.example/simple/\nx\n")}, 1, "is not an allowed index"},
	} {
		var out, errs bytes.Buffer
		code := run(context.Background(), c.args, &out, &errs, false)
		require.Equal(t, c.code, code, "%v: %s", c.args, errs.String())
		require.Contains(t, errs.String(), c.msg, "%v", c.args)
	}
}

func writeFile(t *testing.T, dir, content string) string {
	t.Helper()
	p := filepath.Join(dir, "req-allow.txt")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}
