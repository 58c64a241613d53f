//go:build zmqloop_pebbeio

package zmqloop

// forcePebbeIOTag: built with the zmqloop_pebbeio tag, the package uses
// pebbe/zmq4's per-frame API only (see fastIO).
const forcePebbeIOTag = true
