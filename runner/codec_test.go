package runner_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/http1/http1test"
	"github.com/paaskit/paaskit/internal/proxytest"
	"github.com/paaskit/paaskit/runner"
	"github.com/stretchr/testify/require"
)

// frontConn dials the front for one exchange.
func frontConn(t *testing.T, e *env) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", e.front)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
	return c, bufio.NewReader(c)
}

// closedByPeer reports whether the front closed the connection.
func closedByPeer(br *bufio.Reader) bool {
	_, err := br.ReadByte()
	return err != nil
}

// The balancer's request-smuggling cases against the node front, on the
// event loops (warm requests) and on the goroutine path: each gets a 400
// and a close, and none reaches the app (but the chunked bodies, whose
// head it may have seen before the body broke). The apps are hostile
// tenants and the front is all that stands between them and each other's
// requests on a shared connection.
func TestFrontRefusesSmuggling(t *testing.T) {
	for _, f := range fronts[:2] { // Serve's; net/http parses for itself
		t.Run(f.name, func(t *testing.T) {
			e := newEnvFront(t, f.tweak, f.handler)
			e.put(spec("smuggle"))
			require.Equal(t, "hello smuggle\n", e.mustGet("smuggle.example", "/"))
			count := func() string { return e.mustGet("smuggle.example", "/count") }
			for name, raw := range http1test.SmugglingRequests {
				raw = strings.ReplaceAll(raw, "Host: x\r", "Host: smuggle.example\r")
				before := count()
				c, br := frontConn(t, e)
				_, err := io.WriteString(c, raw)
				require.NoError(t, err)
				resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
				require.NoError(t, err, name)
				_, _ = io.ReadAll(resp.Body)
				require.Equal(t, 400, resp.StatusCode, "%s: %q", name, raw)
				require.True(t, resp.Close, name)
				require.True(t, closedByPeer(br), "%s: the connection is closed", name)
				c.Close()
				if !strings.Contains(name, "chunk") {
					require.Equal(t, before, count(), "%s: the app saw a refused request", name)
				}
			}
		})
	}
}

// The same smuggling cases against Runner.ServeHTTP: net/http reads
// the client's bytes there, and each case is refused (by net/http or by
// the strict parser under it) before it reaches the app, but the
// broken chunked bodies, whose head the app may see; what net/http
// takes (obs-fold unfolded, chunked winning over Content-Length, a bare
// LF, an absolute target, chunked in HTTP/1.0) reaches the app as
// exactly one request, and the client's connection stays in step: the
// next request on it is the next one the app sees.
func TestFrontServeHTTPRefusesSmuggling(t *testing.T) {
	e := newEnvFront(t, nil, true)
	e.put(spec("smuggle"))
	require.Equal(t, "hello smuggle\n", e.mustGet("smuggle.example", "/"))
	count := func() int {
		n, err := strconv.Atoi(e.mustGet("smuggle.example", "/count"))
		require.NoError(t, err)
		return n
	}
	names := make([]string, 0, len(http1test.SmugglingRequests))
	for name := range http1test.SmugglingRequests {
		names = append(names, name)
	}
	// Those whose body breaks may reach the app after their answer:
	// last, so that the counts of the others are exact.
	sort.Slice(names, func(i, j int) bool {
		ci, cj := strings.Contains(names[i], "chunk"), strings.Contains(names[j], "chunk")
		return !ci && cj || ci == cj && names[i] < names[j]
	})
	refused := 0
	for _, name := range names {
		raw := strings.ReplaceAll(http1test.SmugglingRequests[name], "Host: x\r", "Host: smuggle.example\r")
		before := count()
		c, br := frontConn(t, e)
		_, err := io.WriteString(c, raw)
		require.NoError(t, err)
		resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
		require.NoError(t, err, name)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 400 {
			refused++
			if !strings.Contains(name, "chunk") {
				require.Equal(t, before, count(), "%s: %d %q: the app saw a refused request", name, resp.StatusCode, body)
			}
			c.Close()
			continue
		}
		t.Logf("%s: net/http took it", name)
		require.Equal(t, 200, resp.StatusCode, name)
		require.Equal(t, before+1, count(), "%s: one request reached the app", name)
		if !resp.Close {
			_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: smuggle.example\r\n\r\n")
			require.NoError(t, err)
			resp, err = http.ReadResponse(br, nil)
			require.NoError(t, err, name)
			body, err = io.ReadAll(resp.Body)
			require.NoError(t, err, name)
			require.Equal(t, "hello smuggle\n", string(body), name)
			require.Equal(t, before+2, count(), "%s: the next request on the connection is the next the app sees", name)
		}
		c.Close()
	}
	require.Greater(t, refused, len(names)/2, "most cases are refused on this path too")
}

