package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// In a sandbox's init helper, the main goroutine is locked to the main
// thread from package initialisation on (Go runs init functions there, and
// a lock taken in one holds into main.main), so Init's lock-down is done on
// the thread group leader: the thread the app is forked from and the one
// /proc/PID/status describes. Locking only in Init left the goroutine on
// whatever thread it had been scheduled on; the leader then kept the
// bounding set it started with (CapBnd 000001fffeffffff, seen once in the
// tests). The
// runtime's other threads never fork or exec; setuid (all threads, in Go)
// empties their permitted and effective sets, and the seccomp filter is
// installed with TSYNC, which gives every thread the filter and
// no_new_privs.
func init() {
	if _, ok := os.LookupEnv(initEnv); ok {
		runtime.LockOSThread()
	}
}

// Init runs the sandbox init helper when the process was started as one by
// the runner, and returns at once otherwise. Go cannot run code between
// fork and exec, so the runner starts a sandbox by re-executing its own
// binary (Config.InitPath) in new namespaces with a marker in the
// environment; Init, called first thing in main (or in TestMain), sees the
// marker, assembles the sandbox root, joins the cgroup, sets rlimits, drops
// to the app's user and runs the app. In that case it never returns.
//
//	func main() {
//		runner.Init()
//		...
//	}
func Init() {
	raw, ok := os.LookupEnv(initEnv)
	if !ok {
		markInit()
		return
	}
	// Capability sets, no_new_privs and the parent-death signal are per
	// thread: everything below, the fork of the app included, runs on
	// this one.
	runtime.LockOSThread()
	netnsFd := 3
	if raw == initPoolMarker {
		raw, netnsFd = parked()
	}
	var cfg initConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		initFail(fmt.Errorf("read sandbox config: %w", err))
	}
	os.Exit(runInit(&cfg, netnsFd))
}

// parked is a pooled helper's wait (initpool_linux.go): it returns the
// sandbox's description once the runner sends it, with the app's stdout
// and stderr put in place and the network namespace's descriptor (or -1),
// or exits when the runner closes the pool instead.
func parked() (string, int) {
	raw, fds, err := recvInitConfig(3)
	if errors.Is(err, io.EOF) {
		os.Exit(0)
	}
	if err != nil {
		initFail(fmt.Errorf("receive the sandbox: %w", err))
	}
	_ = unix.Close(3)
	if len(fds) < 2 || len(fds) > 3 {
		initFail(fmt.Errorf("receive the sandbox: %d descriptors, want 2 or 3", len(fds)))
	}
	for k, fd := range fds[:2] {
		if err := unix.Dup3(fd, 1+k, 0); err != nil {
			initFail(fmt.Errorf("receive the sandbox: output: %w", err))
		}
		_ = unix.Close(fd)
	}
	netnsFd := -1
	if len(fds) == 3 {
		netnsFd = fds[2]
	}
	return string(raw), netnsFd
}

func initFail(err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", initArgv0, err)
	os.Exit(127)
}

// runInit builds the sandbox described by cfg and runs the app in it;
// netnsFd is the network namespace to join when cfg.Netns says so.
func runInit(cfg *initConfig, netnsFd int) int {
	if cfg.Netns {
		// The runner's own namespace, made and set up by the runner
		// (loopback, or a veth for egress); the app never holds the
		// capability to change it.
		if netnsFd < 0 {
			initFail(errors.New("join the network namespace: none was passed"))
		}
		if err := unix.Setns(netnsFd, unix.CLONE_NEWNET); err != nil {
			initFail(fmt.Errorf("join the network namespace: %w", err))
		}
		_ = unix.Close(netnsFd)
	} else if netnsFd >= 0 && netnsFd != 3 {
		_ = unix.Close(netnsFd)
	}
	if cfg.NetnsMessage {
		ns, err := recvNetns(3)
		if err != nil {
			initFail(fmt.Errorf("receive the network namespace: %w", err))
		}
		_ = unix.Close(3)
		err = unix.Setns(ns, unix.CLONE_NEWNET)
		_ = unix.Close(ns)
		if err != nil {
			initFail(fmt.Errorf("join the network namespace: %w", err))
		}
	}
	for _, p := range cfg.Cgroups {
		if err := os.WriteFile(p, []byte("0"), 0); err != nil {
			initFail(fmt.Errorf("join cgroup %s: %w", p, err))
		}
	}
	if cfg.Root != "" {
		if err := buildRoot(cfg); err != nil {
			initFail(err)
		}
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			initFail(fmt.Errorf("set hostname %q: %w", cfg.Hostname, err))
		}
	}
	for _, rl := range cfg.Rlimits {
		l := unix.Rlimit{Cur: rl.Value, Max: rl.Value}
		if err := unix.Setrlimit(rl.Resource, &l); err != nil {
			initFail(fmt.Errorf("set rlimit %d to %d: %w", rl.Resource, rl.Value, err))
		}
	}
	path, err := lookPath(cfg.Argv[0], cfg.Env)
	if err != nil {
		initFail(err)
	}
	// From here on the helper is no more than the app: its user, no
	// capability, no_new_privs, the filter. As PID 1 it only forwards
	// signals and reaps, which need none of them.
	if err := lockDown(cfg); err != nil {
		initFail(err)
	}
	if !cfg.Reaper {
		if err := os.Chdir(cfg.Dir); err != nil {
			initFail(fmt.Errorf("chdir %s: %w", cfg.Dir, err))
		}
		err := syscall.Exec(path, cfg.Argv, cfg.Env)
		initFail(fmt.Errorf("exec %s: %w", path, err))
	}
	return reap(cfg, path)
}

