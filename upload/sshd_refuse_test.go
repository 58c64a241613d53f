package upload

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// nothingChanged checks that no release, repository or image appeared.
func (e *testEnv) nothingChanged(t *testing.T, repos int) {
	t.Helper()
	require.Empty(t, e.activated())
	imgs, _ := filepath.Glob(filepath.Join(e.cfg.StoreDir, "*.squashfs"))
	require.Empty(t, imgs)
	ents, _ := os.ReadDir(e.cfg.RepoDir)
	require.Len(t, ents, repos, "%v", ents)
}

func TestRefusals(t *testing.T) {
	e := newTestEnv(t, envOptions{maxPush: 64 << 10, maxArchive: 8 << 10})
	work := gitRepo(t, filepath.Join(e.dir, "src"), map[string]string{"app.py": "x\n"})

	t.Run("unknown key", func(t *testing.T) {
		_, stderr, code := e.ssh("carol", nil, "releases", "blog")
		require.Equal(t, 255, code)
		require.Contains(t, stderr, "is not known here")
		out, code := e.push("carol", work, "blog")
		require.NotEqual(t, 0, code)
		require.Contains(t, out, "is not known here")
	})
	t.Run("no right on the app", func(t *testing.T) {
		out, code := e.push("bob", work, "blog")
		require.NotEqual(t, 0, code)
		require.Contains(t, out, "refused: bob may not deploy app blog")
		_, stderr, code := e.ssh("alice", nil, "run", "shop", "--", "/usr/bin/id")
		require.Equal(t, 1, code)
		require.Contains(t, stderr, "refused: alice may not run app shop")
		_, stderr, code = e.ssh("bob", nil, "rollback", "blog")
		require.Equal(t, 1, code)
		require.Contains(t, stderr, "may not deploy")
	})
	t.Run("bad app names", func(t *testing.T) {
		for _, name := range []string{"../blog", "blog/..", "..", "Blog", "bl;og", "bl$og", "-blog", "blog.git/../x"} {
			out, code := e.push("ops", work, name)
			require.NotEqual(t, 0, code, name)
			require.True(t, strings.Contains(out, "refused"), "%s: %s", name, out)
		}
		for _, remote := range [][]string{
			{"run", "'../x'", "--", "/usr/bin/id"},
			{"run", "'a;b'", "--", "/usr/bin/id"},
			{"run", "blog;id"},
			{"releases", "'$(id)'"},
			{"rollback", "'a b'"},
		} {
			_, stderr, code := e.ssh("ops", nil, remote...)
			require.Equal(t, 1, code, "%v", remote)
			require.Contains(t, stderr, "refused", "%v", remote)
		}
	})
	t.Run("commands not allowed", func(t *testing.T) {
		for _, remote := range [][]string{
			{"ls"}, {"sh", "-c", "id"}, {"/bin/sh"}, {"git", "config", "x"}, {"hg", "-R", "blog", "serve"},
			{"rsync", "--server", "--log-file=/tmp/x", ".", "blog/"},
			{"rsync", "-T", "/tmp", "--server", ".", "blog/"},
			{"scp", "-t", "/etc/passwd"}, {"scp", "-S", "x", "-t", "blog/"},
			{"run", "blog", "--", "a", "|", "b"},
			{"run", "blog", "--", "a", "`id`"},
		} {
			_, stderr, code := e.ssh("ops", nil, remote...)
			require.Equal(t, 1, code, "%v", remote)
			require.Contains(t, stderr, "refused", "%v", remote)
		}
		// No command at all is a shell request: refused too.
		_, stderr, code := e.ssh("ops", nil)
		require.Equal(t, 1, code)
		require.Contains(t, stderr, "no shell here")
	})
	t.Run("push over the size limit", func(t *testing.T) {
		big := make([]byte, 256<<10)
		_, _ = rand.Read(big)
		bw := gitRepo(t, filepath.Join(e.dir, "big"), map[string]string{"blob.bin": string(big)})
		out, code := e.push("alice", bw, "shop")
		require.NotEqual(t, 0, code, out)
		require.Contains(t, out, "refused: the push is over the size limit of 65536 bytes")
		// The repository exists (made on connect) but holds no ref.
		heads, err := e.srv.gitHeads(t.Context(), filepath.Join(e.cfg.RepoDir, "shop.git"))
		require.NoError(t, err)
		require.Empty(t, heads)
	})
	t.Run("archive over the size limit", func(t *testing.T) {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		body := make([]byte, 32<<10)
		_, _ = rand.Read(body)
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: "big", Mode: 0o644, Size: int64(len(body))}))
		_, _ = tw.Write(body)
		require.NoError(t, tw.Close())
		_, stderr, code := e.ssh("alice", bytes.NewReader(buf.Bytes()), "deploy", "blog")
		require.Equal(t, 1, code)
		require.Contains(t, stderr, "archive is over the size limit")
	})
	t.Run("repository path is a symlink", func(t *testing.T) {
		target := filepath.Join(e.dir, "elsewhere.git")
		run(t, e.dir, nil, "git", "init", "-q", "--bare", target)
		require.NoError(t, os.Symlink(target, filepath.Join(e.cfg.RepoDir, "evil.git")))
		out, code := e.push("alice", work, "evil")
		require.NotEqual(t, 0, code)
		require.Contains(t, out, "repository path is a symbolic link")
		heads, err := e.srv.gitHeads(t.Context(), target)
		require.NoError(t, err)
		require.Empty(t, heads)
		require.NoError(t, os.Remove(filepath.Join(e.cfg.RepoDir, "evil.git")))
	})
	// Only shop.git, made by the oversized push's connection, exists.
	e.nothingChanged(t, 1)
}

