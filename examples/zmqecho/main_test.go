package main

import (
	"bytes"
	"context"
	"net"
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

// TestServeAndCall runs two servers and calls through the client mode with
// a dead endpoint first in the list; then stops the servers cleanly.
func TestServeAndCall(t *testing.T) {
	t.Setenv("ZMQECHO_SECRET", "a test secret of enough bytes")
	ctx, cancel := context.WithCancel(context.Background())
	a, b := freeEndpoint(t), freeEndpoint(t)
	codes := make(chan int, 2)
	for _, ep := range []string{a, b} {
		go func() { codes <- run(ctx, []string{"-bind", ep, "-log-level", "warn"}, &bytes.Buffer{}, true) }()
	}
	var out bytes.Buffer
	code := run(context.Background(), []string{"-call", freeEndpoint(t) + "," + a + "," + b, "-log-level", "error", `{"hi":[1,2]}`}, &out, true)
	require.Equal(t, 0, code)
	require.JSONEq(t, `{"hi":[1,2]}`, out.String())

	// A client with another secret gets nothing back.
	t.Setenv("ZMQECHO_SECRET", "another secret of enough bytes")
	out.Reset()
	code = run(context.Background(), []string{"-call", a, "-timeout", "300ms", "-log-level", "error", `1`}, &out, true)
	require.Equal(t, 1, code)
	require.Empty(t, out.String())

	cancel()
	require.Equal(t, 0, <-codes)
	require.Equal(t, 0, <-codes)
	require.Equal(t, 2, run(context.Background(), []string{"-no-such-flag"}, &out, true))
}