// recvNetns reads the one descriptor the runner put on socket sock.
func recvNetns(sock int) (int, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return -1, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return -1, err
	}
	if len(msgs) != 1 {
		return -1, fmt.Errorf("%d control messages, want 1", len(msgs))
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil {
		return -1, err
	}
	if len(fds) != 1 {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
		return -1, fmt.Errorf("%d descriptors, want 1", len(fds))
	}
	return fds[0], nil
}

// reap is PID 1 of the sandbox's PID namespace: it starts the app, passes
// on stop signals to every process of the namespace, reaps orphans, and
// exits with the app's status. When it exits the kernel kills whatever is
// left in the namespace, so nothing outlives the instance.
func reap(cfg *initConfig, path string) int {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGCHLD, syscall.SIGWINCH)
	attr := &syscall.ProcAttr{
		Dir:   cfg.Dir,
		Env:   cfg.Env,
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setpgid: !cfg.Command},
	}
	pid, err := syscall.ForkExec(path, cfg.Argv, attr)
	if err != nil {
		initFail(fmt.Errorf("start %s: %w", path, err))
	}
	for sig := range sigs {
		s := sig.(syscall.Signal)
		switch s {
		case syscall.SIGCHLD:
			for {
				var ws syscall.WaitStatus
				p, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if err != nil || p <= 0 {
					break
				}
				if p == pid {
					if ws.Signaled() {
						return 128 + int(ws.Signal())
					}
					return ws.ExitStatus()
				}
			}
		case syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT:
			// Every process of the namespace but this one.
			_ = syscall.Kill(-1, s)
		default:
			_ = syscall.Kill(pid, s)
		}
	}
	return 1
}

// lockDown drops the helper to what the app may have, in an order where
// each step still has the privilege it needs: the bounding and ambient
// sets while root, then the user (which empties the permitted and
// effective sets), then the inheritable set, the parent-death signal that
// a change of credentials clears, no_new_privs and the filter.
func lockDown(cfg *initConfig) error {
	if cfg.DropCaps {
		for c := 0; c <= unix.CAP_LAST_CAP+8; c++ {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
				if errors.Is(err, unix.EINVAL) && c > unix.CAP_LAST_CAP/2 {
					break // past the kernel's last capability
				}
				return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
			}
		}
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("clear ambient capabilities: %w", err)
		}
	}
	if cfg.SetUser {
		if err := dropUser(cfg.UID, cfg.GID); err != nil {
			return err
		}
	}
	if cfg.DropCaps {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			return fmt.Errorf("empty capability sets: %w", err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set parent-death signal: %w", err)
	}
	if cfg.NoNewPrivs || cfg.Seccomp {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	if cfg.Seccomp {
		if err := installSeccomp(); err != nil {
			return err
		}
	}
	return nil
}

func dropUser(uid, gid int) error {
	if err := syscall.Setgroups([]int{}); err != nil {
		return fmt.Errorf("drop supplementary groups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("set GID %d: %w", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("set UID %d: %w", uid, err)
	}
	return nil
}

// lookPath resolves name against the PATH of the app's environment.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	pathEnv := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q: %w in PATH %s", name, exec.ErrNotFound, pathEnv)
}

// buildRoot assembles the sandbox root on cfg.Root inside the new mount
// namespace and pivots into it.
func buildRoot(cfg *initConfig) error {
	// Nothing we mount may leak back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	root := cfg.Root
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755,size=4m"); err != nil {
		return fmt.Errorf("mount sandbox root on %s: %w", root, err)
	}
	in := func(p string) string { return filepath.Join(root, p) }
	for _, d := range cfg.SystemDirs {
		fi, err := os.Lstat(d)
		if err != nil {
			continue // a host without /lib64, say
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(d)
			if err != nil {
				return fmt.Errorf("read link %s: %w", d, err)
			}
			if err := os.MkdirAll(filepath.Dir(in(d)), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(target, in(d)); err != nil {
				return fmt.Errorf("link %s: %w", d, err)
			}
			continue
		}
		if err := bindRO(d, in(d), true); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(in("/etc"), 0o755); err != nil {
		return err
	}
	for _, f := range cfg.EtcFiles {
		fi, err := os.Stat(f)
		if err != nil {
			continue
		}
		if err := bindRO(f, in(f), fi.IsDir()); err != nil {
			return err
		}
	}
	user := cfg.User
	if user == "" {
		user = "app"
	}
	home := "/data"
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/usr/sbin/nologin\n%s:x:%d:%d:%s:%s:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", user, cfg.UID, cfg.GID, user, home)
	group := fmt.Sprintf("root:x:0:\n%s:x:%d:\nnogroup:x:65534:\n", user, cfg.GID)
	for name, body := range map[string]string{"passwd": passwd, "group": group, "hostname": cfg.Hostname + "\n"} {
		if err := os.WriteFile(in("/etc/"+name), []byte(body), 0o644); err != nil {
			return fmt.Errorf("write sandbox /etc/%s: %w", name, err)
		}
	}
	// The private /tmp comes before the mounts, so that one beneath /tmp
	// (a command's host directory there, at the same path) is not hidden
	// by it.
	tmpSize := cfg.TmpSize
	if tmpSize <= 0 {
		tmpSize = 64 << 20
	}
	if err := os.MkdirAll(in("/tmp"), 0o1777); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", in("/tmp"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("mode=1777,size=%d", tmpSize)); err != nil {
		return fmt.Errorf("mount private /tmp: %w", err)
	}
	for _, m := range cfg.Mounts {
		if m.Writable {
			if err := os.MkdirAll(in(m.Path), 0o755); err != nil {
				return err
			}
			if err := unix.Mount(m.Host, in(m.Path), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("bind %s at %s: %w", m.Host, m.Path, err)
			}
			if err := unix.Mount("", in(m.Path), "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
				return fmt.Errorf("remount %s nosuid: %w", m.Path, err)
			}
			continue
		}
		if err := bindRO(m.Host, in(m.Path), true); err != nil {
			return err
		}
	}
	if err := buildDev(in("/dev")); err != nil {
		return err
	}
	if cfg.Proc {
		if err := os.MkdirAll(in("/proc"), 0o555); err != nil {
			return err
		}
		if err := unix.Mount("proc", in("/proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount /proc: %w", err)
		}
	}
	if err := pivot(root); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("make sandbox root read-only: %w", err)
	}
	return nil
}

