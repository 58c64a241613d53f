package evproxy

import (
	"fmt"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/paaskit/paaskit/internal/http1"
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

	hex []byte // scratch for chunk sizes
}

type accepted struct {
	fd int
	sa unix.Sockaddr
}

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
}

// Client connection states.
const (
	stRead    = iota // reading a request (idle, or part of one buffered)
	stConnect        // waiting for the target connection
	stSend           // writing the request to the target
	stResp           // waiting for the response head
	stBody           // forwarding the response body
	stClose          // flushing a last answer, then closing
	stDead           // closed or handed off
)

// Response body modes.
const (
	bodyNone = iota
	bodyLength
	bodyChunked
	bodyEOF
)

// Chunked decoder states.
const (
	csSize = iota
	csData
	csDataEnd
	csTrailer
	csDone
)

// cconn is a client connection.
type cconn struct {
	fd        int
	idx       int // in loop.conns
	ip        string
	in        []byte
	ir, iw    int // unconsumed request bytes: in[ir:iw]
	reqLen    int // bytes of the request being served, from ir
	headStart bool
	canRead   bool
	canWrite  bool
	rdhup     bool
	state     int
	deadline  int64

	out []byte // pending answer bytes: out[oo:]
	oo  int

	send []byte // the request as sent to the target
	so   int

	req        Request
	head       http1.Head
	resp       http1.Head
	be         *bconn
	dec        Decision
	routed     bool // Done is owed
	ending     bool // End is owed (Done said Answered; the body is under way)
	staleRetry bool

	mode        int
	remain      int64
	cs          int
	trailers    int
	reuse       bool
	clientClose bool

	adm admission // Config.Gate slot and PROXY header state (limits_linux.go)
}

const (
	targetBuf  = 16 << 10
	initialIn  = 4 << 10
	maxChunkLn = 4096
)

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
		dst.inbox = append(dst.inbox, accepted{fd, sa})
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
		if l.draining {
			_ = unix.Close(a.fd)
			l.nconns.Add(-1)
			continue
		}
		l.addClient(a.fd, a.sa)
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
			l.reply(c, 504, "Gateway Timeout", "node did not answer in time\n", nil)
			l.drive(c)
		default:
			l.closeClient(c)
		}
	}
}

// done reports o for the current Forward decision (once). Any outcome
// but Answered also ends the exchange; an answered one ends in end, when
// the body was relayed or cut.
func (l *loop) done(c *cconn, o Outcome) {
	if !c.routed {
		return
	}
	c.routed = false
	l.callDone(c, o)
	if o == Answered {
		c.ending = true
		return
	}
	c.ending = true
	l.end(c)
}

// end tells the handler the exchange is wholly over (once per Forward
// decision).
func (l *loop) end(c *cconn) {
	if !c.ending {
		return
	}
	c.ending = false
	if l.p.ender != nil {
		l.callEnd(c)
	}
}

// drive advances c as far as it can go without waiting.
func (l *loop) drive(c *cconn) {
	for {
		switch c.state {
		case stRead:
			if !l.readRequest(c) {
				return
			}
		case stConnect:
			b := c.be
			if !b.canWrite {
				return
			}
			soerr, err := unix.GetsockoptInt(b.fd, unix.SOL_SOCKET, unix.SO_ERROR)
			if err != nil || soerr != 0 {
				l.connectFailed(c, ConnectFailed)
				continue
			}
			b.connecting = false
			c.state = stSend
			c.deadline = l.now + int64(l.p.cfg.ResponseHeaderTimeout)
		case stSend:
			if c.rdhup {
				l.abort(c)
				return
			}
			b := c.be
			if !b.canWrite {
				return
			}
			n, e := rawWrite(b.fd, c.send[c.so:])
			if e == unix.EAGAIN {
				b.canWrite = false
				return
			}
			if e != 0 && e != unix.EINTR {
				l.targetFailed(c, e)
				continue
			}
			c.so += n
			if c.so < len(c.send) {
				b.canWrite = false
				continue
			}
			c.state = stResp
		case stResp:
			if c.rdhup {
				l.abort(c)
				return
			}
			if !l.readResponseHead(c) {
				return
			}
		case stBody:
			if !l.pump(c) {
				return
			}
		case stClose:
			if !l.flush(c) {
				return
			}
			_ = unix.Shutdown(c.fd, unix.SHUT_WR)
			l.closeClient(c)
			return
		default:
			return
		}
	}
}

