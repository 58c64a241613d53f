// Package buildsandbox runs the Python installer's builds
// (pyinstall.Config.Sandbox) as one-off commands of a runner app of their
// own, which is how the reference platform keeps the code of an uploaded
// sdist (its setup.py, its PEP 517 backend) away from the host: each build
// process gets the app's own UID, a read-only system (Debian's
// /usr/bin/python3 at its path), the install's build directory
// (pyinstall.BuildDir) read-write at the same path and nothing else of the
// cache, no /data, a private /tmp, a network namespace that reaches only
// the destinations allowed (the package index) or nothing, and one cgroup
// for all builds bounding memory, tasks and CPU.
//
// upload does not import runner (the packages meet through
// pyinstall.BuildSandbox, a plain function value); this package, under
// examples/, is where they are wired together.
package buildsandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/paaskit/paaskit/runner"
	"github.com/paaskit/paaskit/upload/pyinstall"
)

// DefaultApp is the runner app builds run as.
const DefaultApp = "pybuild"

// DefaultLimits bound all builds together: 1 GiB of memory, 512 tasks, two
// CPUs' worth of time, and half an app's CPU weight.
var DefaultLimits = runner.Limits{Memory: 1 << 30, Processes: 512, CPUs: 2, CPUWeight: 50}

// Config configures a Sandbox.
type Config struct {
	// Runner runs the builds. Required.
	Runner *runner.Runner
	// StateDir holds the app's (empty) image directory. Required.
	StateDir string
	// App is the runner app the builds run as; "" means DefaultApp. New
	// puts its spec: it has a host name under .invalid that no client
	// resolves, and an instance command (/bin/false) that never serves.
	App string
	// Allow are the destinations ("host:port", as a runner spec's
	// network.allow) builds may reach, and nothing else: the package
	// index, say (AllowIndex gives it). None means loopback only.
	Allow []string
	// Limits bound all builds together (they share the app's command
	// cgroup); zero fields take DefaultLimits'.
	Limits runner.Limits
	// Python is the interpreter builds may run besides those of the
	// install's build environments; "" means /usr/bin/python3.
	Python string
}

// Sandbox runs builds on a runner. Set it into a pyinstall.Config with
// Apply.
type Sandbox struct {
	r       *runner.Runner
	app     string
	python  string
	network runner.Network
	user    pyinstall.BuildUser
}

// New puts the builds' app on cfg.Runner and returns the sandbox.
func New(cfg Config) (*Sandbox, error) {
	if cfg.Runner == nil || cfg.StateDir == "" {
		return nil, errors.New("buildsandbox: Config.Runner and Config.StateDir are required")
	}
	// A build sandbox that silently lacks part of itself would run
	// upload code with more than it says: refuse instead.
	iso := cfg.Runner.Isolation()
	switch {
	case !iso.User || !iso.SandboxRoot || !iso.Cgroup || !iso.Network || !iso.Capabilities || !iso.Seccomp:
		return nil, fmt.Errorf("buildsandbox: the runner lacks isolation a build sandbox needs (run as root): %s", strings.Join(iso.Missing, "; "))
	case len(cfg.Allow) > 0 && !iso.Egress:
		return nil, fmt.Errorf("buildsandbox: Config.Allow needs the runner's egress network: %s", strings.Join(iso.Missing, "; "))
	}
	if cfg.App == "" {
		cfg.App = DefaultApp
	}
	if cfg.Python == "" {
		cfg.Python = "/usr/bin/python3"
	}
	lim := cfg.Limits
	d := DefaultLimits
	if lim.Memory == 0 {
		lim.Memory = d.Memory
	}
	if lim.Processes == 0 {
		lim.Processes = d.Processes
	}
	if lim.CPUs == 0 {
		lim.CPUs = d.CPUs
	}
	if lim.CPUWeight == 0 {
		lim.CPUWeight = d.CPUWeight
	}
	image := filepath.Join(cfg.StateDir, cfg.App+"-image")
	if err := os.MkdirAll(image, 0o755); err != nil {
		return nil, fmt.Errorf("buildsandbox: %w", err)
	}
	network := runner.Network{Policy: runner.PolicyNone}
	if len(cfg.Allow) > 0 {
		network = runner.Network{Policy: runner.PolicyAllowOnly, Allow: cfg.Allow}
	}
	spec := runner.Spec{
		Name: cfg.App, Hosts: []string{cfg.App + ".builds.invalid"}, Image: image,
		Command: []string{"/bin/false"}, Limits: lim, Network: network,
	}
	if err := cfg.Runner.Put(spec); err != nil {
		return nil, fmt.Errorf("buildsandbox: %w", err)
	}
	uid, gid, err := cfg.Runner.AppUser(cfg.App)
	if err != nil {
		return nil, fmt.Errorf("buildsandbox: %w", err)
	}
	if uid == 0 || gid == 0 {
		return nil, fmt.Errorf("buildsandbox: the runner gives app %s UID %d: builds need a user of their own (run as root with isolation on)", cfg.App, uid)
	}
	return &Sandbox{r: cfg.Runner, app: cfg.App, python: cfg.Python, network: network, user: pyinstall.BuildUser{UID: uid, GID: gid}}, nil
}

// AllowIndex is the "host:port" of a package index URL, for Config.Allow.
func AllowIndex(indexURL string) (string, error) {
	u, err := urlHostPort(indexURL)
	if err != nil {
		return "", fmt.Errorf("buildsandbox: index %q: %w", indexURL, err)
	}
	return u, nil
}

// User is the UID and GID builds run as (pyinstall.Config.BuildUser).
func (s *Sandbox) User() pyinstall.BuildUser { return s.user }

// Apply makes cfg's builds run in the sandbox: Sandbox and BuildUser.
func (s *Sandbox) Apply(cfg *pyinstall.Config) {
	u := s.user
	cfg.Sandbox, cfg.BuildUser = s.Wrap, &u
}

// Wrap is a pyinstall.BuildSandbox: it returns cmd's program, arguments,
// directory and environment as a one-off command of the builds' app, with
// the install's build directory mounted read-write at its own path. It
// refuses a context that is not an install's and a program outside the
// build directory and Config.Python.
func (s *Sandbox) Wrap(ctx context.Context, cmd *exec.Cmd) (*exec.Cmd, error) {
	dir := pyinstall.BuildDir(ctx)
	if dir == "" {
		return nil, errors.New("buildsandbox: not an install's build (no pyinstall.BuildDir in the context)")
	}
	if cmd.Path != s.python && !strings.HasPrefix(cmd.Path, dir+"/") {
		return nil, fmt.Errorf("buildsandbox: build program %s is neither %s nor under the install's build directory %s", cmd.Path, s.python, dir)
	}
	argv := append([]string{cmd.Path}, cmd.Args[1:]...)
	c, err := s.r.CommandWith(s.app, argv, runner.CommandOptions{
		Dir:       cmd.Dir,
		Env:       cmd.Env,
		Mounts:    []runner.Mount{{Host: dir, Writable: true}},
		Network:   &s.network,
		NoDataDir: true,
	})
	if err != nil {
		return nil, fmt.Errorf("buildsandbox: %w", err)
	}
	c.Stderr = cmd.Stderr
	// The build is no terminal session: its own process group, and it
	// dies with the installer.
	c.SysProcAttr.Setpgid = true
	dieWithParent(c)
	return c, nil
}