// A small archive deploys through `deploy APP`.
func TestDeployArchive(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	bundle := tgz(t, [][2]string{{"app.py", "print('archive')\n"}})
	_, stderr, code := e.ssh("alice", bytes.NewReader(bundle), "deploy", "blog")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "blog is live")
	require.NotEmpty(t, e.live("blog"))
	// The same tree again is the live image: it is not activated twice.
	_, stderr, code = e.ssh("alice", bytes.NewReader(bundle), "deploy", "blog")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "nothing to activate")
	require.Len(t, e.activated(), 1)
	// A corrupt archive fails and changes nothing.
	_, stderr, code = e.ssh("alice", strings.NewReader("not an archive"), "deploy", "blog")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "build failed")
	require.Len(t, e.activated(), 1)
}

// Two pushes of one app build one after the other, in order; a push of
// another app is not held up meanwhile.
func TestPushesOfOneAppAreSerialised(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	release := make(chan struct{})
	entered := make(chan string, 10)
	e.mu.Lock()
	e.activate = func(app string, img *Image) error {
		entered <- app
		if app == "blog" {
			<-release
		}
		return nil
	}
	e.mu.Unlock()
	w1 := gitRepo(t, filepath.Join(e.dir, "w1"), map[string]string{"app.py": "one\n"})
	w2 := gitRepo(t, filepath.Join(e.dir, "w2"), map[string]string{"app.py": "two\n"})
	var wg sync.WaitGroup
	outs := make([]string, 3)
	codes := make([]int, 3)
	wg.Add(1)
	go func() { defer wg.Done(); outs[0], codes[0] = e.push("alice", w1, "blog") }()
	require.Equal(t, "blog", <-entered) // the first push is activating, holding blog's lock
	wg.Add(1)
	go func() { defer wg.Done(); outs[1], codes[1] = e.push("alice", w2, "blog", "--force") }()
	// The second push says it waits; a third queues behind it.
	waitLog(t, e, "waiting", func() bool { return strings.Contains(e.srv.lockState("blog"), "1 waiting") })
	w4 := gitRepo(t, filepath.Join(e.dir, "w4"), map[string]string{"app.py": "three\n"})
	wg.Add(1)
	go func() { defer wg.Done(); outs[2], codes[2] = e.push("alice", w4, "blog", "--force") }()
	waitLog(t, e, "waiting", func() bool { return strings.Contains(e.srv.lockState("blog"), "2 waiting") })
	// Another app deploys meanwhile.
	other := gitRepo(t, filepath.Join(e.dir, "w3"), map[string]string{"app.py": "other\n"})
	out, code := e.push("alice", other, "shop")
	require.Equal(t, 0, code, out)
	require.Equal(t, "shop", <-entered)
	close(release)
	require.Equal(t, "blog", <-entered)
	require.Equal(t, "blog", <-entered)
	wg.Wait()
	for i := range outs {
		require.Equal(t, 0, codes[i], outs[i])
	}
	require.Contains(t, outs[1], "waiting: 1 push(es) of blog ahead")
	require.Contains(t, outs[2], "waiting: 2 push(es) of blog ahead")
	acts := e.activated()
	require.Len(t, acts, 4)
	require.Equal(t, "shop", strings.Split(acts[0], "=")[0])
	// They went in arrival order: the third is live, the second before it.
	rels, live, err := e.srv.Releases().List("blog")
	require.NoError(t, err)
	require.Equal(t, "blog="+live, acts[3])
	require.Equal(t, run(t, w4, nil, "git", "rev-parse", "HEAD"), rels[0].Revision+"\n")
	require.Equal(t, run(t, w2, nil, "git", "rev-parse", "HEAD"), rels[1].Revision+"\n")
	require.Equal(t, run(t, w1, nil, "git", "rev-parse", "HEAD"), rels[2].Revision+"\n")
}

