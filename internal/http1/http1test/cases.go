// Package http1test holds the hostile HTTP/1.1 inputs that every
// forwarder in paaskit (the balancer's and the runner's, on the event
// loops and on the goroutine path) must refuse, so that their tests run
// the same cases, and the helpers those tests share (ServedAndClosed).
// It has no tests of its own: each forwarder's test sends these and
// checks its answer.
package http1test

import "strings"

// SmugglingRequests are requests a strict proxy must answer with 400
// and close, by name. Each is sent on a fresh connection and uses
// "Host: x" where it has a valid Host (a test for a forwarder that
// routes by host replaces it). Those whose name holds "chunk" are
// refused only once their body is read: the target may have seen the
// head.
var SmugglingRequests = map[string]string{
	"CL and TE":           "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"TE and CL":           "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
	"differing CL":        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	"CL list":             "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
	"CL sign":             "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
	"TE chunked,identity": "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
	"TE twice":            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"TE xchunked":         "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
	"TE in 1.0":           "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"obs-fold":            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
	"space before colon":  "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
	"bare LF":             "GET / HTTP/1.1\nHost: x\n\n",
	"bare CR":             "GET / HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n",
	"no Host":             "GET / HTTP/1.1\r\n\r\n",
	"two Hosts":           "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
	"bad Host":            "GET / HTTP/1.1\r\nHost: x y\r\n\r\n",
	"absolute form":       "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
	"HTTP/2 version":      "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
	"NUL in value":        "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
	"CONNECT":             "CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
	"bad chunk size":      "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
	"chunk without CRLF":  "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
	"leading empty line":  "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
	"space in target":     "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
	"Expect not continue": "GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n",
}

// BadChunkedResponses are chunked response bodies a target (a hostile
// app) may send that a forwarder must refuse with 502 when they come with
// the response head: a bad chunk size, no CRLF after chunk data, an
// oversized trailer section.
var BadChunkedResponses = map[string]string{
	"bad size":          "5\r\nhello\r\n+a\r\n0123456789\r\n0\r\n\r\n",
	"missing CRLF":      "5\r\nhelloXY0\r\n\r\n",
	"oversized trailer": "5\r\nhello\r\n0\r\nX-Big: " + strings.Repeat("t", 9000) + "\r\n\r\n",
}
