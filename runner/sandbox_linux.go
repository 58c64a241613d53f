package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// initCalled is set by Init when it returns, i.e. when this process is not
// a sandbox init helper. New uses it to catch a main that forgot Init.
var initCalled atomic.Bool

func markInit() { initCalled.Store(true) }

// detectIsolation works out which isolation features this process can use.
func (r *Runner) detectIsolation() error {
	iso := r.cfg.Isolation
	st := IsolationStatus{}
	miss := func(f string, args ...any) { st.Missing = append(st.Missing, fmt.Sprintf(f, args...)) }
	if iso.Off {
		miss("all isolation: switched off by Config.Isolation.Off")
		r.iso = st
		return nil
	}
	root := os.Geteuid() == 0
	switch {
	case iso.NoUser:
		miss("user: switched off by Config")
	case !root:
		miss("user: the runner is not root (euid %d), so apps run as its user", os.Geteuid())
	default:
		st.User = true
	}
	switch {
	case iso.NoNamespaces:
		miss("namespaces: switched off by Config")
	case !root:
		miss("namespaces: the runner is not root (euid %d)", os.Geteuid())
	default:
		st.Namespaces = true
		for _, ns := range []string{"mnt", "pid", "uts", "ipc"} {
			if _, err := os.Stat("/proc/self/ns/" + ns); err != nil {
				st.Namespaces = false
				miss("namespaces: the kernel has no %s namespace (%v)", ns, err)
			}
		}
	}
	switch {
	case iso.NoSandboxRoot:
		miss("sandbox root: switched off by Config")
	case !st.Namespaces:
		miss("sandbox root: needs the mount namespace")
	default:
		st.SandboxRoot = true
	}
	switch {
	case iso.NoCgroup:
		miss("cgroup: switched off by Config")
	case !root:
		miss("cgroup: the runner is not root (euid %d)", os.Geteuid())
	default:
		m, err := detectCgroups(r.cfg.CgroupRoot)
		if err == nil {
			err = m.setup()
		}
		if err != nil {
			miss("cgroup: %v", err)
			break
		}
		st.Cgroup, st.CgroupVersion = true, m.version
		for _, c := range m.missing {
			miss("cgroup: %s is not available", c)
		}
		r.cg = m
	}
	if iso.NoRlimits {
		miss("rlimits: switched off by Config")
	} else {
		st.Rlimits = true
	}
	switch {
	case iso.NoCapDrop:
		miss("capabilities: switched off by Config (apps keep the init helper's capabilities, no no_new_privs)")
	default:
		st.Capabilities = true
	}
	switch {
	case iso.NoSeccomp:
		miss("seccomp: switched off by Config")
	default:
		if err := seccompAvailable(); err != nil {
			miss("seccomp: %v", err)
		} else {
			st.Seccomp = true
		}
	}
	switch {
	case iso.NoNetwork:
		miss("network: switched off by Config (apps share the host's network: they can bind its ports and reach its loopback services)")
	case !st.Namespaces:
		miss("network: needs the namespaces (apps share the host's network)")
	case !hasCapability(unix.CAP_NET_ADMIN):
		miss("network: the runner lacks CAP_NET_ADMIN, so apps share the host's network (they can bind its ports and reach its loopback services)")
	default:
		m, err := newNetManager(r.cfg.CgroupRoot, r.cfg.EgressSubnet, r.cfg.NetnsPool, r.cfg.StateDir, r.log)
		if err != nil {
			miss("network: %v (apps share the host's network)", err)
			break
		}
		m.busy = func() bool { return r.starting.Load() > 0 }
		r.net, st.Network = m, true
	}
	switch {
	case r.net == nil:
		miss("egress: needs the network namespaces")
	case r.net.egressErr != nil:
		miss("egress: %v: specs with network policy egress are refused", r.net.egressErr)
	default:
		st.Egress = true
	}
	r.iso = st
	if err := r.findInitHelper(); err != nil {
		if r.cg != nil {
			r.cg.removeRoot()
			r.cg = nil
		}
		if r.net != nil {
			r.net.close()
			r.net = nil
		}
		return err
	}
	return nil
}

