package lock

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// serverProcEnv makes the test binary a locker member process:
// "ID,BIND,PEER". It runs with the production defaults until killed.
const serverProcEnv = "LOCK_TEST_SERVER"

func serverProcess(spec string) int {
	f := strings.Split(spec, ",")
	if len(f) != 3 {
		return 2
	}
	t := &testing.T{}
	s, err := NewServer(ServerConfig{ID: f[0], Bind: f[1], Peer: f[2], Codec: testCodec(t), ColdStartWait: -1,
		Logger: quietLogger()})
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 2
	}
	if err := s.Run(context.Background()); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	return 0
}

// procPair is a locker pair of two processes (this test binary re-run),
// as deployed: each member in its own process, killed with SIGKILL.
type procPair struct {
	tb    testing.TB
	eps   [2]string
	procs [2]*exec.Cmd
}

func startProcPair(tb testing.TB) *procPair {
	p := &procPair{tb: tb, eps: [2]string{freeEndpoint(tb), freeEndpoint(tb)}}
	p.start(0)
	p.start(1)
	tb.Cleanup(func() { p.kill(0); p.kill(1) })
	return p
}

func (p *procPair) start(i int) {
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), serverProcEnv+"="+string(rune('a'+i))+","+p.eps[i]+","+p.eps[1-i])
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(p.tb, cmd.Start())
	p.procs[i] = cmd
}

func (p *procPair) kill(i int) {
	if c := p.procs[i]; c != nil {
		_ = c.Process.Kill()
		_ = c.Wait()
		p.procs[i] = nil
	}
}

// TestKillActiveProcess: SIGKILL the active member's process; a client
// of both gets its next grant from the standby, above every earlier token,
// and a lease granted before the kill is still held.
func TestKillActiveProcess(t *testing.T) {
	p := startProcPair(t)
	z, err := NewZMQ(ZMQConfig{Endpoints: p.eps[:], Codec: testCodec(t), Logger: quietLogger()})
	require.NoError(t, err)
	defer z.Close()
	ctx := ctxFor(t, 60*time.Second)
	held, err := z.Acquire(ctx, "k-held", 20*time.Second)
	require.NoError(t, err)
	// Wait until the standby holds a replica (a beat or two after its
	// start), then kill whichever member granted.
	active := activeProc(t, z, p)
	time.Sleep(2 * DefaultFailoverAfter)
	p.kill(active)
	start := time.Now()
	l, err := z.Acquire(ctx, "k-new", time.Second)
	require.NoError(t, err)
	t.Logf("new grant %v after the kill", time.Since(start))
	require.Greater(t, l.Token, held.Token)
	_, err = z.TryAcquire(ctx, "k-held", time.Second)
	require.ErrorIs(t, err, ErrHeld, "the lease granted before the kill survived it")
	require.NoError(t, z.Renew(ctx, held))
	require.NoError(t, z.Release(ctx, held))
}

// activeProc returns the index of the member that answers grants: the
// one the client settled on.
func activeProc(t *testing.T, z *ZMQ, _ *procPair) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.current
}

// TestPausedActiveProcess: the active member is paused (SIGSTOP) past
// FailoverAfter; the standby takes over in a new epoch; when the paused
// member wakes it must not grant again: its first replication or beat
// finds the peer active with the larger epoch and it steps down. A client
// of the woken member alone gets no grant from it.
func TestPausedActiveProcess(t *testing.T) {
	p := startProcPair(t)
	codec := testCodec(t)
	z, err := NewZMQ(ZMQConfig{Endpoints: p.eps[:], Codec: codec, Logger: quietLogger()})
	require.NoError(t, err)
	defer z.Close()
	ctx := ctxFor(t, 60*time.Second)
	before, err := z.Acquire(ctx, "p-before", 20*time.Second)
	require.NoError(t, err)
	active := activeProc(t, z, p)
	time.Sleep(2 * DefaultFailoverAfter) // the standby syncs
	require.NoError(t, p.procs[active].Process.Signal(syscall.SIGSTOP))
	after, err := z.Acquire(ctx, "p-after", 20*time.Second) // from the standby, once it took over
	require.NoError(t, err)
	require.Greater(t, after.Token, before.Token)
	require.Equal(t, 1-activeProc(t, z, p), active, "the client moved to the other member")
	require.NoError(t, p.procs[active].Process.Signal(syscall.SIGCONT))

	only, err := NewZMQ(ZMQConfig{Endpoints: []string{p.eps[active]}, Codec: codec, Logger: quietLogger()})
	require.NoError(t, err)
	defer only.Close()
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err = only.TryAcquire(short, "p-woken", time.Second)
	require.Error(t, err, "the woken member granted a lease while its peer is active")
	require.NotErrorIs(t, err, ErrHeld)
	_, err = z.TryAcquire(ctx, "p-before", time.Second)
	require.ErrorIs(t, err, ErrHeld, "the lease from before the pause is still held")
	l, err := z.TryAcquire(ctx, "p-woken", time.Second)
	require.NoError(t, err)
	require.Greater(t, l.Token, after.Token)
}
