package upload

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/paaskit/paaskit/internal/pyindex"
	"github.com/paaskit/paaskit/upload/pyinstall"
)

// testUserName is the unprivileged user the tests' command runner runs
// commands, rsync and scp as (scp needs a passwd entry, so it is a real
// user, created once).
const testUserName = "paaskit-upload-test"

var (
	testUserOnce sync.Once
	testUID      int
	testUserErr  error
)

func unprivilegedUID(t testing.TB) int {
	t.Helper()
	testUserOnce.Do(func() {
		if u, err := user.Lookup(testUserName); err == nil {
			testUID, testUserErr = strconv.Atoi(u.Uid)
			return
		}
		out, err := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--user-group", testUserName).CombinedOutput()
		if err != nil {
			if u, lerr := user.Lookup(testUserName); lerr == nil { // created meanwhile
				testUID, testUserErr = strconv.Atoi(u.Uid)
				return
			}
			testUserErr = fmt.Errorf("useradd %s (the tests run as root; apt-get install passwd): %w: %s", testUserName, err, out)
			return
		}
		u, err := user.Lookup(testUserName)
		if err != nil {
			testUserErr = err
			return
		}
		testUID, testUserErr = strconv.Atoi(u.Uid)
	})
	require.NoError(t, testUserErr)
	return testUID
}

type envOptions struct {
	maxPush, maxArchive int64
	installer           *pyinstall.Config
	keep                int
}

// testEnv is a running upload server with keys for a few users and the
// real OpenSSH client set up to talk to it.
type testEnv struct {
	t      testing.TB
	dir    string
	srv    *Server
	cfg    ServerConfig
	port   string
	kh     string
	keys   map[string]string // user -> private key file
	cancel context.CancelFunc
	done   chan error
	log    *bytes.Buffer

	mu          sync.Mutex
	activations []string // app=imageID
	activate    func(app string, img *Image) error
}

func (e *testEnv) dataDir(app string) string { return filepath.Join(e.dir, "data", app) }

func writeClientKey(t testing.TB, path string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(block), 0o600))
	sp, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	return sp
}

func newTestEnv(t testing.TB, o envOptions) *testEnv {
	t.Helper()
	for _, p := range []string{"ssh", "git", "hg", "rsync", "scp", "mksquashfs"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s not found: apt-get install openssh-client git mercurial rsync squashfs-tools", p)
		}
	}
	dir := t.TempDir()
	// The unprivileged user must reach the data directories.
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	uid := unprivilegedUID(t)
	e := &testEnv{t: t, dir: dir, keys: map[string]string{}, log: &bytes.Buffer{}}
	var lines []string
	for _, u := range []struct{ name, grants string }{
		{"alice", `deploy="blog,shop,a0,a1,a2,a3,a4,evil",run="blog,a0,a1,a2,a3,a4",data="blog"`},
		{"bob", `run="blog"`},
		{"ops", `deploy="*",run="*",data="*"`},
	} {
		kp := filepath.Join(dir, u.name+".key")
		pub := writeClientKey(t, kp)
		e.keys[u.name] = kp
		lines = append(lines, fmt.Sprintf(`user="%s",%s %s`, u.name, u.grants, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))))
	}
	// carol has a key the store does not know.
	e.keys["carol"] = filepath.Join(dir, "carol.key")
	writeClientKey(t, e.keys["carol"])
	keyFile := filepath.Join(dir, "keys")
	require.NoError(t, os.WriteFile(keyFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
	ks, err := OpenFileKeyStore(keyFile)
	require.NoError(t, err)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&logMu, e.log}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.cfg = ServerConfig{
		Listener:       ln,
		HostKeyFile:    filepath.Join(dir, "hostkey"),
		Keys:           ks,
		RepoDir:        filepath.Join(dir, "repos"),
		StoreDir:       filepath.Join(dir, "store"),
		Keep:           o.keep,
		Build:          BuilderConfig{WorkDir: filepath.Join(dir, "work")},
		Installer:      o.installer,
		MaxPushSize:    o.maxPush,
		MaxArchiveSize: o.maxArchive,
		Logger:         logger,
		Activate: func(ctx context.Context, app string, img *Image) error {
			e.mu.Lock()
			f := e.activate
			e.mu.Unlock()
			if f != nil {
				if err := f(app, img); err != nil {
					return err
				}
			}
			e.mu.Lock()
			e.activations = append(e.activations, app+"="+img.ID)
			e.mu.Unlock()
			return nil
		},
		Command: func(app string, argv []string) (*exec.Cmd, error) {
			d := e.dataDir(app)
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
			if err := os.Chown(d, uid, uid); err != nil {
				return nil, err
			}
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Dir = d
			cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "LC_ALL=C.UTF-8"}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
			return cmd, nil
		},
		DataPath: e.dataDir,
	}
	require.NoError(t, os.MkdirAll(e.cfg.Build.WorkDir, 0o755))
	e.start()
	return e
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// start runs a server on cfg (the listener is made anew on a restart, on
// the same port).
func (e *testEnv) start() {
	t := e.t
	srv, err := NewServer(e.cfg)
	require.NoError(t, err)
	e.srv = srv
	_, e.port, _ = net.SplitHostPort(srv.Addr().String())
	pub, err := os.ReadFile(e.cfg.HostKeyFile + ".pub")
	require.NoError(t, err)
	e.kh = filepath.Join(e.dir, "known_hosts")
	require.NoError(t, os.WriteFile(e.kh, []byte(fmt.Sprintf("[127.0.0.1]:%s %s", e.port, pub)), 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- srv.Run(ctx) }()
	t.Cleanup(e.stop)
}

func (e *testEnv) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		require.NoError(e.t, err)
	case <-time.After(30 * time.Second):
		e.t.Errorf("server did not stop")
	}
}