// findInitHelper sets r.initPath when any isolation needs the helper.
func (r *Runner) findInitHelper() error {
	st := r.iso
	if st.User || st.Namespaces || st.Cgroup || st.Rlimits || st.Capabilities || st.Seccomp {
		p := r.cfg.InitPath
		if p == "" {
			// This very binary, even if the file was replaced since.
			p = "/proc/self/exe"
			if !initCalled.Load() {
				return fmt.Errorf("runner: isolation needs the init helper, but this program did not call runner.Init() first in main (or TestMain); call it, set Config.InitPath, or set Config.Isolation.Off")
			}
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("runner: init helper %s: %w", p, err)
		}
		r.initPath = p
	}
	return nil
}

// launch is what buildCmd needs to start a program in an app's sandbox.
type launch struct {
	spec       Spec
	uid, gid   int
	dataDir    string
	sockDir    string // "" for one-off commands
	cg         *cgroup
	argv       []string
	env        []string
	reaperPgid bool // an instance: own process group; a command: none (a pty's session)
	netns      int  // a network namespace to join (the caller keeps it), or -1
	// netnsMsg (a command's, instead of netns) is a socket with the
	// namespace in a message (netnsMessage); the Cmd takes it.
	netnsMsg *os.File
	mounts   []sandboxMount // a command's extra mounts
}

// sandboxCloneflags are the namespaces of every sandbox but the network's,
// which the init helper joins: one the runner made.
const sandboxCloneflags = syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC

// instanceSysProcAttr is how buildCmd starts an instance's init helper, and
// so how the pool starts its parked ones.
func (r *Runner) instanceSysProcAttr() *syscall.SysProcAttr {
	sys := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if r.iso.Namespaces {
		sys.Cloneflags = sandboxCloneflags
	}
	return sys
}

// startInstance starts an instance's process, its output going to stdout
// and stderr: a parked init helper from the pool when one is ready (see
// initpool_linux.go), else a new process.
func (r *Runner) startInstance(l launch, stdout, stderr *os.File) (*exec.Cmd, error) {
	cmd, err := r.buildCmd(l)
	if err != nil {
		return nil, err
	}
	if r.initPool != nil && cmd.Path == r.initPath && l.reaperPgid {
		if h := r.initPool.take(); h != nil {
			raw := strings.TrimPrefix(cmd.Env[0], initEnv+"=")
			err := h.give([]byte(raw), append([]*os.File{stdout, stderr}, cmd.ExtraFiles...))
			for _, f := range cmd.ExtraFiles {
				f.Close()
			}
			if err == nil {
				return h.cmd, nil
			}
			r.log.Warn("runner: a parked init helper did not take its sandbox; starting a new one", "app", l.spec.Name, "err", err)
			h.discard()
			if cmd, err = r.buildCmd(l); err != nil {
				return nil, err
			}
		}
	}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err = cmd.Start()
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	return cmd, nil
}

// hostPath maps a sandbox path to the host when there is no sandbox root.
func hostPath(p string, l *launch) string {
	for _, m := range []struct{ in, host string }{
		{sandboxApp, l.spec.Image}, {sandboxData, l.dataDir}, {sandboxSock, l.sockDir},
	} {
		if m.host == "" {
			continue
		}
		if p == m.in {
			return m.host
		}
		if rest, ok := strings.CutPrefix(p, m.in+"/"); ok {
			return filepath.Join(m.host, rest)
		}
	}
	return p
}

