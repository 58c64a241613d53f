package evproxy

import (
	"fmt"
	"net/netip"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// tpool is a loop's idle connections to one target.
type tpool struct {
	t    Target
	sa   unix.Sockaddr
	fam  int
	idle []*bconn // LIFO
	// nidle is len(idle), kept by the loop for readers on other
	// goroutines (one uncontended atomic add per take or return, as the
	// loop-wide count it replaced cost).
	nidle atomic.Int64
	// retired: the pool left the loop's map (Proxy.CloseIdle); its
	// connections still in use are closed when their exchange ends.
	retired bool
	// active counts the pool's connections in use by an exchange; a
	// pool is freed only when it has none.
	active int
	// lastUse is when a connection was last taken or returned.
	lastUse int64
}

// bconn is a connection to a target.
type bconn struct {
	fd         int
	pool       *tpool
	buf        []byte
	r, w       int
	reused     bool
	owner      *cconn
	canRead    bool
	canWrite   bool
	hup        bool // the target shut down its side (or errored)
	connecting bool
	// outArmed: EPOLLOUT is in the connection's epoll events. A unix
	// socket signals EPOLLOUT every time its peer reads (the written
	// bytes are freed), so an armed one wakes the loop once per
	// request, when the app reads it, for nothing: unix connections
	// are armed only while a write waits for room (armWrite). TCP
	// signals room only after a write ran out of it, so TCP ones stay
	// armed (they also need it to see their connect complete).
	outArmed bool
}

// armWrite adds EPOLLOUT to b's events (on) or takes it out; it reports
// whether epoll took the change.
func (l *loop) armWrite(b *bconn, on bool) bool {
	ev := uint32(unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET)
	if on {
		ev |= unix.EPOLLOUT
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, b.fd, &unix.EpollEvent{Events: ev, Fd: int32(b.fd)}); err != nil {
		l.p.cfg.Logger.Warn("evproxy: epoll_ctl target", "target", b.pool.t.Addr, "err", err)
		return false
	}
	b.outArmed = on
	return true
}

const (
	targetBuf = 16 << 10
	initialIn = 4 << 10
)

func (l *loop) closeTarget(b *bconn) {
	if b.fd < 0 {
		return
	}
	if b.fd < len(l.objs) && l.objs[b.fd] == b {
		l.objs[b.fd] = nil
	}
	_ = unix.Close(b.fd)
	if b.owner != nil {
		b.pool.active--
	}
	b.owner = nil
	b.fd = -1
}

// sweepPools closes idle connections of pools unused for IdleTimeout
// and frees pools with no connection left (a target that is gone, such
// as an instance socket that was removed, would otherwise keep its pool
// for ever).
func (l *loop) sweepPools() {
	for t, tp := range l.pools {
		if tp.active > 0 {
			continue
		}
		if len(tp.idle) > 0 && l.now-tp.lastUse < int64(l.p.cfg.IdleTimeout) {
			continue
		}
		l.closeIdle(tp)
		l.poolsMu.Lock()
		delete(l.pools, t)
		l.poolsMu.Unlock()
		l.npools.Add(-1)
	}
}

// retirePool closes the idle connections to t and takes its pool out
// of the map, so that connections in use are closed, not pooled, when
// their exchange ends (the target left the caller's table). A later
// request for t starts a new pool.
func (l *loop) retirePool(t Target) {
	tp := l.pools[t]
	if tp == nil {
		return
	}
	l.closeIdle(tp)
	tp.retired = true
	l.poolsMu.Lock()
	delete(l.pools, t)
	l.poolsMu.Unlock()
	l.npools.Add(-1)
}

// closeIdle closes every idle connection of tp.
func (l *loop) closeIdle(tp *tpool) {
	for i, b := range tp.idle {
		l.closeTarget(b)
		tp.idle[i] = nil
	}
	tp.idle = tp.idle[:0]
	tp.nidle.Store(0)
}

func (l *loop) dropIdle(b *bconn) {
	tp := b.pool
	for i, x := range tp.idle {
		if x == b {
			copy(tp.idle[i:], tp.idle[i+1:])
			tp.idle[len(tp.idle)-1] = nil
			tp.idle = tp.idle[:len(tp.idle)-1]
			tp.nidle.Add(-1)
			break
		}
	}
	l.closeTarget(b)
}

func (l *loop) pool(t Target) *tpool {
	if tp := l.pools[t]; tp != nil {
		return tp
	}
	tp := &tpool{t: t}
	switch t.Network {
	case "tcp", "tcp4", "tcp6":
		ap, err := netip.ParseAddrPort(t.Addr)
		if err != nil {
			return nil
		}
		if ap.Addr().Is4() || ap.Addr().Is4In6() {
			tp.sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
			tp.fam = unix.AF_INET
		} else {
			tp.sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
			tp.fam = unix.AF_INET6
		}
	case "unix":
		name := t.Addr
		if t.Via != "" {
			name = t.Via
		}
		tp.sa = &unix.SockaddrUnix{Name: name}
		tp.fam = unix.AF_UNIX
	default:
		return nil
	}
	l.poolsMu.Lock()
	l.pools[t] = tp
	l.poolsMu.Unlock()
	l.npools.Add(1)
	return tp
}

func (l *loop) dial(tp *tpool) (*bconn, error) {
	fd, err := unix.Socket(tp.fam, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	b := &bconn{fd: fd, pool: tp, buf: make([]byte, targetBuf)}
	if tp.fam != unix.AF_UNIX {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		l.tuneSocket(fd)
	}
	err = unix.Connect(fd, tp.sa)
	if err == nil && tp.fam == unix.AF_UNIX && tp.t.CheckPeer {
		// A unix connect completes at once: check who listens before
		// anything is sent.
		cred, cerr := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if cerr != nil || cred.Uid != tp.t.PeerUID {
			_ = unix.Close(fd)
			if cerr == nil {
				cerr = fmt.Errorf("evproxy: target %s: listener runs as UID %d (pid %d), not UID %d", tp.t.Addr, cred.Uid, cred.Pid, tp.t.PeerUID)
			}
			l.p.cfg.Logger.Warn("evproxy: refused a target connection", "target", tp.t.Addr, "err", cerr)
			return nil, cerr
		}
	}
	switch err {
	case nil:
		b.canWrite = true
	case unix.EINPROGRESS:
		b.connecting = true
	default:
		_ = unix.Close(fd)
		return nil, err
	}
	events := uint32(unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET)
	if tp.fam != unix.AF_UNIX || b.connecting {
		events |= unix.EPOLLOUT
		b.outArmed = true
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: events, Fd: int32(fd)}); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	l.setObj(fd, b)
	return b, nil
}
