package balancer

import "net/http"

// ServeHTTP routes r by its Host and forwards it like the proxy's own
// server does, for embedding the balancer in a net/http server (behind
// the embedder's TLS, over HTTP/2, or next to other handlers): the same
// goroutine forwarder (internal/connproxy) with the same strict codec
// (internal/http1) serves it, so the table, the pick with ejection and
// bounded load, the in-flight counts, the miss hook and its retry, the
// retries on another node, MaxBodyBytes (413), the fields added and
// dropped and the 502 for a malformed response are those of Run's
// path. The client connection is net/http's: its framing, keep-alive,
// timeouts and Expect: 100-continue stay with the embedder's server,
// and a response whose body breaks after its head was written aborts
// it (panic(http.ErrAbortHandler)). Run need not be running; without
// it ejected nodes are not probed back. After Run returned, requests
// are still served, on fresh node connections.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.fwd.ServeHTTP(w, r)
}