// buildCmd returns the command that runs l.argv in the app's sandbox: the
// init helper with the sandbox's description, or, with isolation off, the
// program itself.
func (r *Runner) buildCmd(l launch) (*exec.Cmd, error) {
	workDir := l.spec.WorkDir
	if workDir == "" {
		workDir = sandboxApp
	}
	argv := append([]string(nil), l.argv...)
	env := append([]string(nil), l.env...)
	data := sandboxData
	if !r.iso.SandboxRoot {
		workDir = hostPath(workDir, &l)
		if strings.HasPrefix(argv[0], "/") {
			argv[0] = hostPath(argv[0], &l)
		}
		data = l.dataDir
	}
	if !hasEnv(env, "HOME") {
		home := data
		if l.dataDir == "" {
			home = "/tmp"
		}
		env = append(env, "HOME="+home)
	}
	if l.dataDir != "" {
		env = append(env, "PAASKIT_DATA="+data)
	}
	sys := &syscall.SysProcAttr{Setpgid: l.reaperPgid, Pdeathsig: syscall.SIGKILL}
	if r.cfg.Isolation.Off || r.initPath == "" {
		path, err := lookPath(argv[0], env)
		if err != nil {
			return nil, err
		}
		cmd := &exec.Cmd{Path: path, Args: argv, Env: env, Dir: workDir, SysProcAttr: sys}
		return cmd, nil
	}
	ic := initConfig{
		Argv:       argv,
		Env:        env,
		Dir:        workDir,
		SetUser:    r.iso.User,
		UID:        l.uid,
		GID:        l.gid,
		User:       l.spec.Name,
		Command:    !l.reaperPgid,
		DropCaps:   r.iso.Capabilities,
		NoNewPrivs: r.iso.Capabilities,
		Seccomp:    r.iso.Seccomp,
	}
	if l.cg != nil {
		ic.Cgroups = l.cg.procsFiles()
	}
	if r.iso.Rlimits {
		lim := l.spec.Limits.withDefaults(r.cfg.DefaultLimits)
		ic.Rlimits = []rlimit{
			{Resource: unix.RLIMIT_NOFILE, Value: uint64(lim.OpenFiles)},
			{Resource: unix.RLIMIT_CORE, Value: 0},
		}
		if r.iso.User {
			// RLIMIT_NPROC counts the UID's tasks; it only means something
			// when the app has a UID of its own.
			// The init helper now runs as the app's UID too, and its
			// runtime's threads count. With a cgroup the pids limit
			// is the one that refuses (and counts refusals); the
			// rlimit stays a backstop just above it.
			nproc := uint64(lim.Processes)
			if l.cg != nil {
				nproc += 32
			}
			ic.Rlimits = append(ic.Rlimits, rlimit{Resource: unix.RLIMIT_NPROC, Value: nproc})
		}
	}
	if r.iso.Namespaces {
		sys.Cloneflags = sandboxCloneflags
		ic.Reaper = true
		ic.Hostname = l.spec.Name
	}
	if r.iso.SandboxRoot {
		ic.Root = filepath.Join(r.cfg.StateDir, "sandbox")
		ic.SystemDirs = r.cfg.SystemDirs
		ic.EtcFiles = r.cfg.EtcFiles
		ic.TmpSize = r.cfg.TmpSize
		ic.Proc = true
		ic.Mounts = []sandboxMount{
			{Host: l.spec.Image, Path: sandboxApp},
		}
		if l.dataDir != "" {
			ic.Mounts = append(ic.Mounts, sandboxMount{Host: l.dataDir, Path: sandboxData, Writable: true})
		}
		if l.sockDir != "" {
			ic.Mounts = append(ic.Mounts, sandboxMount{Host: l.sockDir, Path: sandboxSock, Writable: true})
		}
		ic.Mounts = append(ic.Mounts, l.mounts...)
	}
	var extra []*os.File
	if l.netns >= 0 {
		dup, err := unix.FcntlInt(uintptr(l.netns), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("pass the network namespace: %w", err)
		}
		ic.Netns = true
		extra = append(extra, os.NewFile(uintptr(dup), "netns"))
	} else if l.netnsMsg != nil {
		ic.NetnsMessage = true
		extra = append(extra, l.netnsMsg)
	}
	raw, err := json.Marshal(ic)
	if err != nil {
		return nil, fmt.Errorf("encode sandbox config: %w", err)
	}
	cmd := &exec.Cmd{
		Path:        r.initPath,
		Args:        []string{initArgv0},
		Env:         []string{initEnv + "=" + string(raw)},
		Dir:         "/",
		SysProcAttr: sys,
		ExtraFiles:  extra,
	}
	return cmd, nil
}

