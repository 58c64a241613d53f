package zmqloop

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/internal/testserver"
)

// pidCalls is n goroutines calling "pid" (see benchServer) through one
// Client without pause, counting answers per phase and per server pid. A
// call counts in the phase it began in, and only if the phase had not
// changed when it returned.
type pidCalls struct {
	phase atomic.Int32
	stop  chan struct{}
	wg    sync.WaitGroup

	mu     sync.Mutex
	served map[int32]map[int]int // phase -> pid -> answers
	errs   []error
	// counted gets a token after each answer is counted (dropped if one
	// is there), for until.
	counted chan struct{}
}

// until waits until enough answers of the current phase were counted:
// done, called with them (mu held), says when. Phases end on what was
// answered, not on a timer.
func (pc *pidCalls) until(t *testing.T, what string, done func(pids map[int]int) bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		pc.mu.Lock()
		ok := done(pc.served[pc.phase.Load()])
		errs := len(pc.errs)
		pc.mu.Unlock()
		if ok {
			return
		}
		if errs > 0 {
			t.Fatalf("waiting for %s: a caller saw an error: %v", what, pc.errs[0])
		}
		select {
		case <-pc.counted:
		case <-deadline:
			t.Fatalf("waiting for %s: not within 30s; answers so far %v", what, pc.served)
		}
	}
}

func startPidCalls(cl *Client, n int) *pidCalls {
	pc := &pidCalls{stop: make(chan struct{}), served: map[int32]map[int]int{}, counted: make(chan struct{}, 1)}
	for g := 0; g < n; g++ {
		pc.wg.Add(1)
		go func() {
			defer pc.wg.Done()
			for {
				select {
				case <-pc.stop:
					return
				default:
				}
				ph := pc.phase.Load()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				got, err := cl.Call(ctx, "pid", nil)
				cancel()
				pid, perr := strconv.Atoi(string(got))
				pc.mu.Lock()
				switch {
				case err != nil:
					pc.errs = append(pc.errs, err)
				case perr != nil:
					pc.errs = append(pc.errs, perr)
				case pc.phase.Load() == ph:
					if pc.served[ph] == nil {
						pc.served[ph] = map[int]int{}
					}
					pc.served[ph][pid]++
				}
				pc.mu.Unlock()
				select {
				case pc.counted <- struct{}{}:
				default:
				}
			}
		}()
	}
	return pc
}

// end stops the callers and returns the answers per phase and the errors.
func (pc *pidCalls) end() (map[int32]map[int]int, []error) {
	close(pc.stop)
	pc.wg.Wait()
	return pc.served, pc.errs
}