// flush writes pending answer bytes; it reports whether none are left. A
// write error closes the client.
func (l *loop) flush(c *cconn) bool {
	for c.oo < len(c.out) {
		if !c.canWrite {
			return false
		}
		n, e := rawWrite(c.fd, c.out[c.oo:])
		if e == unix.EAGAIN {
			c.canWrite = false
			return false
		}
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			l.closeClient(c)
			return false
		}
		c.oo += n
		if c.oo < len(c.out) {
			c.canWrite = false
			return false
		}
	}
	c.out = c.out[:0]
	c.oo = 0
	return true
}

// readRequest parses the next request from the buffer or reads more. It
// reports whether c's state changed (or more bytes came in).
func (l *loop) readRequest(c *cconn) bool {
	cfg := &l.p.cfg
	if c.ir < c.iw && (c.adm.preface == prefaceNone || l.preface(c)) {
		avail := c.in[c.ir:c.iw]
		if hl := http1.HeadEnd(avail); hl < 0 {
			if len(avail) >= cfg.MaxHeaderBytes {
				l.reply(c, 431, "Request Header Fields Too Large", "request head larger than the limit\n", nil)
				return true
			}
		} else {
			if hl > cfg.MaxHeaderBytes {
				l.reply(c, 431, "Request Header Fields Too Large", "request head larger than the limit\n", nil)
				return true
			}
			h := &c.head
			if err := http1.ParseRequestHead(avail[:hl], h, cfg.MaxHeaderFields, ""); err != nil {
				if err == http1.ErrTooManyFields {
					l.reply(c, 431, "Request Header Fields Too Large", "too many header fields\n", nil)
				} else {
					l.reply(c, 400, "Bad Request", "malformed request: "+http1.Printable(err.Error())+"\n", nil)
				}
				return true
			}
			if cfg.MaxBodyBytes > 0 && h.ContentLength > cfg.MaxBodyBytes {
				l.reply(c, 413, "Content Too Large", "request body larger than "+strconv.FormatInt(cfg.MaxBodyBytes, 10)+" bytes\n", nil)
				return true
			}
			if h.Minor == 0 || h.ConnUpgrade || h.Expect100 || h.Chunked || h.ContentLength > int64(cfg.MaxBufferedBody) || l.draining {
				if l.draining {
					l.closeClient(c)
					return false
				}
				l.handoff(c)
				return false
			}
			need := hl
			if h.ContentLength > 0 {
				need += int(h.ContentLength)
			}
			if len(avail) >= need {
				c.reqLen = need
				l.route(c)
				return true
			}
		}
	}
	if !c.canRead {
		return false
	}
	// Make room.
	if c.ir == c.iw {
		c.ir, c.iw = 0, 0
	}
	if c.in == nil {
		c.in = make([]byte, initialIn)
	}
	if c.iw == len(c.in) {
		if c.ir > 0 {
			c.iw = copy(c.in, c.in[c.ir:c.iw])
			c.ir = 0
		} else {
			limit := cfg.MaxHeaderBytes + cfg.MaxBufferedBody
			if len(c.in) >= limit {
				// A whole head was parsed (else 431 above) and the
				// body fits: cannot happen; be safe.
				l.reply(c, 431, "Request Header Fields Too Large", "request larger than the buffer\n", nil)
				return true
			}
			nb := make([]byte, min(2*len(c.in), limit))
			copy(nb, c.in[:c.iw])
			c.in = nb
		}
	}
	space := len(c.in) - c.iw
	n, e := rawRead(c.fd, c.in[c.iw:])
	if e == unix.EAGAIN {
		c.canRead = false
		return false
	}
	if e == unix.EINTR {
		return true
	}
	if e != 0 || n == 0 {
		// EOF or error: nothing to answer.
		l.closeClient(c)
		return false
	}
	if c.ir == c.iw {
		c.deadline = l.now + int64(cfg.ReadHeaderTimeout)
	}
	c.iw += n
	if n < space && !c.rdhup {
		c.canRead = false
	}
	return true
}

