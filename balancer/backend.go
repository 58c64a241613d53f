package balancer

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// backend is the proxy's state for one node (id and address): its idle
// keep-alive connections, in-flight count and health. It outlives table
// reloads as long as the node keeps its id and address.
type backend struct {
	id, addr string
	sockBuf  int        // Config.SocketBuffer
	dns      *nameState // nil for a literal IP:port (resolve.go)

	mu     sync.Mutex
	idle   []*bconn // LIFO
	closed bool

	inflight  atomic.Int64
	failSince atomic.Int64 // unix nanos of the first failure in a row; 0 = healthy
	ejected   atomic.Bool
}

// bconn is one connection to a backend, with its buffers and a reusable
// response head.
type bconn struct {
	c      net.Conn
	r      *connReader
	w      *bufio.Writer
	be     *backend
	reused bool
	resp   head

	// raw and step implement sendThenRead (nil raw: not a plain socket).
	raw     syscall.RawConn
	step    func(fd uintptr) bool
	send    *clientConn // the request to send in the first step
	sendRes bodyResult
}

func (bc *bconn) close() { _ = bc.c.Close() }

// nodeReadBuf is a node connection's read buffer, as large as the event
// loops' target buffer: a response body that comes with its head is
// checked whole before the head is relayed (a broken chunked body there
// answers 502 on both paths alike), and bodies are read 16 KiB at a time.
const nodeReadBuf = 16 << 10

func newBconn(c net.Conn, b *backend, maxHead int) *bconn {
	r := newConnReader(c, maxHead)
	r.buf = make([]byte, nodeReadBuf)
	bc := &bconn{
		c:  c,
		r:  r,
		w:  bufio.NewWriterSize(c, 4096),
		be: b,
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

// get returns an idle connection or dials a new one.
func (b *backend) get(dialTimeout time.Duration, maxHead int, fresh bool) (*bconn, error) {
	if !fresh {
		b.mu.Lock()
		if n := len(b.idle); n > 0 {
			bc := b.idle[n-1]
			b.idle[n-1] = nil
			b.idle = b.idle[:n-1]
			b.mu.Unlock()
			bc.reused = true
			return bc, nil
		}
		b.mu.Unlock()
	}
	// A named node's resolved address (resolve.go), as the loops use.
	c, err := net.DialTimeout("tcp", b.loopTarget().Addr, dialTimeout)
	if err != nil {
		if b.dns != nil {
			b.dns.p.connectFailed(b)
		}
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok && b.sockBuf > 0 {
		_ = tc.SetReadBuffer(b.sockBuf)
		_ = tc.SetWriteBuffer(b.sockBuf)
	}
	return newBconn(c, b, maxHead), nil
}

// put returns a connection for reuse, or closes it when the pool is full
// or the backend is gone from the table.
func (b *backend) put(bc *bconn, maxIdle int) {
	b.mu.Lock()
	if b.closed || len(b.idle) >= maxIdle {
		b.mu.Unlock()
		_ = bc.c.Close()
		return
	}
	b.idle = append(b.idle, bc)
	b.mu.Unlock()
}

// flushIdle closes every idle connection (after one was found stale: the
// backend probably restarted and they all are).
func (b *backend) flushIdle() {
	b.mu.Lock()
	idle := b.idle
	b.idle = nil
	b.mu.Unlock()
	for _, bc := range idle {
		_ = bc.c.Close()
	}
}

// close marks the backend removed and closes its idle connections;
// connections in use are closed when they are returned.
func (b *backend) close() {
	b.mu.Lock()
	b.closed = true
	idle := b.idle
	b.idle = nil
	b.mu.Unlock()
	for _, bc := range idle {
		_ = bc.c.Close()
	}
}

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
