package main

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func freeEndpoint(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return "tcp://" + addr
}

// TestPairAndClient runs a pair, takes a lease through the client mode
// twice (the tokens grow), stops the first member, takes one more from the
// second, and stops cleanly.
func TestPairAndClient(t *testing.T) {
	t.Setenv("LOCKD_SECRET", "a test secret of enough bytes")
	t.Setenv("LOCKD_PEER_SECRET", "the members' own secret, long enough")
	a, b := freeEndpoint(t), freeEndpoint(t)
	ctxA, stopA := context.WithCancel(context.Background())
	ctxB, stopB := context.WithCancel(context.Background())
	codeA, codeB := make(chan int, 1), make(chan int, 1)
	common := []string{"-heartbeat", "20ms", "-failover-after", "200ms", "-max-ttl", "1s", "-cold-start-wait", "300ms", "-log-level", "error"}
	dir := t.TempDir()
	go func() {
		codeA <- run(ctxA, append([]string{"-id", "a", "-bind", a, "-peer", b, "-state", dir + "/a.json"}, common...), &bytes.Buffer{}, true)
	}()
	go func() {
		codeB <- run(ctxB, append([]string{"-id", "b", "-bind", b, "-peer", a, "-state", dir + "/b.json"}, common...), &bytes.Buffer{}, true)
	}()
	take := func() uint64 {
		var out bytes.Buffer
		code := run(context.Background(), []string{"-acquire", "job", "-endpoints", a + "," + b, "-ttl", "500ms",
			"-timeout", "20s", "-log-level", "error"}, &out, true)
		require.Equal(t, 0, code)
		tok, err := strconv.ParseUint(strings.TrimSpace(out.String()), 10, 64)
		require.NoError(t, err)
		return tok
	}
	t1 := take()
	t2 := take()
	require.Greater(t, t2, t1)
	stopA()
	require.Equal(t, 0, <-codeA)
	t3 := take()
	require.Greater(t, t3, t2)
	stopB()
	require.Equal(t, 0, <-codeB)
	require.Equal(t, 2, run(context.Background(), []string{"-no-such-flag"}, &bytes.Buffer{}, true))
	require.Equal(t, 2, run(context.Background(), []string{"-id", "bad id"}, &bytes.Buffer{}, true))
}
