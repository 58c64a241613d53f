package evproxy

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// loop is one event loop: an epoll set, the client connections it owns,
// and its pools of idle target connections. Everything in it is touched
// by its own goroutine only, except the inbox (accepted descriptors and
// targets to retire, handed over by other goroutines), the counters, and
// the pools map, which other goroutines read under poolsMu for the idle
// counts.
type loop struct {
	p      *Proxy
	id     int
	epfd   int
	evfd   int
	events []unix.EpollEvent
	objs   []any // by fd: *cconn, *bconn
	conns  []*cconn
	now    int64
	err    error

	// pools is written by the loop only, under poolsMu; the loop reads
	// it without the lock (its own writes cannot race with it), other
	// goroutines with it (IdleByTarget, Stats).
	pools   map[Target]*tpool
	poolsMu sync.Mutex

	draining bool
	stopAt   int64
	lastSwp  int64
	lastYld  int64 // when the loop last yielded its P (run)
	// acceptPaused is when accepting resumes after the descriptor table
	// or memory ran out (0: not paused); the listener is out of the
	// epoll set meanwhile, so a full table cannot make the loop spin.
	acceptPaused int64

	inboxMu sync.Mutex
	inbox   []accepted
	retire  []Target // pools to close (Proxy.CloseIdle)
	stopped bool     // shut down: the eventfd is closed, wake no more

	nconns   atomic.Int64
	nreq     atomic.Int64
	nhandoff atomic.Int64
	npools   atomic.Int64
	nrefused atomic.Int64 // connections a Config.Gate cap refused
	npanics  atomic.Int64 // hook panics recovered
	nresumed atomic.Int64 // connections taken back (Proxy.Resume)
	nyield   atomic.Int64 // times the busy loop yielded its P (run)
}

// yieldEvery is how often a busy loop yields its P (run): well within
// the runtime's 10 ms preemption period.
const yieldEvery = int64(4 * time.Millisecond)

type accepted struct {
	fd  int
	sa  unix.Sockaddr
	res *resumed // a connection given back by Resume; nil: accepted
}

func newLoop(p *Proxy, id int) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("evproxy: epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("evproxy: eventfd: %w", err)
	}
	l := &loop{p: p, id: id, epfd: epfd, evfd: evfd, events: make([]unix.EpollEvent, 256), pools: make(map[Target]*tpool)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}); err != nil {
		l.closeFds()
		return nil, fmt.Errorf("evproxy: epoll_ctl eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, p.lnfd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(p.lnfd)}); err != nil {
		l.closeFds()
		return nil, fmt.Errorf("evproxy: epoll_ctl listener: %w", err)
	}
	return l, nil
}

func (l *loop) closeFds() {
	_ = unix.Close(l.evfd)
	_ = unix.Close(l.epfd)
}

// wake interrupts the loop's epoll_wait.
func (l *loop) wake() {
	var one = [8]byte{1}
	_, _ = unix.Write(l.evfd, one[:])
}

// Raw system calls: the descriptors are non-blocking, so these never
// block, and skipping the scheduler's syscall bookkeeping is measurable.

