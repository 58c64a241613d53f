package balancer

import (
	"context"
	"net"
	"sync/atomic"
	"time"

	"github.com/paaskit/paaskit/internal/connproxy"
)

// backend is the proxy's state for one node (id and address): the
// goroutine path's pool of idle keep-alive connections to it, its
// in-flight count and its health. It outlives table reloads as long as
// the node keeps its id and address.
type backend struct {
	id, addr string
	pool     *connproxy.Pool
	dns      *nameState // nil for a literal IP:port (resolve.go)

	inflight  atomic.Int64
	failSince atomic.Int64 // unix nanos of the first failure in a row; 0 = healthy
	ejected   atomic.Bool
}

func newBackend(p *Proxy, id, addr string) *backend {
	be := &backend{id: id, addr: addr, dns: newNameState(p, addr)}
	sockBuf := p.cfg.SocketBuffer
	be.pool = connproxy.NewPool(connproxy.PoolConfig{
		// A named node's resolved address (resolve.go), as the loops
		// use; the name itself until its first lookup answered.
		Dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			// A failed connect reaches p.connectFailed through the
			// route's Done(ConnectFailed), on both forwarders alike.
			c, err := d.DialContext(ctx, "tcp", be.loopTarget().Addr)
			if err != nil {
				return nil, err
			}
			if tc, ok := c.(*net.TCPConn); ok && sockBuf > 0 {
				_ = tc.SetReadBuffer(sockBuf)
				_ = tc.SetWriteBuffer(sockBuf)
			}
			return c, nil
		},
		MaxIdle: p.cfg.MaxIdlePerNode,
	})
	return be
}

// flushIdle closes the goroutine path's idle connections (a named node's
// address changed).
func (b *backend) flushIdle() { b.pool.CloseIdle() }

// close marks the backend removed and closes its idle connections;
// connections in use are closed when their exchange ends.
func (b *backend) close() { b.pool.Close() }

// markFail records a failed connection attempt; the backend is ejected
// once it has been failing for longer than grace. It reports whether this
// call ejected it.
func (b *backend) markFail(now time.Time, grace time.Duration) bool {
	t := now.UnixNano()
	if b.failSince.CompareAndSwap(0, t) {
		if grace > 0 {
			return false
		}
	}
	since := b.failSince.Load()
	if since != 0 && t-since >= int64(grace) && !b.ejected.Load() {
		return b.ejected.CompareAndSwap(false, true)
	}
	return false
}

// markOK records an answer from the backend. It reports whether the
// backend was ejected before.
func (b *backend) markOK() bool {
	if b.failSince.Load() != 0 {
		b.failSince.Store(0)
	}
	if b.ejected.Load() {
		return b.ejected.CompareAndSwap(true, false)
	}
	return false
}
