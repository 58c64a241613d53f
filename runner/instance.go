package runner

import (
	"github.com/paaskit/paaskit/internal/connproxy"
	"github.com/paaskit/paaskit/internal/evproxy"

	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Paths inside a sandbox.
const (
	sandboxApp    = "/app"
	sandboxData   = "/data"
	sandboxSock   = "/run/paaskit"
	socketName    = "app.sock"
	maxSocketPath = 107
)

// instance is one run of an app. Its goroutine (run) owns the process; the
// fields under "guarded by app.mu" are shared with the app.
type instance struct {
	app       *app
	id        int64
	spec      Spec
	notBefore time.Time
	created   time.Time
	tail      *tail

	ready  chan struct{} // closed when ready or failed
	exited chan struct{} // closed when the process has been waited for
	// finished is closed when run has returned: the instance is gone and
	// cleaned up.
	finished chan struct{}
	stopCh   chan struct{} // closed by stop
	// stopOnce guards stopCh and stopReason.
	stopOnce   sync.Once
	stopReason string

	// guarded by app.mu
	isReady bool
	failed  *StartError
	waiters int
	pid     int

	active     atomic.Int64
	lastActive atomic.Int64 // unix nanoseconds

	// set by run before ready; read-only afterwards
	cmd      *exec.Cmd
	cg       atomic.Pointer[cgroup]
	sockHost string
	tcpAddr  string
	// sockDirFd is the instance's socket directory (O_PATH) and sockFd
	// the app's socket pinned in it once it is bound (see pinSocket);
	// the front connects through sockVia, /proc/self/fd/<sockFd>, and
	// checks that the listener runs as peerUID.
	sockDirFd int
	sockFd    int
	sockVia   string
	peerUID   int
	// netns is the instance's network namespace (-1 without), egress
	// its place on the bridge (nil for policy none).
	netns     int
	egress    *egressLink
	fpool     *connproxy.Pool // the goroutine forwarder's connections to the instance (Serve's and ServeHTTP's)
	target    evproxy.Target  // the same socket for the event loops
	procState *os.ProcessState
	capture   sync.WaitGroup
	readEnds  []*os.File
}

func (i *instance) cgroup() *cgroup { return i.cg.Load() }

// stop asks the instance to end: it drains (waits for in-flight requests,
// up to the grace period), sends SIGTERM to its process group, and SIGKILL
// after the grace period. It does not wait; i.exited closes when done.
func (i *instance) stop(reason string) {
	i.stopOnce.Do(func() {
		i.stopReason = reason
		close(i.stopCh)
	})
}

func (i *instance) stopped() bool {
	select {
	case <-i.stopCh:
		return true
	default:
		return false
	}
}

// run is the instance's goroutine: start, wait for readiness, serve until
// exit or stop, clean up.
func (i *instance) run(ctx context.Context) {
	a := i.app
	r := a.r
	defer r.wg.Done()
	defer close(i.finished)
	if d := i.notBefore.Sub(r.cfg.Clock.Now()); d > 0 {
		t := r.cfg.Clock.NewTimer(d)
		select {
		case <-t.C():
		case <-i.stopCh:
			t.Stop()
			a.startFailed(i, &StartError{App: a.name, Instance: i.id, Reason: "stopped (" + i.stopReason + ") before it started", Err: errStopped}, true)
			return
		case <-ctx.Done():
			t.Stop()
			a.startFailed(i, &StartError{App: a.name, Instance: i.id, Reason: "runner stopping", Err: ErrNotRunning}, true)
			return
		}
	}
	spawned := r.cfg.Clock.Now()
	r.starting.Add(1)
	if err := i.spawn(); err != nil {
		r.starting.Add(-1)
		r.log.Error("runner: cannot start app", "app", a.name, "instance", i.id, "err", err)
		a.startFailed(i, &StartError{App: a.name, Instance: i.id, Reason: "could not launch", Err: err}, false)
		i.cleanup()
		return
	}
	a.mu.Lock()
	i.pid = i.cmd.Process.Pid
	a.mu.Unlock()
	serr := i.waitReady(ctx)
	r.starting.Add(-1)
	if serr != nil {
		asked := i.stopped() || ctx.Err() != nil
		i.terminate(0)
		i.finishCapture()
		serr.Stderr = i.tail.String()
		if !asked {
			r.log.Error("runner: app failed to start", "app", a.name, "instance", i.id, "pid", i.pid, "reason", serr.Reason, "stderr_tail", serr.Stderr)
		}
		info := i.exitInfo("start failed")
		i.cleanup()
		a.mu.Lock()
		a.account(info)
		a.mu.Unlock()
		a.startFailed(i, serr, asked)
		return
	}
	took := r.cfg.Clock.Now().Sub(spawned)
	a.startedOK(i, took)
	r.log.Info("runner: instance ready", "app", a.name, "instance", i.id, "pid", i.cmd.Process.Pid, "start_time", took)
	var reason string
	select {
	case <-i.exited:
	case <-i.stopCh:
		reason = i.stopReason
		i.drain()
		i.terminate(r.cfg.StopGrace)
	case <-ctx.Done():
		reason = "shutdown"
		i.terminate(r.cfg.StopGrace)
	}
	i.finishCapture()
	if reason == "" {
		reason = "crashed"
	}
	info := i.exitInfo(reason)
	i.cleanup()
	if info.Reason == "crashed" || info.Reason == "oom" {
		r.log.Error("runner: instance ended unexpectedly", "app", a.name, "instance", i.id, "reason", info.Reason,
			"status", info.Status, "stderr_tail", i.tail.String())
	} else {
		r.log.Info("runner: instance stopped", "app", a.name, "instance", i.id, "reason", info.Reason, "status", info.Status)
	}
	a.exitedAfterReady(i, info)
}

// spawn prepares the directories and cgroup and starts the process.
func (i *instance) spawn() error {
	a := i.app
	r := a.r
	s := i.spec
	uid, gid, err := r.appUser(a)
	if err != nil {
		return err
	}
	dataDir, err := r.dataDir(s, uid, gid)
	if err != nil {
		return err
	}
	sockDir := filepath.Join(r.cfg.StateDir, "run", strconv.FormatInt(i.id, 10))
	_ = os.RemoveAll(sockDir)
	if err := os.Mkdir(sockDir, 0o700); err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	if r.iso.User {
		if err := os.Chown(sockDir, uid, gid); err != nil {
			return fmt.Errorf("chown socket directory: %w", err)
		}
	}
	i.peerUID = uid
	if i.sockDirFd, err = openSockDir(sockDir); err != nil {
		return err
	}
	env := baseEnv(s, a.name, i.id)
	if r.net != nil {
		if i.netns, err = r.net.take(); err != nil {
			return err
		}
		if s.Network.egress() {
			dests, err := resolveDestinations(context.Background(), s.Network.Allow)
			if err != nil {
				return err
			}
			if i.egress, err = r.net.attach(i.netns, strconv.FormatInt(i.id, 36), dests, s.Network.Policy == PolicyAllowOnly); err != nil {
				return fmt.Errorf("egress network: %w", err)
			}
		}
	}
	if s.Listen == "tcp" {
		// In its own namespace the port is the app's alone: no search
		// for a free one, no race with other processes of the host.
		port := appPort
		if i.netns < 0 {
			if port, err = freePort(); err != nil {
				return err
			}
		}
		i.tcpAddr = "127.0.0.1:" + strconv.Itoa(port)
		env = append(env, "PORT="+strconv.Itoa(port))
	} else {
		i.sockHost = filepath.Join(sockDir, socketName)
		if len(i.sockHost) > maxSocketPath {
			return fmt.Errorf("socket path %s is longer than %d bytes: use a shorter StateDir", i.sockHost, maxSocketPath)
		}
		inside := i.sockHost
		if r.iso.SandboxRoot {
			inside = sandboxSock + "/" + socketName
		}
		env = append(env, "PAASKIT_SOCKET="+inside)
	}
	var cg *cgroup
	if r.cg != nil {
		cg, err = r.cg.create(a.name+"-"+strconv.FormatInt(i.id, 10), s.Limits.withDefaults(r.cfg.DefaultLimits))
		if err != nil {
			return err
		}
		i.cg.Store(cg)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return fmt.Errorf("stderr pipe: %w", err)
	}
	cmd, err := r.startInstance(launch{
		spec: s, uid: uid, gid: gid, dataDir: dataDir, sockDir: sockDir,
		cg: cg, argv: s.Command, env: env, reaperPgid: true, netns: i.netns,
	}, outW, errW)
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return err
	}
	i.cmd = cmd
	i.readEnds = []*os.File{outR, errR}
	tmpl := Line{App: a.name, Instance: i.id}
	for k, f := range i.readEnds {
		t := tmpl
		var tl *tail
		t.Stream = Stdout
		if k == 1 {
			t.Stream, tl = Stderr, i.tail
		}
		i.capture.Add(1)
		go func(f *os.File) {
			defer i.capture.Done()
			capture(f, r.cfg.MaxLineBytes, t, r.sink, tl, func(err error) {
				r.log.Error("runner: output sink failed; dropping lines", "app", a.name, "instance", i.id, "err", err)
			})
		}(f)
	}
	i.fpool = connproxy.NewPool(connproxy.PoolConfig{Dial: i.dial, MaxIdle: maxIdlePerInstance, BodyReadTimeout: max(r.cfg.ResponseTimeout, 0)})
	if i.tcpAddr != "" {
		i.target = loopTarget(i.tcpAddr, "", "", 0)
	}
	go func() {
		_ = cmd.Wait()
		i.procState = cmd.ProcessState
		close(i.exited)
	}()
	return nil
}

