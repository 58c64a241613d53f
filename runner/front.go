package runner

import (
	"net/http"
)

// MissHeader is set to "1" on the front's 404 for a host no app serves:
// the balancer's miss hook recognises a node that does not know the site.
const MissHeader = "X-Paaskit-Miss"

// ServeHTTP is the node front for a net/http server: it routes the
// request's Host (case-insensitive, port ignored) to the app's running
// instance over its unix socket, reusing keep-alive connections, and
// starts an instance when none runs. Concurrent requests for a stopped
// app share one start and are all served once it is ready; a request
// whose client goes away stops waiting. A start that fails answers 503
// with a plain message that includes the tail of the app's stderr; an
// unknown host answers 404 with MissHeader set.
//
// net/http reads the client's request; from there it is Serve's
// goroutine forwarder (internal/connproxy) that serves it, with the
// strict internal/http1 codec on the app's side: a malformed response
// head or a chunked body broken in what came with the head answers 502
// (and the app's connection is not reused), fields starting with
// "X-Paaskit-" are dropped from every app response, Config.MaxBodyBytes
// answers 413, and the request counts for the app's usage as on Serve.
// An app response whose body breaks after its head was relayed (a
// malformed chunk, a cut) aborts the client connection with
// panic(http.ErrAbortHandler), which net/http's server handles quietly,
// so the client never takes a cut body for a whole one.
func (r *Runner) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.httpFwd.ServeHTTP(w, req)
}
