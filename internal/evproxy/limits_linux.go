package evproxy

import (
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"

	"github.com/paaskit/paaskit/internal/proxyproto"
	"golang.org/x/sys/unix"
)

// admission is a client connection's standing with Config.Gate and the
// PROXY protocol.
type admission struct {
	held    bool       // the connection holds a gate slot
	slotIP  netip.Addr // the address holding its per-address slot
	preface uint8      // what its first bytes must be checked for
}

const (
	prefaceNone   = iota // checked: the request stream starts here
	prefaceSniff         // untrusted: a PROXY header here is refused
	prefaceHeader        // trusted: a PROXY header must come first
)

func sockaddrAddr(sa unix.Sockaddr) netip.Addr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(a.Addr)
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(a.Addr).Unmap()
	}
	return netip.Addr{}
}

// admit takes c's gate slot; it reports false when a cap refuses it
// (the caller closes the descriptor at once: nothing was read).
func (l *loop) admit(c *cconn, sa unix.Sockaddr) bool {
	l.tuneSocket(c.fd)
	g := l.p.cfg.Gate
	c.adm.preface = prefaceSniff
	if g == nil {
		return true
	}
	peer := sockaddrAddr(sa)
	trusted := g.HasTrusted() && g.Trusted(peer)
	if !g.Admit(peer, trusted) {
		l.nrefused.Add(1)
		return false
	}
	c.adm.held = true
	if trusted {
		c.adm.preface = prefaceHeader
	} else {
		c.adm.slotIP = peer
	}
	return true
}

// tuneSocket applies Config.SocketBuffer to fd.
func (l *loop) tuneSocket(fd int) {
	if n := l.p.cfg.SocketBuffer; n > 0 {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, n)
	}
}

// release gives c's gate slot back (a connection closed by the loop).
func (l *loop) release(c *cconn) {
	if c.adm.held {
		c.adm.held = false
		l.p.cfg.Gate.Release(c.adm.slotIP)
	}
}

// wrapHandoff gives a handed-off connection its slot (and its client
// address, which a PROXY header may have named) to keep: the receiver's
// Close gives the slot back.
func (l *loop) wrapHandoff(nc net.Conn, c *cconn) net.Conn {
	if !c.adm.held {
		return nc
	}
	c.adm.held = false
	var remote net.Addr
	if ip, err := netip.ParseAddr(c.ip); err == nil && c.ip != sockaddrAddrString(nc) {
		remote = &net.TCPAddr{IP: ip.AsSlice()}
	}
	return l.p.cfg.Gate.Wrap(nc, c.adm.slotIP, remote, false, 0)
}

func sockaddrAddrString(nc net.Conn) string {
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap().String()
	}
	return ""
}

// preface checks the first bytes of c's stream: from an untrusted
// source a PROXY header closes the connection; from a trusted one it
// must come first, and names the client. It reports whether the request
// stream may be parsed now; false when more bytes are needed, or when c
// was closed (c.canRead is then false, so readRequest stops).
func (l *loop) preface(c *cconn) bool {
	avail := c.in[c.ir:c.iw]
	switch c.adm.preface {
	case prefaceSniff:
		isHeader, undecided := proxyproto.Sniff(avail)
		if undecided {
			return false
		}
		if isHeader {
			l.p.cfg.Logger.Warn("evproxy: PROXY header from an untrusted source; closing", "client", c.ip)
			l.refuse(c)
			return false
		}
	case prefaceHeader:
		h, n, err := proxyproto.Parse(avail)
		if err == proxyproto.ErrIncomplete {
			return false
		}
		if err != nil {
			l.p.cfg.Logger.Warn("evproxy: malformed PROXY header from a trusted source; closing", "source", c.ip, "err", err)
			l.refuse(c)
			return false
		}
		if !h.Local {
			ip := h.Src.Addr()
			if !l.p.cfg.Gate.Bind(ip) {
				l.nrefused.Add(1)
				l.refuse(c)
				return false
			}
			c.adm.slotIP = ip
			c.ip = ip.String()
			c.req.ClientIP = c.ip
		}
		c.ir += n
	}
	c.adm.preface = prefaceNone
	return c.ir < c.iw
}

func (l *loop) refuse(c *cconn) {
	c.canRead = false
	l.closeClient(c)
}

// callRoute is Handler.Route, with a panic in it logged with its stack
// and reported as !ok (the request is answered 502).
func (l *loop) callRoute(c *cconn) (d Decision, ok bool) {
	defer func() {
		if v := recover(); v != nil {
			l.hookPanic("Route", v)
			ok = false
		}
	}()
	return l.p.cfg.Handler.Route(&c.req), true
}

// callDone is Handler.Done; a panic in it is logged and the exchange goes
// on (the outcome is only a report).
func (l *loop) callDone(c *cconn, o Outcome) {
	defer func() {
		if v := recover(); v != nil {
			l.hookPanic("Done", v)
		}
	}()
	l.p.cfg.Handler.Done(&c.req, o)
}

// callEnd is Ender.End; a panic in it is logged.
func (l *loop) callEnd(c *cconn) {
	defer func() {
		if v := recover(); v != nil {
			l.hookPanic("End", v)
		}
	}()
	l.p.ender.End(&c.req)
}

// callHandoff is Config.Handoff; a panic in it is logged and the
// connection closed (nobody else has it).
func (l *loop) callHandoff(nc net.Conn, buffered []byte) {
	defer func() {
		if v := recover(); v != nil {
			l.hookPanic("Handoff", v)
			_ = nc.Close()
		}
	}()
	l.p.cfg.Handoff(nc, buffered)
}

func (l *loop) hookPanic(hook string, v any) {
	l.npanics.Add(1)
	l.p.cfg.Logger.Error("evproxy: hook panicked", "hook", hook, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
}