func rawRead(fd int, b []byte) (int, syscall.Errno) {
	if len(b) == 0 {
		return 0, 0
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(n), e
}

func rawWrite(fd int, b []byte) (int, syscall.Errno) {
	if len(b) == 0 {
		return 0, 0
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(n), e
}

func (l *loop) pollNow() int {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
	if e != 0 {
		return 0
	}
	return int(n)
}

func (l *loop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p := l.p
	busy := false
	for {
		n := 0
		if busy && p.cfg.BusyPoll {
			n = l.pollNow()
		}
		if n == 0 {
			wait := int(p.sweep/1e6) + 1
			if l.draining {
				// Wake for the shutdown deadline itself, not at the
				// next sweep after it: Run is bounded by ShutdownTimeout.
				wait = max(0, min(wait, int((l.stopAt-l.now+1e6-1)/1e6)))
			}
			var err error
			n, err = unix.EpollWait(l.epfd, l.events, wait)
			if err != nil && err != unix.EINTR {
				l.err = fmt.Errorf("evproxy: epoll_wait: %w", err)
				l.shutdown()
				return
			}
			if n < 0 {
				n = 0
			}
		}
		busy = n > 0
		l.now = p.nanotime()
		if p.stop.Load() && !l.draining {
			l.startDrain()
		}
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			fd := int(ev.Fd)
			switch {
			case fd == p.lnfd:
				if !l.draining {
					l.accept()
				}
				continue
			case fd == l.evfd:
				var b [8]byte
				_, _ = rawRead(l.evfd, b[:])
				continue
			}
			if fd >= len(l.objs) {
				continue
			}
			switch o := l.objs[fd].(type) {
			case *cconn:
				if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
					o.canRead = true
				}
				if ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
					o.canWrite = true
				}
				if ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
					o.rdhup = true
				}
				l.drive(o)
			case *bconn:
				if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
					o.canRead = true
				}
				if ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
					o.canWrite = true
				}
				if ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
					o.hup = true // EOF pending: keep reading until it shows
				}
				if o.owner != nil {
					l.drive(o.owner)
				} else if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
					// An idle connection became readable: the target
					// closed it (or sent garbage). Drop it.
					l.dropIdle(o)
				}
			}
		}
		l.takeInbox()
		if l.acceptPaused != 0 && l.now >= l.acceptPaused && !l.draining {
			l.acceptPaused = 0
			if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, p.lnfd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(p.lnfd)}); err != nil {
				l.err = fmt.Errorf("evproxy: epoll_ctl listener: %w", err)
				l.shutdown()
				return
			}
		}
		if busy && l.now-l.lastYld >= yieldEvery {
			// The runtime's sysmon preempts a goroutine that has held
			// its P for 10 ms without a reschedule, and a busy loop
			// never reschedules (its blocking epoll_wait is a system
			// call, which does not count). Each preemption of a
			// locked goroutine costs a hand-off of its P and back
			// (futex wake-ups and thread switches), and sends sysmon
			// back to polling every 20 µs: measured under the
			// runner's warm load, sysmon woke about 10,000 times a
			// second and took 15% of the front's CPU. Yielding a few
			// times per preemption period costs the same hand-off
			// once per yieldEvery and keeps sysmon asleep.
			l.lastYld = l.now
			l.nyield.Add(1)
			runtime.Gosched()
		}
		if l.now-l.lastSwp >= p.sweep {
			l.lastSwp = l.now
			l.sweepDeadlines()
			l.sweepPools()
		}
		if l.draining && (len(l.conns) == 0 || l.now >= l.stopAt) {
			l.shutdown()
			return
		}
	}
}

func (l *loop) startDrain() {
	l.draining = true
	l.stopAt = l.now + int64(l.p.cfg.ShutdownTimeout)
	if l.acceptPaused == 0 {
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, l.p.lnfd, nil)
	}
	for i := len(l.conns) - 1; i >= 0; i-- {
		if i >= len(l.conns) {
			continue
		}
		c := l.conns[i]
		if c.state == stRead && c.ir == c.iw {
			l.closeClient(c)
		}
	}
}

// shutdown closes everything the loop owns.
func (l *loop) shutdown() {
	for len(l.conns) > 0 {
		c := l.conns[len(l.conns)-1]
		l.abort(c)
	}
	l.poolsMu.Lock()
	for _, tp := range l.pools {
		l.closeIdle(tp)
	}
	clear(l.pools)
	l.poolsMu.Unlock()
	l.npools.Store(0)
	// Descriptors handed over but not yet taken.
	l.inboxMu.Lock()
	for _, a := range l.inbox {
		if a.res != nil {
			l.closeResumed(a)
			continue
		}
		_ = unix.Close(a.fd)
		l.nconns.Add(-1)
	}
	l.inbox = nil
	l.retire = nil
	l.stopped = true
	l.inboxMu.Unlock()
	l.closeFds()
}

// accept takes a few connections off the listener and gives each to the
// loop with the fewest clients.
func (l *loop) accept() {
	for i := 0; i < 16; i++ {
		fd, sa, err := unix.Accept4(l.p.lnfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			switch err {
			case unix.EAGAIN, unix.EINTR:
				return
			case unix.ECONNABORTED:
				continue
			}
			delay := 100 * time.Millisecond
			l.p.cfg.Logger.Warn("evproxy: accept failed; pausing", "err", err, "delay", delay)
			if unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, l.p.lnfd, nil) == nil {
				l.acceptPaused = l.now + int64(delay)
			}
			return
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		dst := l
		least := l.nconns.Load()
		for _, o := range l.p.loops {
			if n := o.nconns.Load(); n < least {
				dst, least = o, n
			}
		}
		dst.nconns.Add(1)
		if dst == l {
			l.addClient(fd, sa)
			continue
		}
		dst.inboxMu.Lock()
		dst.inbox = append(dst.inbox, accepted{fd: fd, sa: sa})
		dst.inboxMu.Unlock()
		dst.wake()
	}
}

