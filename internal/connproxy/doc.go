// Package connproxy is paaskit's goroutine-per-connection HTTP/1.1
// forwarder, the one under both the balancer and the runner's node front.
// It serves what their event loops (internal/evproxy) hand off, TLS,
// Upgrade (WebSocket) tunnels, Expect: 100-continue, chunked or large
// request bodies, HTTP/1.0, misses, targets that need a name lookup or a
// dial of their own, and everything when the loops are off.
//
// It is driven like the loops: a Handler routes each parsed request
// (Route, over the loops' evproxy.Request: Head, ClientIP, Tried, Tag) to
// a Pool of keep-alive connections to the target, and learns how each
// attempt ended (Done) and when the exchange is wholly over (End). The
// balancer keeps its table, pick, health and in-flight counts there; the
// runner its start on demand and its instances' accounting. Unlike on
// the loops, Route runs on the connection's own goroutine and may block.
// A Handler that is also a Misser hears of misses (a 404 with
// Config.MissHeader "1") and may have the request routed again.
//
// Every head is parsed, and every chunked body decoded and re-framed,
// by the strict internal/http1 codec; a chunked response broken in the
// bytes that came with its head is answered 502, one that breaks later
// cuts the client connection (never a cut body taken for a whole one).
// A panic in a Handler method, or anywhere on a connection's goroutine,
// is recovered and logged with its stack; the proxy serves on.
//
// A connection an event loop handed off for one request can go back to
// it (Config.Resume) once that exchange ended cleanly with the
// connection kept alive, so a client that uploads one chunked body
// keeps its connection on the fast path afterwards.
package connproxy
