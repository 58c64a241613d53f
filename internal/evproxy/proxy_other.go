//go:build !linux

package evproxy

import (
	"context"
	"errors"
	"net"
)

// ErrRunTwice is returned by a second call of Proxy.Run.
var ErrRunTwice = errors.New("evproxy: Proxy.Run called twice")

// Proxy is a set of event loops serving one listener (Linux only).
type Proxy struct{}

// Stats are a proxy's counters, summed over its loops.
type Stats struct {
	Conns, Requests, Handoffs, IdleConns, Pools, Refused, Panics, Resumed int64
}

// New returns ErrUnsupported outside Linux.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return nil, ErrUnsupported
}

// Run returns ErrUnsupported.
func (p *Proxy) Run(ctx context.Context) error { return ErrUnsupported }

// Stats returns zero counters.
func (p *Proxy) Stats() Stats { return Stats{} }

// IdleByTarget returns an empty map.
func (p *Proxy) IdleByTarget() map[Target]int64 { return map[Target]int64{} }

// CloseIdle does nothing.
func (p *Proxy) CloseIdle(targets ...Target) {}

// ErrNotServing is returned by Resume when the loops are not running.
var ErrNotServing = errors.New("evproxy: the event loops are not serving")

// Resume is not supported without epoll: the loops never run.
func (p *Proxy) Resume(c net.Conn, buffered []byte) error { return ErrNotServing }
