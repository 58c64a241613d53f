package runner_test

import (
	"context"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/paaskit/paaskit/runner"
	"github.com/stretchr/testify/require"
)

// emfileListener fails Accept with EMFILE, as a process out of
// descriptors sees it, whenever starve is set.
type emfileListener struct {
	net.Listener
	starve atomic.Bool
	fails  atomic.Int64
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.starve.Load() {
		l.fails.Add(1)
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

func TestFrontKeepsServingThroughEMFILE(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("steady"))
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := &emfileListener{Listener: tl}
	l.starve.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.r.Serve(ctx, l) }()
	// Starved for a while: Serve must not return.
	require.Eventually(t, func() bool { return l.fails.Load() >= 5 }, 10*time.Second, time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Serve returned on EMFILE: %v", err)
	default:
	}
	l.starve.Store(false)
	e2 := *e
	e2.front = tl.Addr().String()
	require.Equal(t, "hello steady\n", e2.mustGet("steady.example", "/"))
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	_ = runner.MissHeader
}