// dial connects to the instance: a TCP app on its port, a unix-socket app
// through its pinned socket (never through the path, which the app
// controls), checking the listener's UID on every new connection.
func (i *instance) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	if i.tcpAddr != "" {
		if i.netns >= 0 {
			return i.app.r.net.dialTCP(ctx, i.netns, i.tcpAddr)
		}
		return d.DialContext(ctx, "tcp", i.tcpAddr)
	}
	if i.sockVia == "" {
		return nil, fmt.Errorf("app %q instance %d: its socket is not bound yet", i.app.name, i.id)
	}
	c, err := d.DialContext(ctx, "unix", i.sockVia)
	if err != nil {
		return nil, err
	}
	if err := checkPeer(c, i.peerUID); err != nil {
		c.Close()
		i.app.r.log.Error("runner: refused a connection to an app socket", "app", i.app.name, "instance", i.id, "err", err)
		return nil, err
	}
	return c, nil
}

// pin pins the app's socket once it is there; it reports whether it is.
// An untrusted socket is an error: the start fails at once.
func (i *instance) pin() (bool, error) {
	if i.tcpAddr != "" || i.sockFd >= 0 {
		return true, nil
	}
	fd, err := pinSocket(i.sockDirFd, socketName, i.peerUID)
	if err != nil || fd < 0 {
		return false, err
	}
	i.sockFd, i.sockVia = fd, pinnedPath(fd, i.sockHost)
	i.target = loopTarget(i.tcpAddr, i.sockHost, i.sockVia, i.peerUID)
	return true, nil
}

