package admit

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/paaskit/paaskit/internal/proxyproto"
)

// ErrRefused is the error of a connection the gate refused after it
// was accepted: a trusted source's PROXY header was malformed, or
// named a client at its cap.
var ErrRefused = errors.New("admit: connection refused")

// Conn is an admitted client connection: Close gives its slots back
// (once), and RemoteAddr is the client's address, the one a trusted
// proxy's header named where there was one. A connection from a trusted
// source reads and checks its PROXY header on its first Read or
// RemoteAddr, under the header timeout, on the goroutine that calls;
// when the header is malformed, truncated or names a client at its cap,
// the connection is closed and every Read fails with an error wrapping
// ErrRefused.
//
// SyscallConn, CloseRead and CloseWrite are those of the socket, except
// that SyscallConn fails while a header is still to be read or bytes
// read past it are still buffered (a raw read would skip them).
type Conn struct {
	net.Conn
	g       *Gate
	timeout time.Duration

	mu      sync.Mutex // guards the handshake
	pending bool       // the PROXY header is still to be read
	herr    error      // why the handshake failed
	pre     []byte     // bytes read past the header, served first
	remote  net.Addr   // the client's address; nil: Conn.RemoteAddr()
	slotIP  netip.Addr // the address holding the per-address slot

	released atomic.Bool
	detached atomic.Bool // the socket and slots were given away (Detach)
}

// Wrap returns c as an admitted connection. slotIP is the address whose
// per-address slot c holds (zero: none); remote, if set, is the client
// address to report; pending says c's PROXY header is still to be read
// (a trusted source), under timeout.
func (g *Gate) Wrap(c net.Conn, slotIP netip.Addr, remote net.Addr, pending bool, timeout time.Duration) *Conn {
	return &Conn{Conn: c, g: g, slotIP: slotIP, remote: remote, pending: pending, timeout: timeout}
}

// Accept admits c, a connection just accepted, or closes it and
// returns nil when a cap is reached.
func (g *Gate) Accept(c net.Conn, headerTimeout time.Duration) *Conn {
	peer := AddrOf(c.RemoteAddr())
	trusted := g.Trusted(peer)
	if !g.Admit(peer, trusted) {
		_ = c.Close()
		return nil
	}
	if tc, ok := c.(*net.TCPConn); ok && g.sockBuf > 0 {
		_ = tc.SetReadBuffer(g.sockBuf)
		_ = tc.SetWriteBuffer(g.sockBuf)
	}
	if trusted {
		return g.Wrap(c, netip.Addr{}, nil, true, headerTimeout)
	}
	return g.Wrap(c, peer, nil, false, 0)
}

// handshake reads the PROXY header if it is pending.
func (c *Conn) handshake() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.pending {
		return c.herr
	}
	c.pending = false
	if err := c.readHeader(); err != nil {
		c.herr = fmt.Errorf("%w: PROXY header from %s: %w", ErrRefused, c.Conn.RemoteAddr(), err)
		c.g.log.Warn("admit: refused a connection from a trusted source", "err", c.herr)
		_ = c.Conn.Close()
	}
	return c.herr
}

func (c *Conn) readHeader() error {
	if c.timeout > 0 {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
		defer func() { _ = c.Conn.SetReadDeadline(time.Time{}) }()
	}
	buf := make([]byte, 0, 256)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := c.Conn.Read(buf[len(buf):min(cap(buf), proxyproto.MaxLen+1)])
		buf = buf[:len(buf)+n]
		h, hl, perr := proxyproto.Parse(buf)
		switch {
		case perr == nil:
			c.pre = append([]byte(nil), buf[hl:]...)
			return c.bind(h)
		case perr != proxyproto.ErrIncomplete:
			return perr
		case err != nil:
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("header incomplete: %w", err)
		}
	}
}

// bind makes h's client the connection's, and takes its slot.
func (c *Conn) bind(h proxyproto.Header) error {
	if h.Local {
		return nil
	}
	ip := h.Src.Addr()
	if !c.g.Bind(ip) {
		return fmt.Errorf("client %s is at its connection cap", ip)
	}
	c.slotIP = ip
	c.remote = net.TCPAddrFromAddrPort(h.Src)
	return nil
}

// Read reads the header first if it is pending, then bytes read past
// it, then the socket.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// RemoteAddr returns the client's address (reading a pending header
// first; if that fails, the socket's peer).
func (c *Conn) RemoteAddr() net.Addr {
	_ = c.handshake()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// Close closes the socket and gives the slots back (once); after Detach
// it does nothing.
func (c *Conn) Close() error {
	if c.detached.Load() {
		return nil
	}
	err := c.Conn.Close()
	if c.released.CompareAndSwap(false, true) {
		c.mu.Lock()
		ip := c.slotIP
		c.mu.Unlock()
		c.g.Release(ip)
	}
	return err
}

// Detach gives c's socket and slots to the caller, which takes over
// both: c's Close then closes nothing and gives nothing back, and the
// caller gives the slots back with Gate.Release(slotIP) once it closes
// the socket (an event loop taking a connection back from the goroutine
// path keeps its slot so). ok is false, with c unchanged, while c has a
// PROXY header to read or bytes read past it, or after its Close.
func (c *Conn) Detach() (sock net.Conn, slotIP netip.Addr, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending || len(c.pre) > 0 || c.herr != nil {
		return nil, netip.Addr{}, false
	}
	if !c.released.CompareAndSwap(false, true) {
		return nil, netip.Addr{}, false
	}
	c.detached.Store(true)
	return c.Conn, c.slotIP, true
}

var errNotRaw = errors.New("admit: connection has bytes buffered or a PROXY header to read")

// SyscallConn returns the socket's RawConn once nothing is left to read
// through Read first.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sc, ok := c.Conn.(syscall.Conn)
	if c.pending || len(c.pre) > 0 || c.herr != nil || !ok {
		return nil, errNotRaw
	}
	return sc.SyscallConn()
}

type halfCloser interface {
	CloseRead() error
	CloseWrite() error
}

// CloseRead shuts down the reading side of the socket.
func (c *Conn) CloseRead() error {
	if hc, ok := c.Conn.(halfCloser); ok {
		return hc.CloseRead()
	}
	return c.Conn.Close()
}

// CloseWrite shuts down the writing side of the socket.
func (c *Conn) CloseWrite() error {
	if hc, ok := c.Conn.(halfCloser); ok {
		return hc.CloseWrite()
	}
	return c.Conn.Close()
}

// Listener admits the connections of a listener through a gate;
// refused ones are closed as they are accepted and never returned.
type Listener struct {
	net.Listener
	g       *Gate
	timeout time.Duration
}

// Listener returns l admitting through g; headerTimeout bounds a
// trusted source's PROXY header.
func (g *Gate) Listener(l net.Listener, headerTimeout time.Duration) *Listener {
	return &Listener{Listener: l, g: g, timeout: headerTimeout}
}

// Accept returns the next admitted connection (a *Conn).
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ac := l.g.Accept(c, l.timeout); ac != nil {
			return ac, nil
		}
	}
}
