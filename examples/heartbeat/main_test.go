package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHeartbeatDaemon builds and runs the real binary: it serves status,
// survives its flaky sweeper, and stops cleanly on SIGTERM.
func TestHeartbeatDaemon(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "heartbeat")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, string(out))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()

	cmd := exec.Command(bin, "-listen", addr, "-interval", "10ms", "-fail-every", "2")
	// The whole log is kept: Wait returns only once exec has copied all
	// of it (a StderrPipe would be closed by Wait, losing the last lines).
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()

	type status struct {
		Daemon string
		Loops  []struct {
			Name      string
			Failures  int
			Restarts  int
			LastError string `json:"last_error"`
		}
	}
	var st status
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&st) != nil {
			return false
		}
		return len(st.Loops) == 3 && st.Loops[2].Failures >= 2
	}, 30*time.Second, 20*time.Millisecond)
	assert.Equal(t, "heartbeat", st.Daemon)
	assert.Equal(t, []string{"status", "heartbeat", "sweeper"}, []string{st.Loops[0].Name, st.Loops[1].Name, st.Loops[2].Name})
	assert.Contains(t, st.Loops[2].LastError, "simulated")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "exit status 0 after SIGTERM")
	log := stderr.String()
	assert.Contains(t, log, "signal received")
	assert.Contains(t, log, "loop panicked")
	assert.Contains(t, log, "daemon stopped")
}

func TestHelpExitsZero(t *testing.T) {
	assert.Equal(t, 0, run([]string{"-help"}))
	assert.Equal(t, 2, run([]string{"-nope"}))
	assert.Equal(t, 2, run([]string{"-log-format", "xml"}))
}

// lockedBuffer is a bytes.Buffer safe for exec's copying goroutine and
// the test reading it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
