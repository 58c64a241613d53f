//go:build !zmqloop_pebbeio

package zmqloop

// forcePebbeIOTag: without the zmqloop_pebbeio tag, the package reads and
// writes whole messages in one cgo call when it can (see fastIO).
const forcePebbeIOTag = false