// CommandWith returns an *exec.Cmd that runs argv in app's sandbox, as a
// one-off command (a management command, a shell, a build): the same image,
// data directory, user, limits and namespaces as the app's instances, in a
// cgroup shared by the app's commands, and a network namespace of its own
// with the app's network policy (or opts.Network): loopback only, or a veth
// on the node's bridge with the egress filter. It has no socket. The caller
// sets Stdin, Stdout and Stderr (or hands it to pty, which makes it a
// session leader: the Cmd leaves Setsid and Setpgid unset for that) and
// runs it. A caller that wants the app kept alive meanwhile holds Attach.
//
// Nothing of the command's network outlives it, whatever the caller does
// with the Cmd: the namespace reaches the command inside a message on a
// socket (the runner keeps no descriptor of it), so the kernel frees it
// when the command's last process ends (a SIGKILL included), or, for a Cmd
// never started, when the Cmd is collected; the veth goes with it, and the
// runner then removes its filter entries and frees its address.
func (r *Runner) CommandWith(name string, argv []string, opts CommandOptions) (*exec.Cmd, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, fmt.Errorf("runner: command for app %q: empty argv", name)
	}
	a, err := r.app(name)
	if err != nil {
		return nil, err
	}
	s := a.currentSpec()
	if opts.Dir != "" {
		if !filepath.IsAbs(opts.Dir) {
			return nil, fmt.Errorf("runner: command for app %q: working directory %q is not absolute", name, opts.Dir)
		}
		s.WorkDir = opts.Dir
	}
	network := s.Network
	if opts.Network != nil {
		network = *opts.Network
		if err := network.validate(); err != nil {
			return nil, fmt.Errorf("runner: command for app %q: %w", name, err)
		}
	}
	mounts, err := r.checkMounts(opts.Mounts)
	if err != nil {
		return nil, fmt.Errorf("runner: command for app %q: %w", name, err)
	}
	if len(mounts) > 0 && !r.iso.SandboxRoot {
		return nil, fmt.Errorf("runner: command for app %q: mounts need the sandbox root, which this runner lacks", name)
	}
	var dests []Destination
	if network.egress() && r.net != nil {
		if !r.iso.Egress {
			return nil, fmt.Errorf("runner: command for app %q: network.policy %q is unavailable on this runner: %s", name, network.Policy, r.egressWhy())
		}
		if dests, err = resolveDestinations(context.Background(), network.Allow); err != nil {
			return nil, fmt.Errorf("runner: command for app %q: %w", name, err)
		}
	}
	uid, gid, err := r.appUser(a)
	if err != nil {
		return nil, err
	}
	dataDir := ""
	if !opts.NoDataDir {
		if dataDir, err = r.dataDir(s, uid, gid); err != nil {
			return nil, err
		}
	} else if !r.iso.SandboxRoot {
		return nil, fmt.Errorf("runner: command for app %q: NoDataDir needs the sandbox root, which this runner lacks", name)
	}
	var cg *cgroup
	if r.cg != nil {
		if v, ok := r.cmdCg.Load(name); ok {
			cg = v.(*cgroup)
		} else {
			cg, err = r.cg.create(name+"-cmd", s.Limits.withDefaults(r.cfg.DefaultLimits))
			if err != nil {
				return nil, err
			}
			if v, loaded := r.cmdCg.LoadOrStore(name, cg); loaded {
				cg = v.(*cgroup)
			}
		}
	}
	env, err := mergeEnv(baseEnv(s, name, 0), opts.Env)
	if err != nil {
		return nil, fmt.Errorf("runner: command for app %q: %w", name, err)
	}
	l := launch{spec: s, uid: uid, gid: gid, dataDir: dataDir, cg: cg, argv: argv, env: env, netns: -1, mounts: mounts}
	var el *egressLink
	if r.net != nil {
		ns, err := r.net.take()
		if err != nil {
			return nil, fmt.Errorf("runner: command for app %q: %w", name, err)
		}
		defer unix.Close(ns)
		if network.egress() {
			if el, err = r.net.attach(ns, "c"+strconv.FormatInt(r.instSeq.Add(1), 36), dests, network.Policy == PolicyAllowOnly); err != nil {
				return nil, fmt.Errorf("runner: command for app %q: egress network: %w", name, err)
			}
		}
		// From here the veth goes with the namespace: the watcher
		// undoes the rest when it does.
		if el != nil {
			r.net.release(el)
		}
		if l.netnsMsg, err = netnsMessage(ns); err != nil {
			return nil, fmt.Errorf("runner: command for app %q: %w", name, err)
		}
	}
	cmd, err := r.buildCmd(l)
	if err != nil {
		if l.netnsMsg != nil {
			l.netnsMsg.Close()
		}
		return nil, fmt.Errorf("runner: command for app %q: %w", name, err)
	}
	cmd.SysProcAttr.Pdeathsig = 0
	return cmd, nil
}

// netnsMessage returns one end of a socket pair whose other end, closed at
// once, sent it ns: the namespace is then held by the message alone, which
// the init helper receives.
func netnsMessage(ns int) (*os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("pass the network namespace: %w", err)
	}
	err = unix.Sendmsg(fds[0], []byte{0}, unix.UnixRights(ns), nil, 0)
	unix.Close(fds[0])
	if err != nil {
		unix.Close(fds[1])
		return nil, fmt.Errorf("pass the network namespace: %w", err)
	}
	return os.NewFile(uintptr(fds[1]), "netns"), nil
}

// hasEnv reports whether env sets key.
func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}