// waitReady polls the socket until it accepts, the process exits, the
// start timeout passes or the instance is stopped.
func (i *instance) waitReady(ctx context.Context) *StartError {
	a := i.app
	timeout := time.Duration(i.spec.StartTimeout)
	if timeout == 0 {
		timeout = a.r.cfg.DefaultStartTimeout
	}
	where := sandboxSock + "/" + socketName
	if !a.r.iso.SandboxRoot {
		where = i.sockHost
	}
	if i.tcpAddr != "" {
		where = i.tcpAddr
	}
	// The start timeout is on the runner's Clock; the poll of the
	// socket is real work, so on real time.
	deadline := a.r.cfg.Clock.NewTimer(timeout)
	defer deadline.Stop()
	wait := 100 * time.Microsecond
	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		select {
		case <-i.exited:
			return &StartError{App: a.name, Instance: i.id, Reason: fmt.Sprintf("exited with %s before binding %s", describeState(i.procState), where)}
		case <-i.stopCh:
			return &StartError{App: a.name, Instance: i.id, Reason: "stopped (" + i.stopReason + ") while starting", Err: errStopped}
		case <-ctx.Done():
			return &StartError{App: a.name, Instance: i.id, Reason: "runner stopping", Err: ErrNotRunning}
		case <-deadline.C():
			return &StartError{App: a.name, Instance: i.id, Reason: fmt.Sprintf("did not bind %s within %v", where, timeout)}
		case <-poll.C:
		}
		ok, err := i.pin()
		if err != nil {
			a.r.log.Error("runner: refusing the app's socket", "app", a.name, "instance", i.id, "err", err)
			return &StartError{App: a.name, Instance: i.id, Reason: "its socket is not to be trusted", Err: err}
		}
		if ok {
			c, err := i.dial(ctx)
			if err == nil {
				// Kept for the first request: an app that serves one
				// connection at a time (a sync worker) would otherwise
				// wait on it while the front dials anew.
				i.fpool.Put(c)
				return nil
			}
			if errors.Is(err, ErrUntrustedSocket) {
				return &StartError{App: a.name, Instance: i.id, Reason: "its socket is not to be trusted", Err: err}
			}
		}
		poll.Reset(wait)
		if wait < 5*time.Millisecond {
			wait += wait / 2
		}
	}
}

