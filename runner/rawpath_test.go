package runner_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The warm path serves requests inside the poller wait; what it cannot
// finish there (a head or body still arriving) it finishes outside.
func TestFrontWarmPathSplitHeadsAndLateBodies(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("split"))
	require.Equal(t, "hello split\n", e.mustGet("split.example", "/"))
	c, err := net.Dial("tcp", e.front)
	require.NoError(t, err)
	defer c.Close()
	br := bufio.NewReader(c)
	read := func() (int, string) {
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	for round := 0; round < 3; round++ {
		// A head in pieces.
		for _, part := range []string{"GET / HT", "TP/1.1\r\nHost: spl", "it.example\r\n", "\r\n"} {
			_, err = io.WriteString(c, part)
			require.NoError(t, err)
		}
		code, body := read()
		require.Equal(t, 200, code)
		require.Equal(t, "hello split\n", body)
		// A body after its head, in pieces.
		_, err = io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: split.example\r\nContent-Length: 11\r\n\r\n")
		require.NoError(t, err)
		_, err = io.WriteString(c, "hello")
		require.NoError(t, err)
		_, err = io.WriteString(c, " world")
		require.NoError(t, err)
		code, body = read()
		require.Equal(t, 200, code)
		require.Equal(t, "11 hello world", body)
		// A head and half its body in one write, the rest later.
		_, err = io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: split.example\r\nContent-Length: 6\r\n\r\nabc")
		require.NoError(t, err)
		_, err = io.WriteString(c, "def")
		require.NoError(t, err)
		code, body = read()
		require.Equal(t, 200, code)
		require.Equal(t, "6 abcdef", body)
	}
	// Many pipelined requests in one write, more than one read's worth.
	var b strings.Builder
	for k := 0; k < 400; k++ {
		b.WriteString("GET / HTTP/1.1\r\nHost: split.example\r\nX-Pad: " + strings.Repeat("p", 40) + "\r\n\r\n")
	}
	go io.WriteString(c, b.String())
	for k := 0; k < 400; k++ {
		code, body := read()
		require.Equal(t, 200, code, "request %d", k)
		require.Equal(t, "hello split\n", body)
	}
}

// Stopping the front while a response streams inside the poller wait
// cuts the client off at once rather than waiting for the stream's end.
func TestServeStopsWhileAResponseStreams(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("long"))
	e.mustGet("long.example", "/")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.r.Serve(ctx, l) }()
	c, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	// 3,000 lines, one per 10 ms: half a minute.
	_, err = io.WriteString(c, "GET /stream?n=3000 HTTP/1.1\r\nHost: long.example\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "line 0\n", line)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return within 15s of cancel with a response streaming")
	}
	_, err = io.Copy(io.Discard, resp.Body)
	require.Error(t, err, "the cut stream must not look complete")
}

// An app that drops its idle keep-alive connections (gunicorn does after
// its keep-alive timeout) leaves the front's pool full of stale ones: a
// request that meets one goes on to a fresh connection, not to the next
// stale one, and no request fails.
func TestStaleIdleConnectionsAreRetriedOnAFreshOne(t *testing.T) {
	for _, f := range fronts {
		handler := f.name
		e := newEnvFront(t, f.tweak, f.handler)
		e.put(spec("stale", "dropidle"))
		require.Equal(t, "hello stale\n", e.mustGet("stale.example", "/"))
		for round := 0; round < 3; round++ {
			// Fill the pool with connections the app then drops.
			errs := make(chan error, 16)
			for k := 0; k < 16; k++ {
				go func() {
					code, body, _ := e.get("stale.example", "/hold?ms=20")
					if code != 200 || body != "held\n" {
						errs <- fmt.Errorf("concurrent request: %d %q", code, body)
						return
					}
					errs <- nil
				}()
			}
			for k := 0; k < 16; k++ {
				require.NoError(t, <-errs)
			}
			for k := 0; k < 16; k++ {
				code, body, _ := e.get("stale.example", "/")
				require.Equal(t, 200, code, "front %s, round %d, request %d: %s", handler, round, k, body)
			}
		}
	}
}

// A request with a body that meets a stale pooled connection is sent again
// on a fresh one when the send itself failed (the app cannot have seen
// it): the first POST after gunicorn dropped its idle keep-alive
// connections must not get a 502.
func TestStaleConnectionRetriesABufferedBody(t *testing.T) {
	for _, f := range fronts {
		t.Run(f.name, func(t *testing.T) { testStaleConnectionRetriesABufferedBody(t, f) })
	}
}

func testStaleConnectionRetriesABufferedBody(t *testing.T, f front) {
	e := newEnvFront(t, f.tweak, f.handler)
	e.put(spec("stalepost", "dropidle"))
	require.Equal(t, "hello stalepost\n", e.mustGet("stalepost.example", "/"))
	c, err := net.Dial("tcp", e.front)
	require.NoError(t, err)
	defer c.Close()
	br := bufio.NewReader(c)
	for k := 0; k < 20; k++ {
		// The app drops the connection each answer came on: the next
		// request meets a stale one in the pool.
		resp, body := rawExchange(t, e, c, br, "POST /echo HTTP/1.1\r\nHost: stalepost.example\r\nContent-Length: 5\r\n\r\nhello", "POST")
		require.Equal(t, 200, resp.StatusCode, "request %d: %s", k, body)
		require.Equal(t, "5 hello", body)
	}
}