func (l *loop) takeInbox() {
	l.inboxMu.Lock()
	in := l.inbox
	l.inbox = nil
	retire := l.retire
	l.retire = nil
	l.inboxMu.Unlock()
	for _, t := range retire {
		l.retirePool(t)
	}
	for _, a := range in {
		switch {
		case a.res != nil && l.draining:
			l.closeResumed(a)
		case a.res != nil:
			l.addResumed(a)
		case l.draining:
			_ = unix.Close(a.fd)
			l.nconns.Add(-1)
		default:
			l.addClient(a.fd, a.sa)
		}
	}
}

func (l *loop) setObj(fd int, o any) {
	for fd >= len(l.objs) {
		l.objs = append(l.objs, make([]any, len(l.objs)+64)...)
	}
	l.objs[fd] = o
}

func sockaddrIP(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(a.Addr).String()
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(a.Addr).Unmap().String()
	}
	return ""
}

func (l *loop) addClient(fd int, sa unix.Sockaddr) {
	c := &cconn{fd: fd, ip: sockaddrIP(sa), state: stRead, canWrite: true}
	c.req.ClientIP = c.ip
	c.req.Head = &c.head
	c.deadline = l.now + int64(l.p.cfg.IdleTimeout)
	if !l.admit(c, sa) {
		_ = unix.Close(fd)
		l.nconns.Add(-1)
		return
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}); err != nil {
		l.p.cfg.Logger.Warn("evproxy: epoll_ctl client", "err", err)
		_ = unix.Close(fd)
		l.release(c)
		l.nconns.Add(-1)
		return
	}
	c.idx = len(l.conns)
	l.conns = append(l.conns, c)
	l.setObj(fd, c)
}

// removeClient forgets c (its descriptor is closed or handed off by the
// caller).
func (l *loop) removeClient(c *cconn) {
	last := len(l.conns) - 1
	l.conns[c.idx] = l.conns[last]
	l.conns[c.idx].idx = c.idx
	l.conns[last] = nil
	l.conns = l.conns[:last]
	if c.fd < len(l.objs) && l.objs[c.fd] == c {
		l.objs[c.fd] = nil
	}
	c.state = stDead
	l.nconns.Add(-1)
}

func (l *loop) closeClient(c *cconn) {
	if c.state == stDead {
		return
	}
	if c.be != nil {
		l.closeTarget(c.be)
		c.be = nil
	}
	l.done(c, Aborted)
	l.end(c)
	l.removeClient(c)
	_ = unix.Close(c.fd)
	l.release(c)
}

// abort ends an exchange because the client went away or the proxy stops.
func (l *loop) abort(c *cconn) { l.closeClient(c) }

func (l *loop) sweepDeadlines() {
	for i := len(l.conns) - 1; i >= 0; i-- {
		if i >= len(l.conns) {
			continue
		}
		c := l.conns[i]
		if c.deadline == 0 || l.now < c.deadline {
			continue
		}
		switch c.state {
		case stRead:
			if c.ir < c.iw {
				l.reply(c, 408, "Request Timeout", "request head not received in time\n", nil)
				l.drive(c)
			} else {
				l.closeClient(c)
			}
		case stConnect:
			l.connectFailed(c, TimedOut)
			l.drive(c)
		case stSend, stResp:
			l.closeTarget(c.be)
			c.be = nil
			l.done(c, TimedOut)
			l.reply(c, 504, "Gateway Timeout", "node did not answer in time (response timeout)\n", nil)
			l.drive(c)
		default:
			l.closeClient(c)
		}
	}
}

// handoff passes c, from the start of its current request, to the
// goroutine path.
func (l *loop) handoff(c *cconn) {
	cfg := &l.p.cfg
	if c.be != nil {
		l.closeTarget(c.be)
		c.be = nil
	}
	l.done(c, Aborted)
	l.end(c)
	buffered := append([]byte(nil), c.in[c.ir:c.iw]...)
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	l.removeClient(c)
	l.nhandoff.Add(1)
	nc, err := handoffConn(c.fd)
	if err != nil {
		cfg.Logger.Warn("evproxy: hand-off failed", "err", err)
		l.release(c)
		return
	}
	l.callHandoff(l.wrapHandoff(nc, c), buffered)
}