func waitLog(t *testing.T, e *testEnv, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A client that goes away mid-build cancels the build cleanly: the live
// image is untouched, nothing is left behind, and the next push works.
func TestDisconnectMidBuild(t *testing.T) {
	e := newTestEnv(t, withInstaller(t, 60*time.Second))
	work := gitRepo(t, filepath.Join(e.dir, "src"), map[string]string{"app.py": "v1\n"})
	out, code := e.push("alice", work, "blog")
	require.Equal(t, 0, code, out)
	live := e.live("blog")

	commitFiles(t, work, map[string]string{"requirements.txt": "slow==1.0\n"})
	cmd := exec.Command("git", "push", e.url("alice", "blog"), "HEAD:refs/heads/main")
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "GIT_SSH_COMMAND="+e.gitSSHCommand("alice"))
	var buf lockedBuffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	// Its own process group, so that killing it takes ssh along: the
	// connection really drops.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	waitLog(t, e, "the slow build", func() bool { return strings.Contains(buf.String(), "resolved   slow") })
	require.NoError(t, syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL))
	_ = cmd.Wait()
	// The lock frees once the build has been cancelled.
	waitLog(t, e, "the cancelled build", func() bool { return e.srv.lockState("blog") == "free" })
	require.Equal(t, live, e.live("blog"))
	require.Len(t, e.activated(), 1)
	left, _ := filepath.Glob(filepath.Join(e.cfg.Build.WorkDir, "*"))
	require.Empty(t, left)
	tmp, _ := filepath.Glob(filepath.Join(e.cfg.StoreDir, ".image-*"))
	require.Empty(t, tmp)

	commitFiles(t, work, map[string]string{"requirements.txt": ""})
	out, code = e.push("alice", work, "blog")
	require.Equal(t, 0, code, out)
	require.NotEqual(t, live, e.live("blog"))
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// 20 SSH sessions at once, pushes and commands mixed, all succeed.
func TestTwentyConcurrentSessions(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	const n = 20
	var wg sync.WaitGroup
	errs := make([]string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			app := fmt.Sprintf("a%d", i%5)
			if i%2 == 0 {
				w := gitRepo(t, filepath.Join(e.dir, fmt.Sprintf("w%d", i)), map[string]string{"app.py": fmt.Sprintf("print(%d)\n", i)})
				if out, code := e.push("alice", w, app, "--force"); code != 0 {
					errs[i] = fmt.Sprintf("push %d: exit %d: %s", i, code, out)
				}
				return
			}
			stdout, stderr, code := e.ssh("alice", nil, "run", app, "--", "/usr/bin/echo", fmt.Sprint(i))
			if code != 0 || stdout != fmt.Sprintf("%d\n", i) {
				errs[i] = fmt.Sprintf("run %d: exit %d: %q %q", i, code, stdout, stderr)
			}
		}()
	}
	wg.Wait()
	for _, e := range errs {
		require.Empty(t, e)
	}
	require.Len(t, e.activated(), n/2)
}