func bindRO(src, dst string, dir bool) error {
	if dir {
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		f.Close()
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	if err := unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("make %s read-only: %w", src, err)
	}
	return nil
}

func buildDev(dev string) error {
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=64k"); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	for _, n := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		src := "/dev/" + n
		if _, err := os.Stat(src); err != nil {
			continue
		}
		dst := filepath.Join(dev, n)
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o666)
		if err != nil {
			return err
		}
		f.Close()
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Join(dev, "shm"), 0o1777); err != nil {
		return err
	}
	return bindTerminal(dev)
}

// bindTerminal gives a command started in a terminal (a pty session) that
// terminal at its name under /dev/pts, where tty(1) and ttyname(3) look
// for it. Only that one device is bound, the file the init's stdin
// already is: never the host's devpts with other sessions' terminals. A
// stdin that is not a /dev/pts terminal (an app instance's) binds nothing.
func bindTerminal(dev string) error {
	if _, err := unix.IoctlGetTermios(0, unix.TCGETS); err != nil {
		return nil
	}
	name, err := os.Readlink("/proc/self/fd/0")
	if err != nil {
		return nil
	}
	n, ok := strings.CutPrefix(name, "/dev/pts/")
	if !ok || n == "" || strings.Trim(n, "0123456789") != "" {
		return nil
	}
	if err := os.Mkdir(filepath.Join(dev, "pts"), 0o755); err != nil {
		return err
	}
	dst := filepath.Join(dev, "pts", n)
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	// The name, in this mount namespace's copy of the host's devpts (the
	// descriptor's own mount is in the runner's namespace, which a bind
	// cannot take from); checked to be stdin's device after the bind.
	if err := unix.Mount(name, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind the terminal %s: %w", name, err)
	}
	var in, bound unix.Stat_t
	if err := unix.Fstat(0, &in); err != nil {
		return fmt.Errorf("stat the terminal: %w", err)
	}
	if err := unix.Stat(dst, &bound); err != nil || bound.Rdev != in.Rdev || bound.Ino != in.Ino || bound.Dev != in.Dev {
		_ = unix.Unmount(dst, unix.MNT_DETACH)
		return fmt.Errorf("bind the terminal %s: the bound device is not stdin's (%v)", name, err)
	}
	return nil
}

func pivot(root string) error {
	old := filepath.Join(root, ".oldroot")
	if err := os.Mkdir(old, 0o700); err != nil {
		return err
	}
	if err := unix.PivotRoot(root, old); err != nil {
		// A root that cannot be pivoted (an initramfs) still gets a chroot.
		if !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("pivot_root to %s: %w", root, err)
		}
		if err := unix.Chroot(root); err != nil {
			return fmt.Errorf("chroot to %s: %w", root, err)
		}
		return os.Chdir("/")
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount("/.oldroot", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the host root: %w", err)
	}
	return os.Remove("/.oldroot")
}