// route asks the handler and starts the exchange.
func (l *loop) route(c *cconn) {
	c.req.Tag = nil
	c.req.Tried = c.req.Tried[:0]
	c.staleRetry = false
	l.routeAgain(c)
}

func (l *loop) routeAgain(c *cconn) {
	if len(c.req.Tried) >= 8 {
		l.reply(c, 502, "Bad Gateway", "cannot reach a node\n", nil)
		return
	}
	dec, ok := l.callRoute(c)
	if !ok {
		l.reply(c, 502, "Bad Gateway", "the proxy's route hook failed\n", nil)
		return
	}
	c.dec = dec
	switch c.dec.Action {
	case Reply:
		l.reply(c, c.dec.Status, c.dec.Reason, c.dec.Body, c.dec.Extra)
		return
	case Handoff:
		l.handoff(c)
		return
	}
	c.routed = true
	tp := l.pool(c.dec.Target)
	if tp == nil {
		// Not a literal address: the goroutine path can resolve it.
		l.done(c, Aborted)
		l.handoff(c)
		return
	}
	l.nreq.Add(1)
	l.buildRequest(c)
	l.startExchange(c, tp, false)
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

func (l *loop) startExchange(c *cconn, tp *tpool, fresh bool) {
	var b *bconn
	if !fresh && len(tp.idle) > 0 {
		b = tp.idle[len(tp.idle)-1]
		tp.idle[len(tp.idle)-1] = nil
		tp.idle = tp.idle[:len(tp.idle)-1]
		tp.nidle.Add(-1)
		b.reused = true
	} else {
		var err error
		b, err = l.dial(tp)
		if err != nil {
			l.connectFailed(c, ConnectFailed)
			return
		}
	}
	b.owner = c
	tp.active++
	tp.lastUse = l.now
	c.be = b
	c.so = 0
	if b.connecting {
		c.state = stConnect
		c.deadline = l.now + int64(l.p.cfg.DialTimeout)
	} else {
		c.state = stSend
		c.deadline = l.now + int64(l.p.cfg.ResponseHeaderTimeout)
	}
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
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	l.setObj(fd, b)
	return b, nil
}

// connectFailed: nothing was sent; ask the handler for another target.
func (l *loop) connectFailed(c *cconn, o Outcome) {
	if c.be != nil {
		l.closeTarget(c.be)
		c.be = nil
	}
	l.done(c, o)
	c.req.Tried = append(c.req.Tried, c.dec.ID)
	l.routeAgain(c)
}

// targetFailed: the connection broke before any response byte (e is
// the error, 0 for an orderly close).
func (l *loop) targetFailed(c *cconn, e syscall.Errno) {
	b := c.be
	reused := b.reused
	tp := b.pool
	l.closeTarget(b)
	c.be = nil
	// The target never took a request it did not read: a write that
	// failed (EPIPE) or a reset (ECONNRESET) on a pooled connection
	// means it had dropped the connection before the request came, so
	// even a request with a body (wholly buffered here) can be sent
	// again. An orderly close after the send may mean the request was
	// read, so only a replayable request is sent again then.
	unread := e == unix.EPIPE || e == unix.ECONNRESET
	switch {
	case reused && (c.dec.Replayable || unread) && !c.staleRetry:
		// A pooled connection the target had closed: the others
		// probably are too. Retry once on a fresh one.
		c.staleRetry = true
		l.closeIdle(tp)
		l.startExchange(c, tp, true)
	case reused:
		l.done(c, Stale)
		l.reply(c, 502, "Bad Gateway", "node closed the connection\n", nil)
	case c.dec.Replayable:
		l.done(c, Failed)
		c.req.Tried = append(c.req.Tried, c.dec.ID)
		c.staleRetry = false
		l.routeAgain(c)
	default:
		l.done(c, Failed)
		l.reply(c, 502, "Bad Gateway", "node failed before answering\n", nil)
	}
}

// buildRequest writes the forwarded request (head and body) into c.send.
func (l *loop) buildRequest(c *cconn) {
	h := &c.head
	s := c.send[:0]
	s = append(s, h.Method...)
	s = append(s, ' ')
	s = append(s, h.Target...)
	s = append(s, " HTTP/1.1\r\n"...)
	s = http1.AppendFields(s, h.Fields)
	s = append(s, "X-Forwarded-For: "...)
	if h.XFF != nil {
		s = append(s, h.XFF...)
		s = append(s, ", "...)
	}
	s = append(s, c.ip...)
	s = append(s, "\r\nX-Forwarded-Proto: "...)
	s = append(s, l.p.cfg.Proto...)
	s = append(s, "\r\nX-Forwarded-Host: "...)
	s = append(s, h.Host...)
	s = append(s, "\r\n"...)
	if h.ContentLength >= 0 {
		s = append(s, "Content-Length: "...)
		s = strconv.AppendInt(s, h.ContentLength, 10)
		s = append(s, "\r\n"...)
	}
	s = append(s, "\r\n"...)
	if h.ContentLength > 0 {
		end := c.ir + c.reqLen
		s = append(s, c.in[end-int(h.ContentLength):end]...)
	}
	c.send = s
}

// readResponseHead reads and handles the response head; it reports
// whether c's state changed.
func (l *loop) readResponseHead(c *cconn) bool {
	cfg := &l.p.cfg
	b := c.be
	for {
		hl := http1.HeadEnd(b.buf[b.r:b.w])
		if hl >= 0 {
			if hl > cfg.MaxHeaderBytes {
				l.brokenResponse(c, "node sent a broken response\n")
				return true
			}
			if l.gotHead(c, hl) {
				return true
			}
			continue // 1xx
		}
		if b.w-b.r >= cfg.MaxHeaderBytes {
			l.brokenResponse(c, "node sent a broken response\n")
			return true
		}
		if !b.canRead {
			return false
		}
		if b.w == len(b.buf) {
			if b.r > 0 {
				b.w = copy(b.buf, b.buf[b.r:b.w])
				b.r = 0
			} else {
				nb := make([]byte, min(2*len(b.buf), cfg.MaxHeaderBytes+1))
				copy(nb, b.buf[:b.w])
				b.buf = nb
			}
		}
		space := len(b.buf) - b.w
		n, e := rawRead(b.fd, b.buf[b.w:])
		if e == unix.EAGAIN {
			b.canRead = false
			return false
		}
		if e == unix.EINTR {
			continue
		}
		if e != 0 || n == 0 {
			if b.w > b.r {
				l.brokenResponse(c, "node sent a broken response\n")
				return true
			}
			l.targetFailed(c, e)
			return true
		}
		b.w += n
		if n < space && !b.hup {
			b.canRead = false
		}
	}
}

func (l *loop) brokenResponse(c *cconn, msg string) {
	l.closeTarget(c.be)
	c.be = nil
	l.done(c, Broken)
	l.reply(c, 502, "Bad Gateway", msg, nil)
}

// gotHead handles a whole response head of length hl in the target
// buffer; it reports false for a 1xx that was passed on (read the next).
func (l *loop) gotHead(c *cconn, hl int) bool {
	cfg := &l.p.cfg
	b := c.be
	resp := &c.resp
	if err := http1.ParseResponseHead(b.buf[b.r:b.r+hl], resp, cfg.MaxHeaderFields, cfg.MissHeader); err != nil {
		cfg.Logger.Warn("evproxy: malformed response", "target", b.pool.t.Addr, "err", err)
		l.brokenResponse(c, "node sent a malformed response\n")
		return true
	}
	if p := cfg.DropFieldPrefix; p != "" {
		for k := range resp.Fields {
			if f := &resp.Fields[k]; len(f.Name) >= len(p) && asciiHasPrefixFold(f.Name, p) {
				f.Drop = true
			}
		}
	}
	if resp.Status < 200 {
		if resp.Status == 101 {
			l.brokenResponse(c, "node switched protocols unasked\n")
			return true
		}
		if resp.Status != 100 {
			l.writeHead(c, resp, -2, false)
		}
		b.r += hl
		return false
	}
	if resp.MissMark && resp.Status == 404 && c.dec.HandoffOnMiss {
		l.closeTarget(b)
		c.be = nil
		l.done(c, Missed)
		c.out, c.oo = c.out[:0], 0
		l.handoff(c)
		return true
	}
	b.r += hl
	l.done(c, Answered)
	isHead := string(c.head.Method) == "HEAD"
	c.reuse = !resp.ConnClose && (resp.Minor == 1 || resp.ConnKeepAlive)
	c.clientClose = c.head.ConnClose || l.draining
	length := int64(-2)
	switch {
	case isHead || resp.Status == 204 || resp.Status == 304:
		c.mode = bodyNone
	case resp.Chunked:
		c.mode = bodyChunked
		c.cs = csSize
		c.trailers = 0
		length = -1
	case resp.ContentLength >= 0:
		c.mode = bodyLength
		c.remain = resp.ContentLength
		length = resp.ContentLength
	default:
		c.mode = bodyEOF
		c.reuse = false
		c.clientClose = true
		length = -3
	}
	l.writeHead(c, resp, length, c.clientClose)
	c.state = stBody
	c.deadline = l.now + int64(cfg.IdleTimeout)
	return true
}

// writeHead appends a response head to c.out. length: >= 0 a
// Content-Length, -1 chunked, -2 as received (no body), -3 none.
func (l *loop) writeHead(c *cconn, resp *http1.Head, length int64, closeConn bool) {
	o := c.out
	o = append(o, "HTTP/1.1 "...)
	o = strconv.AppendInt(o, int64(resp.Status), 10)
	o = append(o, ' ')
	o = append(o, resp.Reason...)
	o = append(o, "\r\n"...)
	o = http1.AppendFields(o, resp.Fields)
	switch {
	case length >= 0:
		o = append(o, "Content-Length: "...)
		o = strconv.AppendInt(o, length, 10)
		o = append(o, "\r\n"...)
	case length == -1:
		o = append(o, "Transfer-Encoding: chunked\r\n"...)
	case length == -2 && resp.Status >= 200:
		if resp.ContentLength >= 0 {
			o = append(o, "Content-Length: "...)
			o = strconv.AppendInt(o, resp.ContentLength, 10)
			o = append(o, "\r\n"...)
		} else if resp.Chunked {
			o = append(o, "Transfer-Encoding: chunked\r\n"...)
		}
	}
	if closeConn {
		o = append(o, "Connection: close\r\n"...)
	}
	o = append(o, "\r\n"...)
	c.out = o
}

// pump forwards the response body; it reports whether c's state changed.
func (l *loop) pump(c *cconn) bool {
	b := c.be
	for {
		fin, err := l.moveBody(c)
		if err != nil {
			l.p.cfg.Logger.Warn("evproxy: node failed mid-response", "target", b.pool.t.Addr, "err", err)
			if l.flush(c) { // best effort: what was valid, then the cut
				l.closeClient(c)
			} else if c.state != stDead {
				l.closeClient(c)
			}
			return false
		}
		if !l.flush(c) {
			if c.state == stDead {
				return false
			}
			if c.rdhup {
				l.abort(c)
			}
			return false
		}
		if fin {
			l.finish(c)
			return true
		}
		if c.rdhup {
			l.abort(c)
			return false
		}
		if !b.canRead {
			return false
		}
		if b.r == b.w {
			b.r, b.w = 0, 0
		} else if b.r > 0 {
			b.w = copy(b.buf, b.buf[b.r:b.w])
			b.r = 0
		}
		space := len(b.buf) - b.w
		n, e := rawRead(b.fd, b.buf[b.w:])
		if e == unix.EAGAIN {
			b.canRead = false
			return false
		}
		if e == unix.EINTR {
			continue
		}
		if e != 0 || n == 0 {
			if e == 0 && c.mode == bodyEOF {
				l.finish(c)
				return true
			}
			l.p.cfg.Logger.Warn("evproxy: node failed mid-response", "target", b.pool.t.Addr, "err", errnoOrEOF(e))
			l.closeClient(c)
			return false
		}
		b.w += n
		if n < space && !b.hup {
			b.canRead = false
		}
		c.deadline = l.now + int64(l.p.cfg.IdleTimeout)
	}
}

func errnoOrEOF(e syscall.Errno) error {
	if e == 0 {
		return fmt.Errorf("connection closed mid-body")
	}
	return e
}

// moveBody moves buffered body bytes from the target buffer to c.out,
// decoding and re-encoding chunked framing; it reports whether the body
// is complete.
func (l *loop) moveBody(c *cconn) (bool, error) {
	b := c.be
	switch c.mode {
	case bodyNone:
		return true, nil
	case bodyLength:
		k := min(c.remain, int64(b.w-b.r))
		c.out = append(c.out, b.buf[b.r:b.r+int(k)]...)
		b.r += int(k)
		c.remain -= k
		return c.remain == 0, nil
	case bodyEOF:
		c.out = append(c.out, b.buf[b.r:b.w]...)
		b.r = b.w
		return false, nil
	}
	for b.r < b.w {
		switch c.cs {
		case csSize, csTrailer:
			line, ok, err := takeLine(b)
			if err != nil {
				return false, err
			}
			if !ok {
				return false, nil
			}
			if c.cs == csTrailer {
				if len(line) == 0 {
					c.out = append(c.out, "\r\n"...)
					c.cs = csDone
					return true, nil
				}
				c.trailers++
				if err := checkTrailer(line, c.trailers); err != nil {
					return false, err
				}
				c.out = append(c.out, line...)
				c.out = append(c.out, "\r\n"...)
				continue
			}
			size, err := http1.ParseChunkSize(line)
			if err != nil {
				return false, err
			}
			if size == 0 {
				c.out = append(c.out, "0\r\n"...)
				c.cs = csTrailer
				continue
			}
			c.out = strconv.AppendInt(c.out, size, 16)
			c.out = append(c.out, "\r\n"...)
			c.remain = size
			c.cs = csData
		case csData:
			k := min(c.remain, int64(b.w-b.r))
			c.out = append(c.out, b.buf[b.r:b.r+int(k)]...)
			b.r += int(k)
			c.remain -= k
			if c.remain == 0 {
				c.cs = csDataEnd
			}
		case csDataEnd:
			if b.w-b.r < 2 {
				return false, nil
			}
			if b.buf[b.r] != '\r' || b.buf[b.r+1] != '\n' {
				return false, http1.Malformed("chunk data not followed by CRLF")
			}
			b.r += 2
			c.out = append(c.out, "\r\n"...)
			c.cs = csSize
		case csDone:
			return true, nil
		}
	}
	return c.cs == csDone, nil
}

// takeLine takes a CRLF-terminated line from the target buffer.
func takeLine(b *bconn) ([]byte, bool, error) {
	buf := b.buf[b.r:b.w]
	for i, ch := range buf {
		if ch != '\n' {
			continue
		}
		if i == 0 || buf[i-1] != '\r' {
			return nil, false, http1.Malformed("line ends in a bare LF")
		}
		line := buf[:i-1]
		for _, x := range line {
			if x == '\r' {
				return nil, false, http1.Malformed("bare CR in line")
			}
		}
		b.r += i + 1
		return line, true, nil
	}
	if len(buf) > maxChunkLn {
		return nil, false, http1.Malformed("line longer than %d bytes", maxChunkLn)
	}
	return nil, false, nil
}

func checkTrailer(tl []byte, n int) error {
	if n > 64 {
		return http1.Malformed("too many trailer fields")
	}
	if tl[0] == ' ' || tl[0] == '\t' {
		return http1.Malformed("obs-fold in trailer")
	}
	colon := -1
	for i, x := range tl {
		if x == ':' {
			colon = i
			break
		}
	}
	if colon <= 0 || !http1.IsToken(tl[:colon]) {
		return http1.Malformed("trailer field %q", tl)
	}
	for _, x := range tl[colon+1:] {
		if x < ' ' && x != '\t' || x == 0x7f {
			return http1.Malformed("control character in trailer field")
		}
	}
	return nil
}

// finish ends an exchange whose response was wholly forwarded.
func (l *loop) finish(c *cconn) {
	b := c.be
	c.be = nil
	tp := b.pool
	l.end(c)
	if c.reuse && b.r == b.w && !b.hup && !l.draining && !tp.retired && len(tp.idle) < l.p.cfg.MaxIdlePerTarget {
		b.owner = nil
		tp.active--
		tp.lastUse = l.now
		b.r, b.w = 0, 0
		tp.idle = append(tp.idle, b)
		tp.nidle.Add(1)
	} else {
		l.closeTarget(b)
	}
	c.ir += c.reqLen
	c.reqLen = 0
	c.req.Tag = nil
	c.head.Method = nil // its bytes are consumed
	if c.clientClose {
		c.state = stClose
		c.deadline = l.now + int64(l.p.cfg.IdleTimeout)
		return
	}
	c.state = stRead
	if c.ir == c.iw {
		c.deadline = l.now + int64(l.p.cfg.IdleTimeout)
	} else {
		c.deadline = l.now + int64(l.p.cfg.ReadHeaderTimeout)
	}
}

// reply answers with a plain-text page and closes the connection.
func (l *loop) reply(c *cconn, status int, reason, body string, extra []string) {
	if c.be != nil {
		l.closeTarget(c.be)
		c.be = nil
	}
	l.done(c, Aborted)
	l.end(c)
	o := c.out
	o = append(o, "HTTP/1.1 "...)
	o = strconv.AppendInt(o, int64(status), 10)
	o = append(o, ' ')
	o = append(o, reason...)
	o = append(o, "\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\nContent-Length: "...)
	o = strconv.AppendInt(o, int64(len(body)), 10)
	o = append(o, "\r\n"...)
	for _, e := range extra {
		o = append(o, e...)
		o = append(o, "\r\n"...)
	}
	o = append(o, "\r\n"...)
	if string(c.head.Method) != "HEAD" {
		o = append(o, body...)
	}
	c.out = o
	c.state = stClose
	c.deadline = l.now + int64(l.p.cfg.IdleTimeout)
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

// asciiHasPrefixFold reports whether b starts with the lower-case ASCII
// prefix p, ignoring case.
func asciiHasPrefixFold(b []byte, p string) bool {
	for k := 0; k < len(p); k++ {
		c := b[k]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != p[k] {
			return false
		}
	}
	return true
}
