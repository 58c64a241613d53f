package balancer

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"
)

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
		if h.Host != nil {
			if _, ok := normalizeHost(nil, h.Host); !ok {
				return // answered 400 by the proxy
			}
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			t.Fatalf("accepted %q, net/http refuses it: %v", raw, err)
		}
		if req.Method != string(h.Method) || req.RequestURI != string(h.Target) {
			t.Fatalf("%q: method/target %s %s, net/http %s %s", raw, h.Method, h.Target, req.Method, req.RequestURI)
		}
		if h.Host != nil && req.Host != string(h.Host) {
			t.Fatalf("%q: host %q, net/http %q", raw, h.Host, req.Host)
		}
		chunked := len(req.TransferEncoding) == 1 && req.TransferEncoding[0] == "chunked"
		if chunked != h.Chunked {
			t.Fatalf("%q: chunked %v, net/http %v", raw, h.Chunked, req.TransferEncoding)
		}
		if !h.Chunked {
			want := h.ContentLength
			if want < 0 {
				want = 0
			}
			if req.ContentLength != want {
				t.Fatalf("%q: content length %d, net/http %d", raw, h.ContentLength, req.ContentLength)
			}
		}
		if h.ConnClose != req.Close && h.Minor == 1 {
			t.Fatalf("%q: close %v, net/http %v", raw, h.ConnClose, req.Close)
		}
		if strings.Contains(string(raw), "\r\n ") || strings.Contains(string(raw), "\r\n\t") {
			t.Fatalf("%q: obs-fold accepted", raw)
		}
	})
}
