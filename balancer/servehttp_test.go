package balancer

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/http1/http1test"
	"github.com/paaskit/paaskit/internal/proxyproto"
	"github.com/paaskit/paaskit/internal/proxytest"
	"github.com/stretchr/testify/require"
)

// startHandler serves a Proxy (not Run) through its ServeHTTP from a
// net/http server and returns the server's address.
func startHandler(t *testing.T, cfg Config) (*Proxy, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	p, err := New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv.Listener.Addr().String()
}

func dialAddr(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

// On ServeHTTP's path net/http reads the client's bytes. Each smuggling
// case, and a PROXY header (no source is trusted there), is refused by
// net/http or by the strict parser under it with a 4xx or 5xx, and
// reaches no node (but the broken chunked bodies, whose head the node may
// see); what net/http takes (obs-fold unfolded, chunked winning over
// Content-Length, a bare LF, an absolute target, chunked in HTTP/1.0)
// reaches the node as one request, and the connection stays in step.
func TestServeHTTPRefusesSmuggling(t *testing.T) {
	var seen atomic.Int64
	addr := rawBackend(t, proxytest.CountOK(&seen))
	_, front := startHandler(t, Config{Table: table(t, map[string]string{"a": addr}, map[string]string{"*": ""})})
	cases := map[string]string{
		"PROXY v1": string(proxyproto.AppendV1(nil, netip.MustParseAddrPort("203.0.113.9:1"), netip.MustParseAddrPort("127.0.0.1:80"))) + "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"PROXY v2": string(proxyproto.AppendV2(nil, netip.MustParseAddrPort("203.0.113.9:1"), netip.MustParseAddrPort("127.0.0.1:80"), nil)) + "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
	}
	for name, raw := range http1test.SmugglingRequests {
		cases[name] = raw
	}
	names := make([]string, 0, len(cases))
	for name := range cases {
		names = append(names, name)
	}
	// Those whose body breaks may reach the node after their answer:
	// last, so that the counts of the others are exact.
	sort.Slice(names, func(i, j int) bool {
		ci, cj := strings.Contains(names[i], "chunk"), strings.Contains(names[j], "chunk")
		return !ci && cj || ci == cj && names[i] < names[j]
	})
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			before := seen.Load()
			rc := dialAddr(t, front)
			rc.send(cases[name])
			resp, body := rc.response("POST")
			if resp.StatusCode >= 400 {
				if !strings.Contains(name, "chunk") {
					require.Equal(t, before, seen.Load(), "%d %q: a refused request reached the node", resp.StatusCode, body)
				}
				return
			}
			require.False(t, strings.HasPrefix(name, "PROXY"), "a PROXY header was taken")
			require.Equal(t, "ok", body)
			require.Equal(t, before+1, seen.Load(), "one request reached the node")
			if !resp.Close {
				rc.send("GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
				_, body = rc.response("GET")
				require.Equal(t, "ok", body)
				require.Equal(t, before+2, seen.Load())
			}
		})
	}
}

// A chunked response broken in what came with its head answers 502 on
// ServeHTTP's path, the node connection is not reused, and the client's
// connection is not poisoned: the next request on it is served.
func TestServeHTTPMalformedChunkedResponseIs502(t *testing.T) {
	for name, bad := range http1test.BadChunkedResponses {
		t.Run(name, func(t *testing.T) {
			// One answer on the fresh connection is all the test asks;
			// closing it keeps the balancer's idle pool from holding the
			// backend's handler until its deadline.
			addr := proxytest.BadChunked(t, bad, nil, true)
			_, front := startHandler(t, Config{Table: table(t, map[string]string{"a": addr}, map[string]string{"*": ""})})
			rc := dialAddr(t, front)
			rc.send("GET /bad HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, _ := rc.response("GET")
			require.Equal(t, 502, resp.StatusCode)
			require.False(t, resp.Close)
			rc.send("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, body := rc.response("GET")
			require.Equal(t, 200, resp.StatusCode)
			require.Equal(t, "2", body, "served on a fresh node connection")
		})
	}
}

// A chunked response that breaks after its head was written aborts the
// client connection on ServeHTTP's path (never a cut body read as whole).
func TestServeHTTPMalformedChunkedResponseLaterCutsTheClient(t *testing.T) {
	for name, bad := range http1test.BadChunkedResponses {
		t.Run(name, func(t *testing.T) {
			addr := proxytest.CutChunked(t, bad)
			_, front := startHandler(t, Config{Table: table(t, map[string]string{"a": addr}, map[string]string{"*": ""})})
			rc := dialAddr(t, front)
			proxytest.CutBody(t, rc.c, rc.br, "GET /bad HTTP/1.1\r\nHost: x\r\n\r\n")
		})
	}
}

// The default body limit holds on ServeHTTP's path: a Content-Length
// over 100 MB is answered 413 with a close, before a byte of it is read.
func TestServeHTTPDefaultBodyLimit(t *testing.T) {
	var reached atomic.Int32
	a := addrOf(backendServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) })))
	_, front := startHandler(t, Config{Table: table(t, map[string]string{"a": a}, map[string]string{"*": ""})})
	rc := dialAddr(t, front)
	rc.send(fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 100<<20+1))
	resp, _ := rc.response("POST")
	require.Equal(t, 413, resp.StatusCode)
	require.True(t, resp.Close)
	require.True(t, rc.closedByPeer())
	require.Zero(t, reached.Load())
}

// A panicking OnMiss answers 502 on ServeHTTP's path too (which now runs
// the miss hook), is counted, and the next request is served.
func TestServeHTTPPanickingOnMissIs502(t *testing.T) {
	var calls atomic.Int32
	a := missOnPath(t)
	p, front := startHandler(t, Config{
		Table: table(t, map[string]string{"a": a}, map[string]string{"*": ""}),
		OnMiss: func(context.Context, Miss) error {
			calls.Add(1)
			panic("OnMiss bug")
		},
	})
	rc := dialAddr(t, front)
	for i := 0; i < 3; i++ {
		rc.send("GET /miss HTTP/1.1\r\nHost: x.example.com\r\n\r\n")
		resp, _ := rc.response("GET")
		require.Equal(t, 502, resp.StatusCode)
	}
	require.EqualValues(t, 3, calls.Load())
	require.EqualValues(t, 3, p.ForwarderStats().HookPanics)
	rc.send("GET / HTTP/1.1\r\nHost: x.example.com\r\n\r\n")
	resp, body := rc.response("GET")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "fine", body)
}