func describeState(ps *os.ProcessState) string {
	if ps == nil {
		return "unknown status"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	st := ps.ExitCode()
	if st > 128 && st < 160 {
		return fmt.Sprintf("status %d (signal %v)", st, syscall.Signal(st-128))
	}
	return fmt.Sprintf("status %d", st)
}

// drain waits, up to the grace period, for in-flight requests to finish.
func (i *instance) drain() {
	clock := i.app.r.cfg.Clock
	deadline := clock.Now().Add(i.app.r.cfg.StopGrace)
	for i.active.Load() > 0 && clock.Now().Before(deadline) {
		select {
		case <-i.exited:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// terminate sends SIGTERM to the process group and SIGKILL after grace
// (at once when grace is 0), then kills whatever is left in the cgroup, and
// waits for the process.
func (i *instance) terminate(grace time.Duration) {
	pid := i.cmd.Process.Pid
	if grace > 0 {
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		t := i.app.r.cfg.Clock.NewTimer(grace)
		select {
		case <-i.exited:
		case <-t.C():
			i.app.r.log.Warn("runner: instance ignored SIGTERM; killing it", "app", i.app.name, "instance", i.id, "grace", grace)
		}
		t.Stop()
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-i.exited
	if cg := i.cgroup(); cg != nil {
		if !cg.kill(5 * time.Second) {
			i.app.r.log.Error("runner: processes left in cgroup after kill", "app", i.app.name, "instance", i.id)
		}
	}
}

// finishCapture waits for the output readers to reach EOF, and closes the
// pipes if a stray process outside our reach still holds them.
func (i *instance) finishCapture() {
	done := make(chan struct{})
	go func() {
		i.capture.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		for _, f := range i.readEnds {
			_ = f.Close()
		}
		<-done
	}
	for _, f := range i.readEnds {
		_ = f.Close()
	}
}

// exitInfo reads the exit status and the cgroup's final figures.
func (i *instance) exitInfo(reason string) ExitInfo {
	info := ExitInfo{Instance: i.id, Time: i.app.r.cfg.Clock.Now(), Reason: reason}
	if ps := i.procState; ps != nil {
		info.Status = ps.ExitCode()
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			info.Status = 128 + int(ws.Signal())
		}
	}
	if cg := i.cgroup(); cg != nil {
		s := cg.stats()
		info.CPU, info.PeakMemory, info.ForkRefusals = s.CPU, s.PeakMemory, s.ForkRefusals
		info.OOM = s.OOMKills > 0
		if info.OOM && (reason == "crashed" || reason == "start failed") {
			info.Reason = "oom"
		}
	}
	return info
}

// cleanup removes the cgroup and socket directory and closes pooled
// connections.
func (i *instance) cleanup() {
	if i.fpool != nil {
		i.fpool.Close()
	}
	if cg := i.cgroup(); cg != nil {
		if i.cmd == nil || i.cmd.Process == nil {
			cg.kill(time.Second)
		}
		if err := cg.remove(); err != nil {
			i.app.r.log.Error("runner: remove cgroup", "app", i.app.name, "instance", i.id, "err", err)
		}
	}
	if i.egress != nil {
		i.app.r.net.detach(i.egress)
		i.egress = nil
	}
	for _, fd := range []*int{&i.sockFd, &i.sockDirFd, &i.netns} {
		if *fd >= 0 {
			_ = syscall.Close(*fd)
			*fd = -1
		}
	}
	_ = os.RemoveAll(filepath.Join(i.app.r.cfg.StateDir, "run", strconv.FormatInt(i.id, 10)))
}

// appUser returns the app's UID and GID, allocating them on first use.
func (r *Runner) appUser(a *app) (int, int, error) {
	if !r.iso.User {
		return os.Getuid(), os.Getgid(), nil
	}
	uid, err := r.uids.get(a.name)
	if err != nil {
		return 0, 0, err
	}
	a.mu.Lock()
	a.uid = uid
	a.mu.Unlock()
	return uid, uid, nil
}

// dataDir creates the app's data directory, owned by its user.
func (r *Runner) dataDir(s Spec, uid, gid int) (string, error) {
	d := s.DataDir
	if d == "" {
		d = filepath.Join(r.cfg.DataRoot, s.Name)
	}
	if err := r.prepareDataDir(d, uid, gid, r.iso.User); err != nil {
		return "", err
	}
	return d, nil
}

func baseEnv(s Spec, name string, id int64) []string {
	vars := map[string]string{
		"PATH":   "/usr/local/bin:/usr/bin:/bin",
		"LANG":   "C.UTF-8",
		"TMPDIR": "/tmp",
		"USER":   name,
	}
	for k, v := range s.Env {
		if !strings.HasPrefix(k, "PAASKIT_") {
			vars[k] = v
		}
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	env := make([]string, 0, len(keys)+2)
	for _, k := range keys {
		env = append(env, k+"="+vars[k])
	}
	return append(env, "PAASKIT_APP="+name, "PAASKIT_INSTANCE="+strconv.FormatInt(id, 10))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
