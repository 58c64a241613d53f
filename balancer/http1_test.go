package balancer

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseRequestHeadAccepts(t *testing.T) {
	var h head
	raw := "POST /a?b=c HTTP/1.1\r\nHost: Example.com:80\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nX-Keep:  spaced value \t\r\n\r\n"
	require.NoError(t, parseRequestHead([]byte(raw), &h, 100, ""))
	require.Equal(t, "POST", string(h.method))
	require.Equal(t, "/a?b=c", string(h.target))
	require.Equal(t, "Example.com:80", string(h.host))
	require.EqualValues(t, 5, h.contentLength)
	require.True(t, h.connKeepAlive)
	kept := map[string]string{}
	for _, f := range h.fields {
		if !f.drop {
			kept[string(f.name)] = string(f.value)
		}
	}
	require.Equal(t, map[string]string{"Host": "Example.com:80", "X-Keep": "spaced value"}, kept)

	require.NoError(t, parseRequestHead([]byte("GET / HTTP/1.0\r\n\r\n"), &h, 100, ""))
	require.Nil(t, h.host)
	require.NoError(t, parseRequestHead([]byte("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), &h, 100, ""))
	require.NoError(t, parseRequestHead([]byte("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"), &h, 100, ""))
	require.True(t, h.chunked)
}

func TestParseResponseHead(t *testing.T) {
	var h head
	require.NoError(t, parseResponseHead([]byte("HTTP/1.1 404 Not Found\r\nX-Paaskit-Miss: 1\r\nContent-Length: 0\r\n\r\n"), &h, 100, "x-paaskit-miss"))
	require.Equal(t, 404, h.status)
	require.True(t, h.missMark)
	require.NoError(t, parseResponseHead([]byte("HTTP/1.1 204\r\n\r\n"), &h, 100, ""))
	require.Equal(t, 204, h.status)
	for _, bad := range []string{
		"HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 abc OK\r\n\r\n", "HTTP/2 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n",
	} {
		require.ErrorIs(t, parseResponseHead([]byte(bad), &h, 100, ""), ErrMalformed, "%q", bad)
	}
}

func TestParseChunkSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "a": 10, "FF": 255, "10;ext=1": 16, "5 ;x": 5} {
		n, err := parseChunkSize([]byte(in))
		require.NoError(t, err, in)
		require.Equal(t, want, n, in)
	}
	for _, in := range []string{"", "g", "-1", "0x10", "1234567890abcdef0", ";x"} {
		_, err := parseChunkSize([]byte(in))
		require.Error(t, err, in)
	}
}

// FuzzParseRequest checks the parser differentially against net/http's
// request reader: whatever this parser accepts, net/http accepts too, with
// the same method, target, Host and body framing. (The converse need not
// hold: this parser is stricter.) Seeds live in testdata/fuzz.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a.b\r\nContent-Length: 3\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a.b\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a.b\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		end := bytes.Index(data, []byte("\r\n\r\n"))
		if end < 0 {
			return
		}
		raw := data[:end+4]
		var h head
		if err := parseRequestHead(raw, &h, 100, ""); err != nil {
			return
		}
		if h.host != nil {
			if _, ok := normalizeHost(nil, h.host); !ok {
				return // answered 400 by the proxy
			}
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			t.Fatalf("accepted %q, net/http refuses it: %v", raw, err)
		}
		if req.Method != string(h.method) || req.RequestURI != string(h.target) {
			t.Fatalf("%q: method/target %s %s, net/http %s %s", raw, h.method, h.target, req.Method, req.RequestURI)
		}
		if h.host != nil && req.Host != string(h.host) {
			t.Fatalf("%q: host %q, net/http %q", raw, h.host, req.Host)
		}
		chunked := len(req.TransferEncoding) == 1 && req.TransferEncoding[0] == "chunked"
		if chunked != h.chunked {
			t.Fatalf("%q: chunked %v, net/http %v", raw, h.chunked, req.TransferEncoding)
		}
		if !h.chunked {
			want := h.contentLength
			if want < 0 {
				want = 0
			}
			if req.ContentLength != want {
				t.Fatalf("%q: content length %d, net/http %d", raw, h.contentLength, req.ContentLength)
			}
		}
		if h.connClose != req.Close && h.minor == 1 {
			t.Fatalf("%q: close %v, net/http %v", raw, h.connClose, req.Close)
		}
		if strings.Contains(string(raw), "\r\n ") || strings.Contains(string(raw), "\r\n\t") {
			t.Fatalf("%q: obs-fold accepted", raw)
		}
	})
}

// FuzzChunkedBody checks the chunked decoder never panics and that what it
// re-encodes decodes to the same bytes with net/http's reader.
func FuzzChunkedBody(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("3;x=y\r\nabc\r\n0\r\nTrailer: v\r\n\r\n"))
	f.Add([]byte("zz\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		src := &connReader{c: nil, buf: append(append([]byte(nil), data...), make([]byte, 16)...), w: len(data), max: 1 << 16}
		src.c = eofConn{}
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		_, _, err := copyChunked(w, src, true, 1<<20)
		if err != nil {
			return
		}
		_ = w.Flush()
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + out.String())))
		require.NoError(t, err)
		var got bytes.Buffer
		_, err = got.ReadFrom(req.Body)
		require.NoError(t, err, "re-encoded %q from %q", out.String(), data)
	})
}
