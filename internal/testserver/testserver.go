// Package testserver starts throwaway PostgreSQL, Redis and etcd servers on
// free loopback ports for paaskit's tests, and finds the ones `make test`
// already started.
//
// `make test` starts one PostgreSQL, one Redis and one etcd for the whole
// run and passes their addresses in the environment:
//
//	PAASKIT_TEST_POSTGRES  a PostgreSQL connection URL
//	PAASKIT_TEST_REDIS     a Redis address, host:port
//	PAASKIT_TEST_ETCD      an etcd client endpoint, http://host:port
//
// Plain `go test ./...` works too: when a variable is absent, Postgres,
// Redis and Etcd start a server for the test binary on first use, and Main
// stops it when the tests end. Fault tests that kill and restart a server
// call StartPostgres, StartRedis or StartEtcd for a server of their own. A server whose program is missing is a test failure
// that names the Debian package to install; nothing is ever skipped.
package testserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Environment variables through which `make test` hands its servers to the
// tests.
const (
	EnvPostgres = "PAASKIT_TEST_POSTGRES"
	EnvRedis    = "PAASKIT_TEST_REDIS"
	EnvEtcd     = "PAASKIT_TEST_ETCD"
)

// Server is one running throwaway server.
type Server struct {
	// Addr is how clients reach it: a connection URL for PostgreSQL,
	// host:port for Redis, an http:// client endpoint for etcd.
	Addr string

	cmd  *exec.Cmd
	dir  string
	done chan struct{}
	// what and ready are start's arguments, for Restart.
	what, ready string
}

// Kill kills the server's process group with SIGKILL (a crash: no clean
// shutdown), and its children, and waits until every one of them is gone;
// its data directory stays for Restart. The children are found by parent,
// not only by group: PostgreSQL's backends each call setsid(), so they are
// not in the server's process group, and one still running would hold the
// server's shared memory ("pre-existing shared memory block is still in
// use" on Restart). The server is stopped (SIGSTOP) first, so that it
// forks nothing while they are listed.
func (s *Server) Kill() {
	pid := s.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGSTOP)
	kids := childrenOf(pid)
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for _, k := range kids {
		_ = syscall.Kill(-k, syscall.SIGKILL)
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	<-s.done
	gone := func(p int, group bool) bool {
		if group {
			p = -p
		}
		return errors.Is(syscall.Kill(p, 0), syscall.ESRCH)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		all := gone(pid, true)
		for _, k := range kids {
			all = all && gone(k, false)
		}
		if all {
			return
		}
	}
}

// childrenOf lists the processes whose parent is pid, from /proc.
func childrenOf(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 {
			if ppid, err := strconv.Atoi(f[1]); err == nil && ppid == pid {
				kids = append(kids, p)
			}
		}
	}
	return kids
}

// Restart kills the server if it runs (as Kill does) and starts it again
// with the same data directory and port, waiting until it is ready. Fault
// tests use it to restart a server mid-stream.
func (s *Server) Restart(ctx context.Context) error {
	s.Kill()
	old := s.cmd
	cmd := exec.Command(old.Path, old.Args[1:]...)
	cmd.SysProcAttr, cmd.Dir, cmd.Env = old.SysProcAttr, old.Dir, old.Env
	return s.start(ctx, cmd, s.what, s.ready)
}

// Stop stops the server and removes its data directory.
func (s *Server) Stop() error {
	if s == nil || s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	return os.RemoveAll(s.dir)
}

// FreePort returns a TCP port on 127.0.0.1 that is free and that no other
// caller of FreePort on this machine is handed while this process lives.
//
// A port the kernel picks for a listener on port 0 is an ephemeral port:
// the kernel hands the same range to outgoing connections, so once the
// probe listener closes, any test's connect can take the port before the
// server that asked for it binds (CI lost a stats run to exactly that:
// "bind ROUTER socket ... address already in use"). FreePort therefore
// picks from below the ephemeral range (net.ipv4.ip_local_port_range
// starts at 32768 by default) and reserves the port across processes with
// an flock on a file under the temporary directory, held until the process
// exits, so test binaries that `go test ./...` runs in parallel never
// share one.
func FreePort() (int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	dir := filepath.Join(os.TempDir(), "paaskit-test-ports")
	if err := os.MkdirAll(dir, 0o1777); err != nil {
		return 0, fmt.Errorf("testserver: find a free port: %w", err)
	}
	lo, hi := reservedPortRange()
	span := hi - lo
	start := int(time.Now().UnixNano()/1000+int64(os.Getpid())*7919) % span
	for i := range span {
		port := lo + (start+i)%span
		if portHeld[port] {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return 0, fmt.Errorf("testserver: find a free port: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue // another test process holds it
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			f.Close() // in use by something that is not ours
			continue
		}
		l.Close()
		portHeld[port] = true
		portLocks = append(portLocks, f) // kept open: the lock lasts as long as the process
		return port, nil
	}
	return 0, fmt.Errorf("testserver: find a free port: every port in %d-%d is taken", lo, hi-1)
}

var (
	portMu    sync.Mutex
	portHeld  = map[int]bool{}
	portLocks []*os.File
)

// reservedPortRange is the range FreePort draws from: [20000, 32768) cut
// down to end below the kernel's ephemeral range where that starts lower.
func reservedPortRange() (lo, hi int) {
	lo, hi = 20000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if first, err := strconv.Atoi(f[0]); err == nil && first < hi {
				hi = first
				if hi-lo < 1000 {
					lo = max(1024, hi-5000)
				}
			}
		}
	}
	return lo, hi
}

