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
// host goes to lut[xxhash(host) % size]. Adding an n+1st node moves
// about 1/(n+1) of the hosts (the modulo policy moves nearly all), the
// most loaded node carries within a few percent of the mean, and a lookup
// is O(1) with no allocation (hash_test.go checks movement and balance;
// bench/README.md has the measured figures). A ring with 100+ points
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
// A request is in flight on a node (NodeStatus.InFlight, and the load
// that bounded-load mode compares) from the moment the node is picked,
// connecting included, until the exchange is wholly over: the response
// body relayed to the client to its last byte, or cut by either side, or
// a WebSocket tunnel closed. An attempt that is given up ends its count
// at once: a connection that failed (the request goes on to the next
// node, which counts it from its own pick), a node's miss, a hand-off
// from the event loops to the goroutine path (which counts the request
// again from its own pick). So a long download or a streaming response
// keeps weighing on its node for as long as it streams, on both
// forwarders: the goroutine path counts around the whole exchange, the
// event loops from Route to evproxy's End (not Done, which comes with the
// response head). The count ends just after the last byte was written to
// the client, so a client may see its response a moment before its node's
// count drops.
//
// # The forwarder
//
// Proxy.Run serves HTTP/1.1 with purpose-built forwarders rather than
// net/http and httputil.ReverseProxy, whose per-connection goroutines and
// channel hand-offs cost most of the throughput on a small machine (see
// DESIGN.md and bench/README.md). Both share the
// strict parser of internal/http1: one Content-Length or chunked, never
// both; differing Content-Lengths, obs-fold, bare CR or LF, whitespace
// before a colon, control characters, unknown transfer codings and
// non-origin-form targets are refused with 400; heads beyond
// MaxHeaderBytes or MaxHeaderFields get 431 and bodies beyond
// MaxBodyBytes 413. It is fuzzed and checked differentially against
// net/http's request reader (FuzzParseRequest).
//
// # Bounds
//
// Every bound has a safe default, the same on both forwarders
// (internal/admit decides admission for both, so a connection handed
// from a loop to the goroutine path keeps its one slot): MaxConns and
// MaxConnsPerIP refuse a connection by closing it as it is accepted;
// MaxBodyBytes (100 MB) answers 413 with Connection: close, for a
// Content-Length at once and for a chunked body once it grows past it;
// MaxConnBuffer with the fixed head and response buffers bounds what a
// connection holds, so a slow reader or a slow node is paced by TCP flow
// control. A panic in OnMiss, in the loops' handler or in a connection
// goroutine is logged with its stack and answered 502 (or ends that one
// connection); the proxy serves on. TrustedProxies names the outer load
// balancers whose PROXY protocol header (v1 or v2, internal/proxyproto)
// gives the client's address; a PROXY header from any other source, or a
// malformed one, closes the connection.
//
// Plain-HTTP listeners are served by event loops (internal/evproxy; on by
// default, Config.EventLoops): one loop per P, each a goroutine locked to
// its thread around its own epoll set of non-blocking sockets, with its
// own pool of keep-alive node connections, request and response heads
// parsed in place in per-connection buffers, response bodies (length,
// chunked or until close) streamed through the loop with back-pressure,
// and the header, idle and response timeouts kept as per-loop deadlines.
// The loop asks the balancer (through a small handler) where each
// request goes, so the table, the consistent hash, bounded load, health,
// ejection, retries and in-flight counts work the same on both paths.
// This is the design of nginx and HAProxy. On this project's reference
// machine (2 shared cores) the loops measure at parity with nginx and
// HAProxy in throughput (bench/compare.sh balancer; bench/README.md keeps
// the current figures and their commands); the goroutine forwarder alone
// is about a tenth slower. Config.BusyPoll (an extra non-blocking poll
// before blocking) is off by default: it measured within noise.
//
// What the loops do not serve themselves goes, with every byte already
// read, to the goroutine-per-connection forwarder (internal/connproxy,
// shared with the runner's node front, driven by the same routing): TLS,
// WebSocket and other Upgrades, Expect: 100-continue, request bodies
// larger than MaxConnBuffer and chunked ones the client pauses in (a small
// chunked body sent at once stays on the loops), HTTP/1.0 clients, nodes
// named by a DNS name until their first lookup answered (Config.Resolve:
// names are looked up per table load, off the request path), and misses (see
// below). That forwarder takes a pooled keep-alive node connection for one
// exchange, parses heads once in reused buffers, copies bodies with
// pooled buffers and streams them both ways (a request body that is not
// yet complete is sent from its own goroutine while the response is read).
// On plain sockets it waits in the runtime's poller (syscall.RawConn)
// instead of trying a read first, so no read fails with EAGAIN on the
// common path. ForwarderStats tells how much each path served.
//
// Each path pools its own keep-alive connections to the nodes: the
// goroutine path one pool per node, each event loop one per node address.
// NodeStatus.Idle is the sum of them for the node now (the loops' counts
// are read with atomics, from pools keyed by address, so two ids at one
// address show the same loop connections). A node that leaves the table
// has its idle connections closed on both paths, and connections in use
// to it are closed rather than pooled when their exchange ends; a node
// that closes idle connections itself drops out of the loops' figure at
// once (the loops watch their idle sockets), and out of the goroutine
// path's when a request next finds the connection closed.
//
// The proxy removes hop-by-hop fields, sets X-Forwarded-For/-Proto/-Host,
// tunnels Upgrade (WebSocket) connections after a 101, times out slow
// request heads (ReadHeaderTimeout), idle clients (IdleTimeout) and silent
// nodes (ResponseHeaderTimeout, answered with 504), answers an unknown host
// with 404 naming it and a host with no live node with 503 and
// Retry-After, and terminates TLS with certificates picked by SNI from a
// directory (CertStore). Proxy is also an http.Handler (ServeHTTP) for
// embedding behind net/http, for instance for HTTP/2: net/http reads the
// client's request, and the goroutine forwarder serves it from there with
// the same codec, routing, health and hooks as Run's path.
//
// When Run's context ends the proxy stops accepting and closes idle
// connections, and both forwarders drain at once against one deadline,
// ShutdownTimeout after the cancel: requests in flight on the event
// loops and on the goroutine path may finish until then; at the
// deadline every connection left is closed, those to nodes of the cut
// exchanges included (a request still waiting for its node does not
// hold Run until ResponseHeaderTimeout), and Run returns once all its
// goroutines have ended. So Run returns within about one
// ShutdownTimeout, however the requests were split between the paths.
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
// the request is sent once more. On the event loops a miss hands the
// connection, from the start of the request, to the goroutine path,
// which sends the request again, calls the hook and retries (the hook
// may block; a loop must not).
package balancer
