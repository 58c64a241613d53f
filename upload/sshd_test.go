package upload

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/upload/pyinstall"
)

func withInstaller(t *testing.T, buildDelay time.Duration) envOptions {
	idx := helperIndex(t, buildDelay)
	return envOptions{installer: &pyinstall.Config{IndexURL: idx.URL(), CacheDir: filepath.Join(t.TempDir(), "cache")}}
}

// A push deploys (with the installer's progress streamed), a second push
// uses the warm cache, a push whose build fails exits non-zero and keeps
// the live image, and rollback goes back.
func TestGitPushDeploysAndRollsBack(t *testing.T) {
	e := newTestEnv(t, withInstaller(t, 0))
	work := gitRepo(t, filepath.Join(e.dir, "src"), map[string]string{
		"app.py":           "import helper\n",
		"requirements.txt": "helper==1.2\n",
	})
	out, code := e.push("alice", work, "blog")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "built      helper 1.2")
	require.Contains(t, out, "installed  helper 1.2")
	require.Contains(t, out, "blog is live: sha256:")
	first := e.live("blog")
	require.NotEmpty(t, first)
	require.Equal(t, []string{"blog=" + first}, e.activated())

	// Warm cache: the wheel is not built again.
	commitFiles(t, work, map[string]string{"app.py": "import helper\nprint('v2')\n"})
	out, code = e.push("alice", work, "blog")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "cached     helper 1.2")
	require.NotContains(t, out, "built      helper")
	second := e.live("blog")
	require.NotEqual(t, first, second)

	// A failing build: non-zero, the live image stays.
	commitFiles(t, work, map[string]string{"requirements.txt": "helper==1.2\nnosuchpackage==9\n"})
	out, code = e.push("alice", work, "blog")
	require.NotEqual(t, 0, code, out)
	require.Contains(t, out, "build failed")
	require.Contains(t, out, "the live image is still "+second)
	require.Equal(t, second, e.live("blog"))
	require.Len(t, e.activated(), 2)

	// The image store lists both; rollback activates the first.
	stdout, stderr, code := e.ssh("alice", nil, "releases", "blog")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "* "+second)
	require.Contains(t, stdout, "  "+first)
	_, stderr, code = e.ssh("alice", nil, "rollback", "blog")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "rolled back")
	require.Equal(t, first, e.live("blog"))
	require.Equal(t, "blog="+first, e.activated()[2])
	_, stderr, code = e.ssh("alice", nil, "rollback", "blog")
	require.NotEqual(t, 0, code)
	require.Contains(t, stderr, "no release to roll back to")
	require.Equal(t, first, e.live("blog"))

	// Scratch trees are gone.
	left, _ := filepath.Glob(filepath.Join(e.cfg.Build.WorkDir, "*"))
	require.Empty(t, left)
}

// An activation hook that fails fails the push; the previous image stays
// live.
func TestActivationFailureKeepsLive(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	work := gitRepo(t, filepath.Join(e.dir, "src"), map[string]string{"app.py": "v1\n"})
	out, code := e.push("alice", work, "blog")
	require.Equal(t, 0, code, out)
	live := e.live("blog")
	e.mu.Lock()
	e.activate = func(string, *Image) error { return errors.New("runner says no") }
	e.mu.Unlock()
	commitFiles(t, work, map[string]string{"app.py": "v2\n"})
	out, code = e.push("alice", work, "blog")
	require.NotEqual(t, 0, code, out)
	require.Contains(t, out, "activation failed: runner says no")
	require.Equal(t, live, e.live("blog"))
	// The image that failed to activate is not kept.
	imgs, _ := filepath.Glob(filepath.Join(e.cfg.StoreDir, "*.squashfs"))
	require.Len(t, imgs, 1)
}

func TestHgPushDeploys(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	work := filepath.Join(e.dir, "hgsrc")
	require.NoError(t, os.MkdirAll(work, 0o755))
	hgEnv := []string{"HGRCPATH=", "HGUSER=t <t@example.com>"}
	run(t, work, hgEnv, "hg", "init")
	require.NoError(t, os.WriteFile(filepath.Join(work, "app.py"), []byte("print('hg')\n"), 0o644))
	run(t, work, hgEnv, "hg", "add", "app.py")
	run(t, work, hgEnv, "hg", "commit", "-m", "one")
	url := fmt.Sprintf("ssh://alice@127.0.0.1:%s/blog", e.port)
	cmd := exec.Command("hg", "push", "--config", "ui.ssh="+e.gitSSHCommand("alice"), url)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), hgEnv...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "blog is live: sha256:")
	require.NotEmpty(t, e.live("blog"))
	// A pull through the same endpoint changes nothing.
	cmd = exec.Command("hg", "pull", "--config", "ui.ssh="+e.gitSSHCommand("alice"), url)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), hgEnv...)
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Len(t, e.activated(), 1)
}

func TestRunExitStatusAndStreams(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	stdout, stderr, code := e.ssh("bob", nil, "run", "blog", "--", "/usr/bin/python3", "-c",
		`'import sys, os; print("out", os.getuid()); sys.stderr.write("err\n"); sys.exit(3)'`)
	require.Equal(t, 3, code, stderr)
	require.Equal(t, fmt.Sprintf("out %d\n", unprivilegedUID(t)), stdout)
	require.Equal(t, "err\n", stderr)
	// stdin reaches the command.
	stdout, _, code = e.ssh("bob", strings.NewReader("hello\n"), "run", "blog", "--", "/usr/bin/cat")
	require.Equal(t, 0, code)
	require.Equal(t, "hello\n", stdout)
}

// ssh -t runs python3 -i in a pty; a window change reaches it.
func TestRunInPtyWithWindowChange(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	args := append(e.sshBase("bob")[1:], "-t", "-p", e.port, "bob@127.0.0.1", "run", "blog", "--", "/usr/bin/python3", "-i", "-q")
	cmd := exec.Command("ssh", args...)
	// The client needs a terminal of its own to ask for one.
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 90})
	require.NoError(t, err)
	defer tty.Close()
	var mu sync.Mutex
	var got bytes.Buffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			mu.Lock()
			got.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	waitFor := func(s string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			ok := strings.Contains(got.String(), s)
			mu.Unlock()
			if ok {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("no %q in %q", s, got.String())
	}
	waitFor(">>> ")
	_, err = tty.Write([]byte("import os, sys; print('tty', os.isatty(0), os.get_terminal_size())\n"))
	require.NoError(t, err)
	waitFor("tty True os.terminal_size(columns=90, lines=30)")
	require.NoError(t, pty.Setsize(tty, &pty.Winsize{Rows: 40, Cols: 120}))
	// The client forwards the change when its SIGWINCH arrives: ask
	// until the new size shows.
	want := "now os.terminal_size(columns=120, lines=40)"
	for deadline := time.Now().Add(20 * time.Second); ; {
		_, err = tty.Write([]byte("print('now', os.get_terminal_size())\n"))
		require.NoError(t, err)
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		ok := strings.Contains(got.String(), want)
		mu.Unlock()
		if ok {
			break
		}
		require.True(t, time.Now().Before(deadline), "the window change never arrived")
	}
	_, err = tty.Write([]byte("raise SystemExit(7)\n"))
	require.NoError(t, err)
	err = cmd.Wait()
	require.Equal(t, 7, exitCode(err))
}