// sshBase is the OpenSSH client's command line for user's key, without
// the port (git adds it from the URL).
func (e *testEnv) sshBase(user string) []string {
	return []string{"ssh", "-F", "/dev/null", "-i", e.keys[user], "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + e.kh, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
		"-o", "GlobalKnownHostsFile=/dev/null"}
}

// ssh runs `ssh -p PORT user@127.0.0.1 remote...` with stdin.
func (e *testEnv) ssh(user string, stdin io.Reader, remote ...string) (stdout, stderr string, code int) {
	args := append(e.sshBase(user)[1:], "-p", e.port, user+"@127.0.0.1")
	args = append(args, remote...)
	cmd := exec.Command("ssh", args...)
	cmd.Stdin = stdin
	var o, er bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &er
	err := cmd.Run()
	return o.String(), er.String(), exitCode(err)
}

func (e *testEnv) gitSSHCommand(user string) string {
	return strings.Join(e.sshBase(user), " ")
}

func (e *testEnv) url(user, app string) string {
	return fmt.Sprintf("ssh://%s@127.0.0.1:%s/%s.git", user, e.port, app)
}

// gitRepo makes a work repository with files committed on main.
func gitRepo(t testing.TB, dir string, files map[string]string) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	run(t, dir, nil, "git", "init", "-q", "-b", "main")
	commitFiles(t, dir, files)
	return dir
}

func commitFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	}
	run(t, dir, nil, "git", "add", "-A")
	run(t, dir, nil, "git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "change")
}

func run(t testing.TB, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %v: %s", name, args, out)
	return string(out)
}

// push runs git push from dir to app as user and returns its output and
// exit status.
func (e *testEnv) push(user, dir, app string, extra ...string) (string, int) {
	args := append([]string{"push", e.url(user, app), "HEAD:refs/heads/main"}, extra...)
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_SSH_COMMAND="+e.gitSSHCommand(user))
	out, err := cmd.CombinedOutput()
	return string(out), exitCode(err)
}

func (e *testEnv) activated() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.activations...)
}

func (e *testEnv) live(app string) string {
	rel, ok, err := e.srv.Releases().Live(app)
	require.NoError(e.t, err)
	if !ok {
		return ""
	}
	return rel.Image.ID
}

// helperIndex serves one sdist, helper 1.2, and one that cannot build.
func helperIndex(t testing.TB, buildDelay time.Duration) *pyindex.Server {
	t.Helper()
	ix, err := pyindex.New([]pyindex.Dist{
		{Name: "helper", Version: "1.2", Kind: pyindex.Sdist},
		{Name: "slow", Version: "1.0", Kind: pyindex.Sdist, BuildDelay: buildDelay},
	})
	require.NoError(t, err)
	srv, err := pyindex.Serve(ix, pyindex.ServerConfig{Latency: 2 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	return srv
}

func statUID(fi os.FileInfo) uint32 { return fi.Sys().(*syscall.Stat_t).Uid }
