// Package admit decides which client connections a forwarder takes: a
// cap on connections per process and per client address, and the PROXY
// protocol header, believed only from the trusted sources an operator
// names. It is shared by the event loops (internal/evproxy), the
// balancer's goroutine path and the runner's front, so that a
// connection handed from one to the other keeps the one slot it holds.
//
// A refused connection is accepted and closed at once, before a byte is
// read: that costs nothing but the accept, keeps the listen backlog
// moving (so clients that are within their caps are not queued behind a
// flood), and holds no buffer or timer for the refused client. A 503
// would need the request read first (closing a socket with unread bytes
// resets it, and the 503 with it), which is what a cap exists to avoid.
package admit