// A chunked response from an app with a bad size, a missing CRLF or an
// oversized trailer answers the client 502, on every front, and the
// client's connection is closed with it or kept in step;
// the app's connection is not reused (the test app answers "reused" on
// it from then on) and the next request is served.
func TestFrontAnswers502ForMalformedChunkedResponses(t *testing.T) {
	for _, f := range fronts {
		t.Run(f.name, func(t *testing.T) {
			e := newEnvFront(t, f.tweak, f.handler)
			e.put(spec("badchunks"))
			require.Equal(t, "hello badchunks\n", e.mustGet("badchunks.example", "/"))
			for kind := range http1test.BadChunkedResponses {
				c, br := frontConn(t, e)
				_, err := io.WriteString(c, "GET /rawchunked?kind="+url.QueryEscape(kind)+" HTTP/1.1\r\nHost: badchunks.example\r\n\r\n")
				require.NoError(t, err)
				resp, err := http.ReadResponse(br, nil)
				require.NoError(t, err, kind)
				body, _ := io.ReadAll(resp.Body)
				require.Equal(t, 502, resp.StatusCode, "%s: %s", kind, body)
				// The client's connection is not poisoned: closed with
				// the 502 (Serve's fronts), or kept and in step (net/http
				// owns it: the next request on it is served whole).
				if f.handler {
					require.False(t, resp.Close, kind)
					_, next := proxytest.RoundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: badchunks.example\r\n\r\n")
					require.Equal(t, "hello badchunks\n", next, "%s: the next request on the client's connection", kind)
				} else {
					require.True(t, resp.Close, kind)
					require.True(t, closedByPeer(br), "%s: the connection is closed", kind)
				}
				c.Close()
				for k := 0; k < 3; k++ {
					require.Equal(t, "hello badchunks\n", e.mustGet("badchunks.example", "/"), "%s: the broken connection was reused", kind)
				}
			}
		})
	}
}

// A chunked body that breaks after the front relayed its head cannot be
// answered 502 any more: on every front the client sees the cut (an
// error reading the body), never a short body that looks whole.
func TestFrontCutsTheClientWhenAChunkedBodyBreaksLater(t *testing.T) {
	for _, f := range fronts {
		t.Run(f.name, func(t *testing.T) {
			e := newEnvFront(t, f.tweak, f.handler)
			e.put(spec("latebreak"))
			require.Equal(t, "hello latebreak\n", e.mustGet("latebreak.example", "/"))
			for kind := range http1test.BadChunkedResponses {
				c, br := frontConn(t, e)
				t.Logf("kind %s", kind)
				proxytest.CutBody(t, c, br, "GET /rawchunked?late=1&kind="+url.QueryEscape(kind)+" HTTP/1.1\r\nHost: latebreak.example\r\n\r\n")
				c.Close()
				require.Equal(t, "hello latebreak\n", e.mustGet("latebreak.example", "/"), "%s: the broken connection was reused", kind)
			}
		})
	}
}

// A connection the loops handed off for a chunked upload (one larger than
// the loops buffer: a small one sent whole stays on the loops) comes back
// to them once the upload was answered: the GETs that follow on it are
// served by a loop (FrontStats), not by the goroutine path.
func TestChunkedUploadThenGETsReturnToTheLoop(t *testing.T) {
	e := newEnv(t, func(c *runner.Config) { c.EventLoops = 1 }) // loops on in every run of the suite
	e.put(spec("resume"))
	require.Equal(t, "hello resume\n", e.mustGet("resume.example", "/"))
	// The cold request's connection was handed off too (no instance
	// ran); it goes back to the loops just after its answer.
	require.Eventually(t, func() bool { s := e.r.FrontStats(); return s.Resumed == s.Handoffs }, 10*time.Second, time.Millisecond)
	before := e.r.FrontStats()
	c, br := frontConn(t, e)
	upload := strings.Repeat("u", 32<<10)
	_, err := io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: resume.example\r\nTransfer-Encoding: chunked\r\n\r\n8000\r\n"+upload+"\r\n0\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, 200, resp.StatusCode, "%.200s", body)
	require.Equal(t, "32768 "+upload[:20], strings.TrimSpace(string(body)), "the app saw the whole body (its length and first 20 bytes)")
	for k := 0; k < 3; k++ {
		_, b := proxytest.RoundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: resume.example\r\n\r\n")
		require.Equal(t, "hello resume\n", b)
	}
	after := e.r.FrontStats()
	require.Equal(t, before.Handoffs+1, after.Handoffs, "the upload was handed off")
	require.Equal(t, before.Resumed+1, after.Resumed, "the connection went back to the loops")
	require.Equal(t, before.LoopRequests+3, after.LoopRequests, "the GETs were served by a loop")
}
