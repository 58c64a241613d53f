//go:build !linux

package runner

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"time"
)

// Init does nothing where sandboxes are not supported.
func Init() { markInit() }

func markInit() {}

type cgroupManager struct{ version int }

type cgroup struct{}

type cgroupStats struct {
	CPU          time.Duration
	Memory       int64
	PeakMemory   int64
	OOMKills     int64
	ForkRefusals int64
}

func (m *cgroupManager) cleanupStale() []string                 { return nil }
func (m *cgroupManager) removeRoot()                            {}
func (m *cgroupManager) create(string, Limits) (*cgroup, error) { return nil, ErrUnsupported }
func (c *cgroup) stats() cgroupStats                            { return cgroupStats{} }
func (c *cgroup) kill(time.Duration) bool                       { return true }
func (c *cgroup) remove() error                                 { return nil }

type launch struct {
	spec       Spec
	uid, gid   int
	dataDir    string
	sockDir    string
	cg         *cgroup
	argv       []string
	env        []string
	reaperPgid bool
	netns      int
}

type netManager struct{}

type egressLink struct{}

func (m *netManager) take() (int, error) { return -1, ErrUnsupported }
func (m *netManager) attach(int, string, []Destination, bool) (*egressLink, error) {
	return nil, ErrUnsupported
}
func (m *netManager) detach(*egressLink) {}
func (m *netManager) start()             {}
func (m *netManager) close()             {}
func (m *netManager) dialTCP(ctx context.Context, ns int, addr string) (net.Conn, error) {
	return nil, ErrUnsupported
}

func (r *Runner) detectIsolation() error {
	if !r.cfg.Isolation.Off {
		return errors.New("runner: isolation needs Linux; set Config.Isolation.Off to run apps as plain processes")
	}
	r.iso = IsolationStatus{Missing: []string{"all isolation: switched off by Config.Isolation.Off"}}
	return nil
}

func (r *Runner) buildCmd(l launch) (*exec.Cmd, error) { return nil, ErrUnsupported }

func (r *Runner) startInstance(l launch, stdout, stderr *os.File) (*exec.Cmd, error) {
	return nil, ErrUnsupported
}

// DefaultInitPool is how many parked init helpers a runner keeps (none
// on this OS).
const DefaultInitPool = 0

type initPool struct{}

func newInitPool(int, *slog.Logger, func() (*initPool, error)) *initPool { return nil }
func (r *Runner) startParkedHelper() (*initPool, error)                  { return nil, ErrUnsupported }
func (p *initPool) run()                                                 {}
func (p *initPool) close()                                               {}

// CommandWith is not supported on this OS.
func (r *Runner) CommandWith(name string, argv []string, opts CommandOptions) (*exec.Cmd, error) {
	return nil, ErrUnsupported
}

const appPort = 8000

// ErrUntrustedSocket: see the Linux build.
var ErrUntrustedSocket = errors.New("runner: untrusted app socket")

func openSockDir(string) (int, error)         { return -1, nil }
func pinSocket(int, string, int) (int, error) { return 0, nil }
func pinnedPath(_ int, host string) string    { return host }
func checkPeer(net.Conn, int) error           { return nil }

// Defaults that the Linux build documents.
const (
	DefaultEgressSubnet = "10.237.0.0/16"
	DefaultNetnsPool    = 4
)
