package lock

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
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
	go reportStatus(s)
	if err := s.Run(context.Background()); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	return 0
}

// reportStatus writes the member's Status to stdout, a JSON line each time
// it changes, so a test waits for the state it needs (an active member
// with a synced standby) instead of sleeping for it.
func reportStatus(s *Server) {
	<-s.Ready()
	enc := json.NewEncoder(os.Stdout)
	var last Status
	for first := true; ; first = false {
		if st := s.Status(); first || st != last {
			if enc.Encode(st) != nil {
				return
			}
			last = st
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// procPair is a locker pair of two processes (this test binary re-run),
// as deployed: each member in its own process, killed with SIGKILL.
type procPair struct {
	tb    testing.TB
	eps   [2]string
	procs [2]*exec.Cmd

	mu     sync.Mutex
	status [2]Status     // as each member last reported it
	change chan struct{} // closed and replaced on every report
}

func startProcPair(tb testing.TB) *procPair {
	p := &procPair{tb: tb, eps: [2]string{freeEndpoint(tb), freeEndpoint(tb)}, change: make(chan struct{})}
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
	out, err := cmd.StdoutPipe()
	require.NoError(p.tb, err)
	require.NoError(p.tb, cmd.Start())
	p.procs[i] = cmd
	go func() {
		dec := json.NewDecoder(out)
		for {
			var st Status
			if dec.Decode(&st) != nil {
				return
			}
			p.mu.Lock()
			p.status[i] = st
			close(p.change)
			p.change = make(chan struct{})
			p.mu.Unlock()
		}
	}()
}

// waitSynced waits until one member reports itself active with a synced
// standby, and the other reports itself that standby, holding at least
// leases leases in its replica; it returns the active member's index.
func (p *procPair) waitSynced(t testing.TB, leases int) int {
	t.Helper()
	active := -1
	p.waitFor(t, "an active member with a synced standby", func(st [2]Status) bool {
		for i := range st {
			a, b := st[i], st[1-i]
			if a.Role == RoleActive && a.Synced && b.Role == RoleStandby && b.Synced && b.Leases >= leases {
				active = i
				return true
			}
		}
		return false
	})
	return active
}

// waitFor waits until the members' reports satisfy ok (30s at most: a
// report comes within milliseconds of the change).
func (p *procPair) waitFor(t testing.TB, what string, ok func(st [2]Status) bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		p.mu.Lock()
		st, change := p.status, p.change
		p.mu.Unlock()
		if ok(st) {
			return
		}
		select {
		case <-change:
		case <-deadline:
			t.Fatalf("no report of %s within 30s: %+v", what, st)
		}
	}
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
	p.waitSynced(t, 0) // a settled pair: a grant before it could be a cold start's
	held, err := z.Acquire(ctx, "k-held", 20*time.Second)
	require.NoError(t, err)
	// Wait until the standby holds a replica (a beat or two after its
	// start), then kill the active member, the one that granted.
	active := p.waitSynced(t, 1)
	require.Equal(t, active, activeProc(t, z, p), "the grant came from the active member")
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
	p.waitSynced(t, 0) // a settled pair: a grant before it could be a cold start's
	before, err := z.Acquire(ctx, "p-before", 20*time.Second)
	require.NoError(t, err)
	active := p.waitSynced(t, 1) // the standby holds p-before
	require.Equal(t, active, activeProc(t, z, p), "the grant came from the active member")
	require.NoError(t, p.procs[active].Process.Signal(syscall.SIGSTOP))
	after, err := z.Acquire(ctx, "p-after", 20*time.Second) // from the standby, once it took over
	require.NoError(t, err)
	require.Greater(t, after.Token, before.Token)
	require.Equal(t, 1-activeProc(t, z, p), active, "the client moved to the other member")
	p.waitFor(t, "the other member active", func(st [2]Status) bool { return st[1-active].Role == RoleActive })
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
