package runner

import (
	"github.com/paaskit/paaskit/internal/http1"

	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseRequestHeadAcceptsPlainRequests(t *testing.T) {
	var rq reqHead
	h := []byte("GET /a?b=c HTTP/1.1\r\nHost: Blog.Example:8080\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n")
	require.True(t, parseRequestHead(h, &rq))
	require.Equal(t, "Blog.Example:8080", string(rq.host))
	host, ok := http1.NormalizeHost(nil, rq.host)
	require.True(t, ok)
	require.Equal(t, "blog.example", string(host))
	require.Zero(t, rq.contentLength)
	require.False(t, rq.close)

	h = []byte("POST / HTTP/1.1\r\nhost: a\r\nContent-Length: 12\r\nConnection: close\r\n\r\n")
	require.True(t, parseRequestHead(h, &rq))
	require.EqualValues(t, 12, rq.contentLength)
	require.True(t, rq.close)

	h = []byte("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
	require.True(t, parseRequestHead(h, &rq))
	require.True(t, rq.head)
}

// The head sent to the app: hop-by-hop fields (and those Connection
// names) dropped, X-Forwarded-For extended, the balancer's
// X-Forwarded-Proto kept.
func TestWriteRequestHead(t *testing.T) {
	var rq reqHead
	h := []byte("POST /p?q HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nTE: trailers\r\n" +
		"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nContent-Length: 2\r\nKeep-Alive: 5\r\nAccept: */*\r\n\r\n")
	require.True(t, parseRequestHead(h, &rq))
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	writeRequestHead(w, &rq, "127.0.0.1")
	require.NoError(t, w.Flush())
	require.Equal(t, "POST /p?q HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\nContent-Length: 2\r\n"+
		"X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n\r\n", out.String())
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(out.String() + "ok")))
	require.NoError(t, err)
	require.EqualValues(t, 2, req.ContentLength)

	h = []byte("GET / HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n")
	require.True(t, parseRequestHead(h, &rq))
	require.True(t, rq.close)
	out.Reset()
	writeRequestHead(w, &rq, "")
	require.NoError(t, w.Flush())
	require.Equal(t, "GET / HTTP/1.1\r\nhost: b\r\n\r\n", out.String())
}

func TestParseRequestHeadSendsAnythingElseToNetHTTP(t *testing.T) {
	for name, h := range map[string]string{
		"http/1.0":           "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
		"no host":            "GET / HTTP/1.1\r\nX: y\r\n\r\n",
		"two hosts":          "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"chunked":            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"cl and te":          "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
		"two lengths":        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
		"length list":        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n",
		"connect":            "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
		"bad length":         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
		"upgrade":            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"expect":             "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
		"obs-fold":           "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n",
		"bare lf":            "GET / HTTP/1.1\nHost: a\n\n",
		"bare cr":            "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
		"space in name":      "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
		"ctl in value":       "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n",
		"absolute target":    "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"space in target":    "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
		"empty host":         "GET / HTTP/1.1\r\nHost: \r\n\r\n",
		"header without sep": "GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n",
	} {
		var rq reqHead
		require.False(t, parseRequestHead([]byte(h), &rq), name)
	}
}

// FuzzParseRequestHead checks the fast path against net/http: whatever the
// fast path accepts, net/http reads the same way (same host, same body
// length), so the two front paths can never disagree on framing.
func FuzzParseRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a.example:80\r\nContent-Length: 5\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"GET / HTTP/1.1\r\nhOsT: a\r\nX:\t y \r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, h []byte) {
		var rq reqHead
		end := bytes.Index(h, crlfcrlf)
		if end < 0 {
			return
		}
		h = h[:end+4]
		if !parseRequestHead(h, &rq) {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(append(h, bytes.Repeat([]byte("x"), int(min(rq.contentLength, 1<<16)))...))))
		if err != nil {
			t.Fatalf("fast path accepted what net/http refuses (%v): %q", err, h)
		}
		if req.Host != string(rq.host) {
			t.Fatalf("host: fast path %q, net/http %q: %q", rq.host, req.Host, h)
		}
		if req.ContentLength != rq.contentLength {
			t.Fatalf("length: fast path %d, net/http %d: %q", rq.contentLength, req.ContentLength, h)
		}
		if len(req.TransferEncoding) > 0 {
			t.Fatalf("fast path accepted a transfer coding: %q", h)
		}
	})
}

