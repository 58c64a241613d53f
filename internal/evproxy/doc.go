// Package evproxy is an event-loop HTTP/1.1 forwarder: the fast path of
// the balancer and of the runner's node front (which forwards to the
// instances' unix sockets). It is the design nginx, HAProxy and gnet use, written for
// the Go runtime: the goroutine-per-connection forwarder pays a park and
// an unpark through the runtime's netpoller for every wait, and on a
// small shared machine the scheduler's spinning threads and futex
// wake-ups take CPU from the load and the backends.
//
// A Proxy runs Config.Loops loops (GOMAXPROCS by default). Each is one
// goroutine locked to its OS thread around its own epoll set, serving
// non-blocking raw descriptors registered edge-triggered: client
// connections, and connections to targets kept in a per-loop keep-alive
// pool. The listener is in every loop's set (EPOLLEXCLUSIVE); the loop
// that wakes accepts and gives each connection to the loop with the
// fewest clients. Reads and writes are raw system calls (the
// descriptors never block); a read shorter than the buffer marks the
// socket drained, so the common exchange costs one read and one write on
// each side and no read that fails with EAGAIN. A unix target connection
// listens for EPOLLOUT only while a write waits for room: a unix socket
// signals it whenever its peer reads, which would wake the loop once per
// request for nothing. A busy loop yields its P every few milliseconds,
// so that the runtime's sysmon never preempts it (a preempted locked
// goroutine hands its P off and back, and sysmon then polls every 20 µs).
//
// A Handler picks the target of each request (a network and an address,
// chosen per request) and learns how each exchange ended, which is where
// the balancer keeps its health, ejection, retries and in-flight counts.
// Done comes when the response head arrives; a Handler that also
// implements Ender learns in End when the exchange is wholly over (body
// relayed or cut), which is when the runner lets an instance count as
// idle again.
// Request heads are parsed by the strict internal/http1 parser in the
// client's buffer; the forwarded head and a buffered body are written to
// the target in one write. A chunked request body that the client sent
// whole (within MaxBufferedBody, framing included) is checked by the
// strict decoder before anything is sent and forwarded re-chunked; one
// the client pauses in may be streaming both ways and is handed off. A
// response head with a Content-Length body that came alone waits for the
// body's first bytes, so the client gets one segment, not two, from a
// target that sends them apart (gunicorn does). Response heads are parsed in the target
// connection's buffer; bodies (Content-Length, chunked, which is
// decoded by internal/http1's ChunkedDecoder and re-framed, or until
// close; a chunked body broken in the bytes that came with its head
// answers 502) go through the loop's buffers
// with back-pressure: a target is not read while its client has unsent
// bytes. Deadlines (request head, idle keep-alive, connect, response
// head, body stalls) are checked by each loop a few times per shortest
// timeout.
//
// What the loop does not serve itself is handed off, before any byte of
// the request was sent anywhere, to Config.Handoff together with every
// byte already read from the client: Upgrade (WebSocket), Expect:
// 100-continue, request bodies larger than MaxBufferedBody, chunked
// bodies the client paused in, HTTP/1.0, targets that are not literal addresses, and a
// target's miss answer (the slow path calls the miss hook and sends the
// request again). The balancer's goroutine path takes them over with no
// byte lost.
//
// A request that meets a pooled connection the target had closed is sent
// once more on a fresh connection, before any response byte: a replayable
// one whatever broke, one with a (buffered) body only when the send failed
// (EPIPE) or the target reset the connection unread (ECONNRESET). Each
// loop frees the pool of a target it has no connection to (an instance
// socket that is gone) and closes idle connections unused for
// IdleTimeout, so targets that change with every app restart do not pile
// up.
//
// The pools belong to their loops, but how many idle connections each
// holds is public: Stats gives the total, IdleByTarget the count per
// target summed over the loops, both callable from any goroutine. Each
// pool keeps its count in an atomic the loop adds to when it takes or
// returns a connection (the one add per exchange a loop-wide count cost
// before), and the map of pools is written under a lock that only those
// readers take, so the hot path gains nothing. CloseIdle asks the loops
// to close a target's idle connections and pool no more of it (a node
// that left the balancer's table); the loops act on it when they next
// wake, which it makes happen.
package evproxy
