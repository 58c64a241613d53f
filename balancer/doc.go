// Package balancer is paaskit's front door: it takes every HTTP request
// for every hosted site, finds the site's set of backend nodes by the Host
// header, picks one node by a consistent hash of the host, and forwards
// the request to it over a pooled keep-alive connection. In the reference
// platform the nodes are runner nodes (package runner's node front), which
// route the host on to an app instance and start it on demand; the
// balancer learns which nodes exist from a table that examples/balancerd
// reads from a file and that a deployment can equally build from nexus.
//
// # Routing table
//
// A Table maps exact host names, wildcard suffixes ("*.example.com") and an
// optional default ("*") to pools of nodes. Matching ignores case, a port
// and a trailing dot. A Table is immutable; Proxy.SetTable swaps in a new
// one atomically while requests flow (requests already routed finish on
// the old one), and TableConfig.Reuse makes a reload of thousands of nodes
// cheap by sharing unchanged pools. ParseTable reads a small line format
// (TableFormat).
//
// # Why Maglev
//
// Nodes are identified by stable string ids, never by position, and ids
// are sorted before the hash is built, so every balancer given the same
// ids, in any order and at any addresses, picks the same node for every
// host. The default Policy is Maglev (Eisenbud et al., NSDI 2016): each
// pool gets a lookup table of a prime size (65537 slots by default, at
// least 100 per node) filled from per-node permutations of the slots, and a
// host goes to lut[xxhash(host) % size]. Measured here (hash_test.go):
// adding an 11th node to 10 moves 9.7% of 10,000 hosts (ideal 9.1%; the
// modulo policy moves 91%), the most loaded of 10 or 11 nodes carries
// 1.03-1.04x the mean, and a lookup at 100,000 hosts, Host normalization
// included, takes 50-115 ns (BenchmarkLookup; the machine is shared)
// with no allocation, and the table costs about 60 bytes per host. A ring with 100+ points
// a node moves slightly fewer hosts but costs a binary search per request
// and balances worse for the same memory; rendezvous hashing is perfect
// on movement but O(nodes) per lookup, which at 3,000 nodes is tens of
// microseconds. Maglev's O(1) lookup and near-perfect balance win, and its
// extra movement (a few hosts shuffled between old nodes) stays well
// inside the 1/n + 2% budget. The classic hash-modulo is kept as the
// Modulo policy for comparison and for fixed pools.
//
// Fallback order for a host (Table.Order) continues with further probes of
// the same table, so when a node is ejected or over its load bound its
// hosts spread over the other nodes instead of piling onto one neighbour.
// In bounded-load mode (Config.BoundedLoad) a node is skipped while it has
// more requests in flight than the factor times the mean, but never below
// Config.BoundedLoadFloor: with thousands of nodes the mean is a fraction
// of a request, and without a floor a host's second concurrent request
// would spill to a node where its app is cold.
//
// # The forwarder
//
// Proxy.Run serves HTTP/1.1 with a purpose-built forwarder rather than
// net/http and httputil.ReverseProxy (which the design measured at about
// 40% of nginx's throughput on this kind of machine): one
// goroutine per client connection, a pooled keep-alive node connection
// taken for one exchange, request and response heads parsed once in place
// in reused buffers, bodies copied with pooled buffers and streamed both
// ways (a request body that is not yet complete is sent from its own
// goroutine while the response is read), and no per-request allocation on
// the common path. Its parser is strict (RFC 9112): one Content-Length or
// chunked, never both; differing Content-Lengths, obs-fold, bare CR or LF,
// whitespace before a colon, control characters, unknown transfer codings
// and non-origin-form targets are refused with 400; heads beyond
// MaxHeaderBytes or MaxHeaderFields get 431 and bodies beyond
// MaxBodyBytes 413. It is fuzzed and checked differentially against
// net/http's request reader (FuzzParseRequest).
//
// On plain TCP sockets the forwarder waits in the runtime's poller
// (syscall.RawConn) instead of trying a read first: the request is written
// to the node inside the wait for its answer, and a request that needs
// nothing more from its client is served inside the wait for the client's
// next one, so no read fails with EAGAIN on the common path. Under wrk
// -t2 -c64 this takes 4.2 system calls per request (nginx 5.0; before, 6.0)
// and about 7% less CPU per request; throughput is still about 0.88x
// nginx's on this 2-core machine, the rest being the Go scheduler (sysmon
// and idle-thread wake-ups) that nginx's single-threaded workers do not pay.
//
// The proxy removes hop-by-hop fields, sets X-Forwarded-For/-Proto/-Host,
// tunnels Upgrade (WebSocket) connections after a 101, times out slow
// request heads (ReadHeaderTimeout), idle clients (IdleTimeout) and silent
// nodes (ResponseHeaderTimeout, answered with 504), answers an unknown host
// with 404 naming it and a host with no live node with 503 and
// Retry-After, and terminates TLS with certificates picked by SNI from a
// directory (CertStore). Proxy is also an http.Handler (ServeHTTP) for
// embedding behind net/http, for instance for HTTP/2; that path uses
// net/http's reverse proxy and is slower.
//
// # Health and misses
//
// A node whose connections fail is ejected once it has failed for
// EjectAfter, and its hosts go to the next node in their order; it is
// probed every ProbeInterval (a TCP connect, or HealthCheckPath) and comes
// back when it answers. A request whose connection failed before any byte
// was sent is retried on the next node; an idempotent request without a
// body whose pooled connection turned out to be closed is retried on a
// fresh connection.
//
// A runner node that does not host the app for a Host answers 404 with
// "X-Paaskit-Miss: 1" (Config.MissHeader). Config.OnMiss is then called
// (PythonAnywhere's 502 fallback: tell the platform to place the app), and
// the request is sent once more.
package balancer