func TestParseResponseHead(t *testing.T) {
	var rs respHead
	rs.contentLength = -1
	out, interim, err := parseResponseHead([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: b\r\n\r\n"), false, &rs, nil, new(http1.Head))
	require.NoError(t, err)
	require.False(t, interim)
	require.Equal(t, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n", string(out), "hop-by-hop headers dropped")
	require.EqualValues(t, 5, rs.contentLength)

	// Fields named by Connection are hop-by-hop too; framing is normalised.
	rs = respHead{contentLength: -1}
	out, _, err = parseResponseHead([]byte("HTTP/1.1 201 Created\r\nConnection: x-secret\r\nX-Secret: s\r\nTransfer-Encoding: Chunked\r\nTrailer: x\r\nX-B: c\r\n\r\n"), false, &rs, nil, new(http1.Head))
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-B: c\r\n", string(out))
	require.True(t, rs.chunked)

	rs = respHead{contentLength: -1}
	_, _, err = parseResponseHead([]byte("HTTP/1.0 200 OK\r\n\r\n"), false, &rs, nil, new(http1.Head))
	require.NoError(t, err)
	require.True(t, rs.close && rs.untilEOF)

	rs = respHead{contentLength: -1}
	_, _, err = parseResponseHead([]byte("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"), false, &rs, nil, new(http1.Head))
	require.NoError(t, err)
	require.True(t, rs.noBody)

	rs = respHead{contentLength: -1}
	_, interim, err = parseResponseHead([]byte("HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"), false, &rs, nil, new(http1.Head))
	require.NoError(t, err)
	require.True(t, interim)

	for _, bad := range []string{
		"HTTP/2 200 OK\r\n\r\n",
		"HTTP/1.1 2x0 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"HTTP/1.1 200 OK\r\n folded\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"garbage\r\n\r\n",
	} {
		rs = respHead{contentLength: -1}
		_, _, err := parseResponseHead([]byte(bad), false, &rs, nil, new(http1.Head))
		require.ErrorIs(t, err, errBadResponse, bad)
	}
}

// copyChunked relays an app's chunked body re-encoded by the shared
// codec: extensions dropped, trailers checked and passed on, nothing
// read past the body; a malformed body is errBadResponse.
func TestCopyChunkedReencodesTheBody(t *testing.T) {
	body := "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: x\r\n\r\nNEXT"
	br := bufio.NewReader(strings.NewReader(body))
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	require.NoError(t, copyChunked(bw, br))
	require.NoError(t, bw.Flush())
	require.Equal(t, "5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: x\r\n\r\n", out.String())
	rest, _ := br.ReadString(0)
	require.Equal(t, "NEXT", rest, "stops exactly at the end of the body")

	for _, bad := range []string{
		"zz\r\n", "+a\r\n0123456789\r\n0\r\n\r\n", "5\r\nhelloXY0\r\n\r\n",
		"0\r\nX: " + strings.Repeat("v", 9000) + "\r\n\r\n", "0\r\nContent-Length: 5\r\n\r\n",
	} {
		br = bufio.NewReader(strings.NewReader(bad))
		require.ErrorIs(t, copyChunked(bufio.NewWriter(&out), br), errBadResponse, "%q", bad)
	}
}

// chunkedBody, the net/http path's reader, decodes through any size of
// read.
func TestChunkedBodyReads(t *testing.T) {
	for _, size := range []int{1, 2, 3, 100} {
		b := &chunkedBody{br: bufio.NewReaderSize(strings.NewReader("5;e=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT"), 16)}
		var got []byte
		p := make([]byte, size)
		for {
			n, err := b.Read(p)
			got = append(got, p[:n]...)
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
		}
		require.Equal(t, "hello world", string(got), "reads of %d", size)
	}
	b := &chunkedBody{br: bufio.NewReader(strings.NewReader("5\r\nhelloXY"))}
	_, err := io.ReadAll(b)
	require.ErrorIs(t, err, errBadResponse)
}
