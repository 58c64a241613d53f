package zmqloop

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestClientFailsOverFromKilledAndStoppedProcesses runs three ReplyLoops
// in processes of their own and eight goroutines calling them through one
// Client without pause. One server is killed (SIGKILL: its connections
// reset), then another is stopped (SIGSTOP: its connections stay up, it
// just never answers, the harder case). Calls in flight to either must
// be answered by the survivor: no caller sees an error.
func TestClientFailsOverFromKilledAndStoppedProcesses(t *testing.T) {
	c := newTestCodec(t, nil)
	var eps []string
	pids := map[int]string{}
	var procs [3]*os.Process
	for i, name := range []string{"killed", "stopped", "survivor"} {
		ep, p := startServerProcess(t, "signed")
		eps = append(eps, ep)
		pids[p.Pid] = name
		procs[i] = p
	}
	cl := newClient(t, c, eps, func(cfg *ClientConfig) { cfg.TryTimeout = 200 * time.Millisecond })

	var phase atomic.Int32 // 0 all up, 1 killed, 2 killed and stopped
	var mu sync.Mutex
	served := [3]map[string]int{{}, {}, {}} // per phase: server name -> calls
	var errs []error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ph := phase.Load()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				got, err := cl.Call(ctx, "pid", nil)
				cancel()
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if pid, perr := strconv.Atoi(string(got)); perr != nil {
					errs = append(errs, perr)
				} else if phase.Load() == ph {
					served[ph][pids[pid]]++
				}
				mu.Unlock()
			}
		}()
	}
	// A phase begins once the signal has taken effect: a call counted in
	// it was made after that.
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, procs[0].Signal(syscall.SIGKILL))
	waitProcState(t, procs[0].Pid, "Z") // dead; its parent has not reaped it yet
	phase.Store(1)
	time.Sleep(500 * time.Millisecond)
	require.NoError(t, procs[1].Signal(syscall.SIGSTOP))
	waitProcState(t, procs[1].Pid, "T")
	phase.Store(2)
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()

	require.Empty(t, errs, "a caller saw an error while an endpoint lived")
	t.Logf("calls served per phase: %v", served)
	require.Len(t, served[0], 3, "before the faults every server answered")
	require.Zero(t, served[2]["killed"], "the killed server answered")
	require.Zero(t, served[2]["stopped"], "the stopped server answered")
	require.Greater(t, served[2]["survivor"], 20, "the survivor carried the calls")
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

// TestClientRidesOutAServerRestart has one endpoint, whose server process
// is killed and, after a pause, started again on the same address while
// four goroutines keep calling. A request lost with the old process is
// sent again (TryTimeout, the Lazy Pirate pattern's retry), and one made
// while nothing listens waits for the connection: no caller sees an error,
// and calls are answered by the new process.
func TestClientRidesOutAServerRestart(t *testing.T) {
	c := newTestCodec(t, nil)
	ep, old := startServerProcess(t, "signed")
	cl := newClient(t, c, []string{ep}, func(cfg *ClientConfig) { cfg.TryTimeout = 200 * time.Millisecond })

	var mu sync.Mutex
	byPid := map[int]int{}
	var errs []error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				got, err := cl.Call(ctx, "pid", nil)
				cancel()
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if pid, perr := strconv.Atoi(string(got)); perr != nil {
					errs = append(errs, perr)
				} else {
					byPid[pid]++
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, old.Signal(syscall.SIGKILL))
	waitProcState(t, old.Pid, "Z")
	time.Sleep(300 * time.Millisecond) // calls now find nobody
	_, fresh := startServerProcess(t, "signed", ep)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()

	require.Empty(t, errs, "a caller saw an error across the restart")
	t.Logf("calls answered per process: %v", byPid)
	require.Greater(t, byPid[old.Pid], 0)
	require.Greater(t, byPid[fresh.Pid], 0, "the restarted server answered")
}