// rsync and scp write into the app's data directory as the app's user, and
// cannot write outside it.
func TestRsyncAndScpIntoDataDir(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	uid := unprivilegedUID(t)
	src := filepath.Join(e.dir, "upload")
	require.NoError(t, os.MkdirAll(filepath.Join(src, "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "a.txt"), []byte("a"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(src, "sub", "b.txt"), []byte("b"), 0o644))
	rsh := strings.Join(append(e.sshBase("alice"), "-p", e.port), " ")
	run(t, e.dir, nil, "rsync", "-a", "-e", rsh, src+"/", "alice@127.0.0.1:blog/site/")
	data := e.dataDir("blog")
	b, err := os.ReadFile(filepath.Join(data, "site", "sub", "b.txt"))
	require.NoError(t, err)
	require.Equal(t, "b", string(b))
	fi, err := os.Stat(filepath.Join(data, "site", "a.txt"))
	require.NoError(t, err)
	require.Equal(t, uint32(uid), statUID(fi))

	// scp (the legacy protocol, scp -O, is what `scp -t` serves).
	run(t, e.dir, nil, "scp", "-O", "-q", "-F", "/dev/null", "-i", e.keys["alice"], "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile="+e.kh, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-P", e.port,
		filepath.Join(src, "a.txt"), "alice@127.0.0.1:blog/copied.txt")
	b, err = os.ReadFile(filepath.Join(data, "copied.txt"))
	require.NoError(t, err)
	require.Equal(t, "a", string(b))

	// A symlink in the data directory pointing out: the app's user cannot
	// write through it, and ../ is refused before anything runs.
	outside := filepath.Join(e.dir, "outside")
	require.NoError(t, os.MkdirAll(outside, 0o755))
	require.NoError(t, os.Symlink(outside, filepath.Join(data, "escape")))
	cmd := exec.Command("rsync", "-a", "-e", rsh, src+"/", "alice@127.0.0.1:blog/escape/")
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "%s", out)
	cmd = exec.Command("rsync", "-a", "-e", rsh, src+"/", "alice@127.0.0.1:blog/../x/")
	out, err = cmd.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "climbs out")
	ents, _ := os.ReadDir(outside)
	require.Empty(t, ents)
	_, err = os.Stat(filepath.Join(e.dir, "data", "x"))
	require.True(t, os.IsNotExist(err))
	// bob has no data right.
	cmd = exec.Command("rsync", "-a", "-e", strings.Join(append(e.sshBase("bob"), "-p", e.port), " "), src+"/", "bob@127.0.0.1:blog/")
	out, err = cmd.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "bob may not data app blog")
}

// The host key survives a restart: the same known_hosts line still works.
func TestHostKeyPersists(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	pub1, err := os.ReadFile(e.cfg.HostKeyFile + ".pub")
	require.NoError(t, err)
	e.stop()
	kh := e.kh
	khBody, err := os.ReadFile(kh)
	require.NoError(t, err)
	e.cfg.Listener = nil
	e.cfg.Addr = "127.0.0.1:" + e.port
	e.start()
	require.NoError(t, os.WriteFile(kh, khBody, 0o644)) // what the client knew before
	pub2, err := os.ReadFile(e.cfg.HostKeyFile + ".pub")
	require.NoError(t, err)
	require.Equal(t, pub1, pub2)
	_, stderr, code := e.ssh("alice", nil, "help")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "rollback APP")

	// A host key others can read is refused.
	require.NoError(t, os.Chmod(e.cfg.HostKeyFile, 0o644))
	cfg := e.cfg
	cfg.Addr = "127.0.0.1:0"
	_, err = NewServer(cfg)
	require.ErrorContains(t, err, "readable by group or others")
}

