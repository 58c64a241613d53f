// Package proxytest holds what the tests of paaskit's HTTP forwarders
// (internal/evproxy, internal/connproxy, balancer, runner) share: real
// TCP backends on loopback, a well-behaved one and the hostile ones
// every path must survive, and the raw client calls those tests make.
// The hostile inputs themselves are internal/http1/http1test's. It is
// imported only by tests: its helpers fail the test they are given.
package proxytest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Backend serves each connection to a new loopback TCP listener with fn,
// on a goroutine of its own (fn's return closes the connection), and
// returns the listener's address. When the test ends the listener
// closes and Backend waits for fn's goroutines.
func Backend(t testing.TB, fn func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fn(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String()
}

// ReadRequest reads one request and drops its body.
func ReadRequest(br *bufio.Reader) (*http.Request, error) {
	r, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, r.Body)
	return r, nil
}

// CountOK is a backend's connection handler (for Backend) that answers
// every request "ok" (its body read and dropped) and counts the requests
// in seen: a smuggling test checks that a refused request reached no
// node.
func CountOK(seen *atomic.Int64) func(c net.Conn, br *bufio.Reader) {
	return func(c net.Conn, br *bufio.Reader) {
		for {
			if _, err := ReadRequest(br); err != nil {
				return
			}
			seen.Add(1)
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
		}
	}
}

// BadChunked is a backend that answers a request for /bad with a 200
// whose chunked body, sent with the head, is bad (one of
// http1test.BadChunkedResponses), and any other request with the number
// of its connection (1 for the first one accepted): a test checks that
// the next request after a 502 was served on a fresh connection. onBad,
// if set, is told the number of each connection that sent a bad body.
// With oneAnswer a connection closes after its first good answer (a
// test whose forwarder is never stopped keeps no idle one open).
func BadChunked(t testing.TB, bad string, onBad func(conn string), oneAnswer bool) string {
	var conns atomic.Int64
	return Backend(t, func(c net.Conn, br *bufio.Reader) {
		n := strconv.FormatInt(conns.Add(1), 10)
		for {
			r, err := ReadRequest(br)
			if err != nil {
				return
			}
			if r.URL.Path == "/bad" {
				if onBad != nil {
					onBad(n)
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+bad)
				continue
			}
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(n), n)
			if oneAnswer {
				return
			}
		}
	})
}

// CutChunked is a backend that answers a request for /ok with "ok", and
// any other with a chunked 200 whose first chunk ("good") comes with the
// head and whose bad rest comes 100 ms later, once the head was relayed:
// the forwarder can no longer answer 502 and must cut the client.
func CutChunked(t testing.TB, bad string) string {
	return Backend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			r, err := ReadRequest(br)
			if err != nil {
				return
			}
			if r.URL.Path == "/ok" {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ngood\r\n")
			time.Sleep(100 * time.Millisecond) // the head is relayed before the rest comes
			_, _ = io.WriteString(c, bad)
		}
	})
}

// Dial connects to addr, with a 20 s deadline, closed when the test
// ends.
func Dial(t testing.TB, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c, bufio.NewReader(c)
}

// ReadBody reads one response and its whole body.
func ReadBody(t testing.TB, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

// RoundTrip writes req on c, with a fresh 20 s deadline, and reads the
// response and its whole body from br.
func RoundTrip(t testing.TB, c net.Conn, br *bufio.Reader, req string) (*http.Response, string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_, err := io.WriteString(c, req)
	require.NoError(t, err)
	return ReadBody(t, br)
}

// CutBody reads one response after req is written on c and checks that
// it is a 200 whose body ends in an error: a cut body is never taken
// for a whole one.
func CutBody(t testing.TB, c net.Conn, br *bufio.Reader, req string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_, err := io.WriteString(c, req)
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.Error(t, err, "a cut body read as whole (%q)", b)
}
