package connproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/paaskit/paaskit/internal/http1"
)

// Pool keeps the idle keep-alive connections to one target, most
// recently used first out. Its owner (the balancer's state for a node,
// the runner's for an instance) makes it, names it in each Decision that
// forwards to the target, and closes it when the target is gone. A Pool
// is safe for concurrent use.
type Pool struct {
	dial    func(ctx context.Context) (net.Conn, error)
	maxIdle int
	// readTimeout bounds every read of a response body (0: none).
	readTimeout time.Duration

	mu     sync.Mutex
	idle   []*bconn // LIFO
	closed bool
}

// PoolConfig configures a Pool.
type PoolConfig struct {
	// Dial connects to the target (required). It is called on a client
	// connection's goroutine with a context that ends after the proxy's
	// DialTimeout.
	Dial func(ctx context.Context) (net.Conn, error)
	// MaxIdle bounds the idle connections kept. Default 256.
	MaxIdle int
	// BodyReadTimeout, if positive, bounds each read of a response
	// body, so that a target that stalls mid-body does not hold the
	// client connection forever. 0: no bound (the client's own
	// deadlines still apply on its side).
	BodyReadTimeout time.Duration
}

// NewPool returns an empty pool.
func NewPool(cfg PoolConfig) *Pool {
	if cfg.MaxIdle <= 0 {
		cfg.MaxIdle = 256
	}
	return &Pool{dial: cfg.Dial, maxIdle: cfg.MaxIdle, readTimeout: cfg.BodyReadTimeout}
}

// Idle returns the number of idle connections held now.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// Put adds c, a fresh connection to the target, to the idle set (a
// connection made to check that the target is up, kept for the first
// request). It closes c when the pool is full or closed.
func (p *Pool) Put(c net.Conn) { p.put(newBconn(c, p, 32<<10)) }

// CloseIdle closes every idle connection (after one was found stale: the
// target probably restarted and they all are).
func (p *Pool) CloseIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, bc := range idle {
		_ = bc.c.Close()
	}
}

// Close closes the idle connections and makes the pool keep no more:
// connections in use are closed when their exchange ends.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.CloseIdle()
}

// get returns an idle connection (fresh false) or dials a new one.
func (p *Pool) get(ctx context.Context, dialTimeout time.Duration, maxHead int, fresh bool) (*bconn, error) {
	if !fresh {
		p.mu.Lock()
		if n := len(p.idle); n > 0 {
			bc := p.idle[n-1]
			p.idle[n-1] = nil
			p.idle = p.idle[:n-1]
			p.mu.Unlock()
			bc.reused = true
			bc.r.max = maxHead
			return bc, nil
		}
		p.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, err := p.dial(ctx)
	if err != nil {
		return nil, err
	}
	return newBconn(c, p, maxHead), nil
}

// put returns a connection for reuse, or closes it when the pool is full
// or closed.
func (p *Pool) put(bc *bconn) {
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.maxIdle {
		p.mu.Unlock()
		_ = bc.c.Close()
		return
	}
	bc.send = nil
	p.idle = append(p.idle, bc)
	p.mu.Unlock()
}

// bconn is one connection to a target, with its buffers and a reusable
// response head.
type bconn struct {
	c      net.Conn
	r      *connReader
	w      *bufio.Writer
	pool   *Pool
	reused bool
	resp   http1.Head

	// raw and step implement sendThenRead (nil raw: not a plain socket).
	raw     syscall.RawConn
	step    func(fd uintptr) bool
	send    *clientConn // the request to send in the first step
	sendRes bodyResult
}

func (bc *bconn) close() { _ = bc.c.Close() }

// targetReadBuf is a target connection's read buffer, as large as the
// event loops' target buffer: a response body that comes with its head
// is checked whole before the head is relayed (a broken chunked body
// there answers 502 on both paths alike), and bodies are read 16 KiB at
// a time.
const targetReadBuf = 16 << 10

func newBconn(c net.Conn, p *Pool, maxHead int) *bconn {
	r := newConnReader(c, maxHead)
	r.buf = make([]byte, targetReadBuf)
	r.deadline = p.readTimeout
	bc := &bconn{
		c:    c,
		r:    r,
		w:    bufio.NewWriterSize(c, 4096),
		pool: p,
	}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			bc.raw = raw
			bc.step = bc.rawStep
		}
	}
	return bc
}

// sendThenRead sends cc's request (head and buffered body) and reads the
// first bytes of the answer, inside one wait on the connection's poller:
// the request is written after the poller's readiness was reset, so the
// answer cannot arrive unseen, and the read is tried only once the socket
// is readable (a plain read right after the write almost always fails
// with EAGAIN first: one wasted system call per request). The send's
// result is returned; a read failure is kept in bc.r for readHead. It
// reports false when the connection cannot take this path (not a plain
// socket, or bytes already buffered), having done nothing.
func (bc *bconn) sendThenRead(cc *clientConn) (bodyResult, bool) {
	if bc.raw == nil || bc.r.buffered() != 0 {
		return bodyResult{}, false
	}
	bc.r.r, bc.r.w = 0, 0
	bc.send = cc
	bc.sendRes = bodyResult{}
	err := bc.raw.Read(bc.step)
	if bc.send != nil {
		// The poller refused before the first step (closed, or the
		// deadline passed): nothing was sent.
		bc.send = nil
		if err == nil {
			err = errors.New("connection not readable")
		}
		return bodyResult{err: err}, true
	}
	if err != nil && bc.sendRes.err == nil && bc.r.err == nil && bc.r.w == 0 {
		bc.r.err = err
	}
	return bc.sendRes, true
}

// rawStep is the RawConn callback of sendThenRead: the first call sends,
// later ones (after the poller reported the socket readable) read.
func (bc *bconn) rawStep(fd uintptr) bool {
	if cc := bc.send; cc != nil {
		bc.send = nil
		bc.sendRes = cc.sendBody(bc)
		return bc.sendRes.err != nil
	}
	cr := bc.r
	for {
		n, err := syscall.Read(int(fd), cr.buf[cr.w:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			cr.err = os.NewSyscallError("read", err)
		case n == 0:
			cr.err = io.EOF
		default:
			cr.w += n
		}
		return true
	}
}