// Stopping the server mid-build cancels the build, returns promptly and
// leaves no goroutine behind; the live image is untouched.
func TestServerStopMidBuildLeaksNothing(t *testing.T) {
	opts := withInstaller(t, 60*time.Second)
	ignore := goleak.IgnoreCurrent()
	e := newTestEnv(t, opts)
	work := gitRepo(t, filepath.Join(e.dir, "src"), map[string]string{"app.py": "v1\n"})
	out, code := e.push("alice", work, "blog")
	require.Equal(t, 0, code, out)
	live := e.live("blog")
	commitFiles(t, work, map[string]string{"requirements.txt": "slow==1.0\n"})
	var buf lockedBuffer
	done := make(chan int)
	go func() {
		cmd := exec.Command("git", "push", e.url("alice", "blog"), "HEAD:refs/heads/main")
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "GIT_SSH_COMMAND="+e.gitSSHCommand("alice"))
		cmd.Stdout, cmd.Stderr = &buf, &buf
		done <- exitCode(cmd.Run())
	}()
	waitLog(t, e, "the slow build", func() bool { return strings.Contains(buf.String(), "resolved   slow") })
	e.stop()
	require.NotEqual(t, 0, <-done)
	require.Equal(t, live, e.live("blog"))
	left, _ := filepath.Glob(filepath.Join(e.cfg.Build.WorkDir, "*"))
	require.Empty(t, left)
	goleak.VerifyNone(t, ignore)
}

func TestHgPushOverSizeLimit(t *testing.T) {
	e := newTestEnv(t, envOptions{maxPush: 16 << 10})
	work := filepath.Join(e.dir, "hgsrc")
	require.NoError(t, os.MkdirAll(work, 0o755))
	hgEnv := []string{"HGRCPATH=", "HGUSER=t <t@example.com>"}
	run(t, work, hgEnv, "hg", "init")
	big := make([]byte, 128<<10)
	_, _ = rand.Read(big)
	require.NoError(t, os.WriteFile(filepath.Join(work, "blob.bin"), big, 0o644))
	run(t, work, hgEnv, "hg", "add", "blob.bin")
	run(t, work, hgEnv, "hg", "commit", "-m", "big")
	cmd := exec.Command("hg", "push", "--config", "ui.ssh="+e.gitSSHCommand("alice"), fmt.Sprintf("ssh://alice@127.0.0.1:%s/blog", e.port))
	cmd.Dir = work
	cmd.Env = append(os.Environ(), hgEnv...)
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "%s", out)
	require.Contains(t, string(out), "over the size limit")
	// The server's repository is intact and empty.
	log := run(t, e.dir, hgEnv, "hg", "-R", filepath.Join(e.cfg.RepoDir, "blog.hg"), "log", "-T", "{node}")
	require.Empty(t, log)
	_, err = os.Stat(filepath.Join(e.cfg.RepoDir, "blog.hg", ".hg", "store", "journal"))
	require.True(t, os.IsNotExist(err), "an abandoned transaction was left")
	e.nothingChanged(t, 1)
}

// A clone of an app that was never pushed is refused and creates nothing;
// one that was pushed clones.
func TestGitCloneFetch(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	env := []string{"GIT_SSH_COMMAND=" + e.gitSSHCommand("alice")}
	cmd := exec.Command("git", "clone", e.url("alice", "blog"), filepath.Join(e.dir, "c1"))
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "no repository yet")
	e.nothingChanged(t, 0)
	work := gitRepo(t, filepath.Join(e.dir, "src"), map[string]string{"app.py": "v1\n"})
	o, code := e.push("alice", work, "blog")
	require.Equal(t, 0, code, o)
	run(t, e.dir, env, "git", "clone", "-q", e.url("alice", "blog"), filepath.Join(e.dir, "c2"))
	b, err := os.ReadFile(filepath.Join(e.dir, "c2", "app.py"))
	require.NoError(t, err)
	require.Equal(t, "v1\n", string(b))
}