// TestClientFailsOverFromKilledAndStoppedProcesses runs three ReplyLoops
// in processes of their own and eight goroutines calling them through one
// Client without pause. One server is killed (SIGKILL: its connections
// reset), then another is stopped (SIGSTOP: its connections stay up, it
// just never answers, the harder case). Calls in flight to either must
// be answered by the survivor: no caller sees an error.
func TestClientFailsOverFromKilledAndStoppedProcesses(t *testing.T) {
	c := newTestCodec(t, nil)
	var eps []string
	var procs [3]*os.Process // killed, stopped, survivor
	for i := range procs {
		ep, p := startServerProcess(t, "signed")
		eps = append(eps, ep)
		procs[i] = p
	}
	killed, stopped, survivor := procs[0].Pid, procs[1].Pid, procs[2].Pid
	cl := newClient(t, c, eps, func(cfg *ClientConfig) { cfg.TryTimeout = 200 * time.Millisecond })

	// Phases: 0 all up, 1 one killed, 2 one killed and one stopped. A
	// phase begins once the signal has taken effect: a call counted in it
	// was made after that.
	// Each phase lasts until enough answers were counted in it.
	calls := startPidCalls(cl, 8)
	calls.until(t, "every server to answer 20 calls", func(pids map[int]int) bool {
		return pids[killed] >= 20 && pids[stopped] >= 20 && pids[survivor] >= 20
	})
	require.NoError(t, procs[0].Signal(syscall.SIGKILL))
	waitProcState(t, killed, "Z") // dead; its parent has not reaped it yet
	calls.phase.Store(1)
	calls.until(t, "400 answers after the kill", func(pids map[int]int) bool {
		return pids[stopped]+pids[survivor] >= 400
	})
	require.NoError(t, procs[1].Signal(syscall.SIGSTOP))
	waitProcState(t, stopped, "T")
	calls.phase.Store(2)
	// Calls in flight to the stopped server when it stopped wait
	// TryTimeout (200ms) before they go to the survivor too, so 200
	// answers take several TryTimeouts: calls sent to it at the stop are
	// among them.
	calls.until(t, "200 answers by the survivor after the stop", func(pids map[int]int) bool {
		return pids[survivor] >= 200
	})
	served, errs := calls.end()

	require.Empty(t, errs, "a caller saw an error while an endpoint lived")
	t.Logf("answers per phase and pid (killed %d, stopped %d, survivor %d): %v", killed, stopped, survivor, served)
	require.Len(t, served[0], 3, "before the faults every server answered")
	// With one endpoint dead, the other two share its calls evenly.
	a, b := float64(served[1][stopped]), float64(served[1][survivor])
	require.InDelta(t, 1, a/b, 0.35, "calls after the kill: %v of %v", served[1][stopped], served[1][survivor])
	require.Zero(t, served[2][killed], "the killed server answered")
	require.Zero(t, served[2][stopped], "the stopped server answered")
	require.Greater(t, served[2][survivor], 20, "the survivor carried the calls")
}

// TestClientRidesOutAServerRestart has one endpoint, whose server process
// is killed and, after a pause, started again on the same address while
// four goroutines keep calling. A request lost with the old process is
// sent again (TryTimeout, the Lazy Pirate pattern's retry), and one made
// while nothing listens waits for the connection: no caller sees an error,
// and calls are answered by the new process.
func TestClientRidesOutAServerRestart(t *testing.T) {
	c := newTestCodec(t, nil)
	// The new process binds the old one's port: a port from below the
	// ephemeral range, reserved for this test process, so that no
	// outgoing connection of the machine takes it between the two
	// (tcp://127.0.0.1:* would pick one from the ephemeral range).
	port, err := testserver.FreePort()
	require.NoError(t, err)
	ep, old := startServerProcess(t, "signed", fmt.Sprintf("tcp://127.0.0.1:%d", port))
	cl := newClient(t, c, []string{ep}, func(cfg *ClientConfig) { cfg.TryTimeout = 200 * time.Millisecond })

	calls := startPidCalls(cl, 4)
	calls.until(t, "20 answers from the first process", func(pids map[int]int) bool { return pids[old.Pid] >= 20 })
	require.NoError(t, old.Signal(syscall.SIGKILL))
	waitProcState(t, old.Pid, "Z")
	// Calls made now find nobody until the new process binds: they wait
	// for the connection (no TryTimeout has to pass for that).
	_, fresh := startServerProcess(t, "signed", ep)
	calls.until(t, "20 answers from the new process", func(pids map[int]int) bool { return pids[fresh.Pid] >= 20 })
	served, errs := calls.end()

	require.Empty(t, errs, "a caller saw an error across the restart")
	t.Logf("answers per pid (old %d, new %d): %v", old.Pid, fresh.Pid, served[0])
	require.Greater(t, served[0][old.Pid], 0)
	require.Greater(t, served[0][fresh.Pid], 0, "the restarted server answered")
}

// waitProcState waits until /proc says process pid is in state (R, S, T,
// Z, ...).
func waitProcState(t *testing.T, pid int, state string) {
	t.Helper()
	require.Eventually(t, func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return false
		}
		// pid (comm) state ...; comm may hold spaces or parentheses.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		return len(f) > 0 && f[0] == state
	}, 10*time.Second, time.Millisecond, "process %d never reached state %s", pid, state)
}