// postgresBinDir finds the newest installed PostgreSQL server's bin
// directory.
func postgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("testserver: PostgreSQL server not found (no /usr/lib/postgresql/*/bin/postgres): " +
		"install it with `apt-get install postgresql`, or run `make test`, which installs it")
}

// StartPostgres starts a PostgreSQL server in a new temporary data directory
// on a free loopback port and waits until it accepts connections. PostgreSQL
// refuses to run as root, so as root it runs as the "postgres" user.
func StartPostgres(ctx context.Context) (*Server, error) {
	bin, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("testserver: running as root needs the postgres user to start PostgreSQL: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	dir, err := os.MkdirTemp("", "paaskit-pg-")
	if err != nil {
		return nil, fmt.Errorf("testserver: make PostgreSQL data directory: %w", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("testserver: chown %s to postgres: %w", dir, err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("testserver: initdb: %w\n%s", err, out)
	}
	port, err := FreePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port),
		"-k", dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
		"-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGTERM, Setpgid: true}
	cmd.Dir = dir
	s := &Server{
		Addr: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port),
		dir:  dir,
	}
	if err := s.start(ctx, cmd, "PostgreSQL", "database system is ready to accept connections"); err != nil {
		return nil, err
	}
	return s, nil
}

// StartRedis starts a Redis server with persistence off on a free loopback
// port and waits until it answers PING.
func StartRedis(ctx context.Context) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("testserver: redis-server not found: install it with `apt-get install redis-server`, " +
			"or run `make test`, which installs it")
	}
	dir, err := os.MkdirTemp("", "paaskit-redis-")
	if err != nil {
		return nil, fmt.Errorf("testserver: make Redis directory: %w", err)
	}
	port, err := FreePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", dir, "--daemonize", "no", "--protected-mode", "yes")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	cmd.Dir = dir
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir}
	if err := s.start(ctx, cmd, "Redis", "Ready to accept connections"); err != nil {
		return nil, err
	}
	return s, nil
}

// start runs cmd and waits for readyLine in its output. The output after
// that is drained so the server never blocks on a full pipe.
func (s *Server) start(ctx context.Context, cmd *exec.Cmd, what, readyLine string) error {
	s.what, s.ready = what, readyLine
	pr, pw, err := os.Pipe()
	if err != nil {
		os.RemoveAll(s.dir)
		return fmt.Errorf("testserver: pipe for %s: %w", what, err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		os.RemoveAll(s.dir)
		return fmt.Errorf("testserver: start %s: %w", what, err)
	}
	pw.Close()
	s.cmd = cmd
	s.done = make(chan struct{})
	ready := make(chan struct{})
	var tail []string
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(pr)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			if !signalled {
				mu.Lock()
				tail = append(tail, line)
				if len(tail) > 20 {
					tail = tail[1:]
				}
				mu.Unlock()
				if strings.Contains(line, readyLine) {
					signalled = true
					close(ready)
				}
			}
		}
		pr.Close()
	}()
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	select {
	case <-ready:
		return nil
	case <-s.done:
	case <-timeout.C:
	case <-ctx.Done():
	}
	_ = s.Stop()
	mu.Lock()
	defer mu.Unlock()
	return fmt.Errorf("testserver: %s did not become ready; its last output:\n%s", what, strings.Join(tail, "\n"))
}

// StartEtcd starts a single-member etcd (Debian's etcd-server) in a new
// temporary data directory, its client and peer URLs on free loopback
// ports, and waits until it serves clients.
func StartEtcd(ctx context.Context) (*Server, error) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, errors.New("testserver: etcd not found: install it with `apt-get install etcd-server`, " +
			"or run `make test`, which installs it")
	}
	dir, err := os.MkdirTemp("", "paaskit-etcd-")
	if err != nil {
		return nil, fmt.Errorf("testserver: make etcd data directory: %w", err)
	}
	clientPort, err := FreePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	peerPort, err := FreePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	cmd := exec.Command(bin, "--name", "paaskit-test", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "paaskit-test="+peer, "--initial-cluster-state", "new",
		"--unsafe-no-fsync", "--logger", "zap")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	cmd.Dir = dir
	// etcd 3.4 reads ETCD_* variables as flags; the caller's must not leak in.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	s := &Server{Addr: client, dir: dir}
	if err := s.start(ctx, cmd, "etcd", "serving client traffic"); err != nil {
		return nil, err
	}
	return s, nil
}
