package evproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paaskit/paaskit/internal/admit"
	"golang.org/x/sys/unix"
)

// ErrRunTwice is returned by a second call of Proxy.Run.
var ErrRunTwice = errors.New("evproxy: Proxy.Run called twice")

// Proxy is a set of event loops serving one listener.
type Proxy struct {
	cfg     Config
	start   time.Time
	loops   []*loop
	loopsP  atomic.Pointer[[]*loop] // loops, for Stats
	lnfd    int
	stop    atomic.Bool
	started atomic.Bool
	sweep   int64 // nanoseconds between deadline sweeps
	ender   Ender // the Handler's End, if it has one
}

// New validates cfg and returns a proxy; Run serves.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, start: time.Now(), lnfd: -1}
	p.ender, _ = cfg.Handler.(Ender)
	sw := 250 * time.Millisecond
	for _, d := range []time.Duration{cfg.ReadHeaderTimeout, cfg.IdleTimeout, cfg.DialTimeout, cfg.ResponseHeaderTimeout} {
		sw = min(sw, max(d/4, time.Millisecond))
	}
	p.sweep = int64(sw)
	return p, nil
}

func (p *Proxy) nanotime() int64 { return int64(time.Since(p.start)) }

// Run serves until ctx ends, then stops accepting, lets exchanges in
// flight finish for up to ShutdownTimeout, closes every connection it
// owns (handed-off ones belong to Config.Handoff) and returns once every
// loop has stopped. A Proxy runs once.
func (p *Proxy) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return ErrRunTwice
	}
	sc, err := p.cfg.Listener.SyscallConn()
	if err != nil {
		return fmt.Errorf("evproxy: listener %s: %w", p.cfg.Listener.Addr(), err)
	}
	var derr error
	if cerr := sc.Control(func(fd uintptr) {
		p.lnfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); cerr != nil {
		return fmt.Errorf("evproxy: listener %s: %w", p.cfg.Listener.Addr(), cerr)
	}
	if derr != nil {
		return fmt.Errorf("evproxy: dup listener %s: %w", p.cfg.Listener.Addr(), derr)
	}
	defer func() { _ = unix.Close(p.lnfd) }()
	if err := unix.SetNonblock(p.lnfd, true); err != nil {
		return fmt.Errorf("evproxy: listener %s: %w", p.cfg.Listener.Addr(), err)
	}
	for i := 0; i < p.cfg.Loops; i++ {
		l, err := newLoop(p, i)
		if err != nil {
			for _, l := range p.loops {
				l.closeFds()
			}
			return err
		}
		p.loops = append(p.loops, l)
	}
	p.loopsP.Store(&p.loops)
	var wg sync.WaitGroup
	for _, l := range p.loops {
		wg.Add(1)
		go func() { defer wg.Done(); l.run() }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-ctx.Done():
		p.stop.Store(true)
		for _, l := range p.loops {
			l.wake()
		}
		<-done
	case <-done:
	}
	var errs []error
	for _, l := range p.loops {
		if l.err != nil {
			errs = append(errs, l.err)
		}
	}
	return errors.Join(errs...)
}

// Stats are a proxy's counters, summed over its loops.
type Stats struct {
	Conns     int64 // client connections served by the loops now
	Requests  int64 // requests forwarded by the loops so far
	Handoffs  int64 // client connections handed off so far
	IdleConns int64 // idle pooled target connections now
	Pools     int64 // per-target pools kept by the loops now
	Refused   int64 // client connections refused by Config.Gate's caps so far
	Panics    int64 // hook panics recovered so far
	Resumed   int64 // connections given back by Resume so far
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	var s Stats
	lp := p.loopsP.Load()
	if lp == nil {
		return s
	}
	for _, l := range *lp {
		s.Conns += l.nconns.Load()
		s.Requests += l.nreq.Load()
		s.Handoffs += l.nhandoff.Load()
		s.Pools += l.npools.Load()
		s.Refused += l.nrefused.Load()
		s.Panics += l.npanics.Load()
		s.Resumed += l.nresumed.Load()
		l.poolsMu.Lock()
		for _, tp := range l.pools {
			s.IdleConns += tp.nidle.Load()
		}
		l.poolsMu.Unlock()
	}
	return s
}

// IdleByTarget returns the idle pooled connections to each target,
// summed over the loops (targets with none are left out). It is safe to
// call from any goroutine, at any time: each loop keeps an atomic count
// per pool, and the call holds each loop's pool-map lock only while it
// reads them, so the loops never wait for it beyond a map insert or
// delete. The figures are a snapshot: a loop may take or return a
// connection the moment after.
func (p *Proxy) IdleByTarget() map[Target]int64 {
	m := map[Target]int64{}
	lp := p.loopsP.Load()
	if lp == nil {
		return m
	}
	for _, l := range *lp {
		l.poolsMu.Lock()
		for t, tp := range l.pools {
			if n := tp.nidle.Load(); n > 0 {
				m[t] += n
			}
		}
		l.poolsMu.Unlock()
	}
	return m
}

// CloseIdle asks every loop to close its idle connections to targets and
// to pool no more of the connections to them still in use (they are
// closed when their exchange ends): the targets left the caller's table.
// A later request for one of them starts a new pool. It returns at once;
// the loops act on it when they next wake, which it makes happen. Safe
// to call from any goroutine, before Run or after it returned (then it
// does nothing).
func (p *Proxy) CloseIdle(targets ...Target) {
	if len(targets) == 0 {
		return
	}
	lp := p.loopsP.Load()
	if lp == nil {
		return
	}
	for _, l := range *lp {
		l.inboxMu.Lock()
		if !l.stopped {
			l.retire = append(l.retire, targets...)
			l.wake()
		}
		l.inboxMu.Unlock()
	}
}

// handoffConn turns a raw client fd into a net.Conn; the fd is closed.
func handoffConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "client")
	c, err := net.FileConn(f)
	_ = f.Close()
	return c, err
}

// ErrNotServing is returned by Resume when the loops are not running (not
// yet, or stopping).
var ErrNotServing = errors.New("evproxy: the event loops are not serving")

// Resume gives the loops a client connection they handed off (Handoff)
// back, once the goroutine path is done with the exchange it took it
// for, with buffered, the bytes it already read from it (the start of
// the next request, or nothing): the loop with the fewest clients serves
// it from then on as if it had never left. c must be a plain TCP
// connection, or an *admit.Conn over one whose PROXY header (if any) was
// read; it keeps its Config.Gate slot and client address. On success c
// belongs to the loops and the caller must not touch it again (its Close
// is then a no-op for an *admit.Conn; a *net.TCPConn is closed here, the
// loop holding its own descriptor). On an error c is left as it was.
// Safe to call from any goroutine.
func (p *Proxy) Resume(c net.Conn, buffered []byte) error {
	lp := p.loopsP.Load()
	if lp == nil || p.stop.Load() {
		return ErrNotServing
	}
	if limit := p.cfg.MaxHeaderBytes + p.cfg.MaxBufferedBody; len(buffered) > limit {
		return fmt.Errorf("evproxy: resume with %d bytes buffered, over %d", len(buffered), limit)
	}
	ac, isAdmit := c.(*admit.Conn)
	sock := c
	if isAdmit {
		if p.cfg.Gate == nil {
			return errors.New("evproxy: resume of an admitted connection without a Gate")
		}
		sock = ac.Conn
	}
	tc, ok := sock.(*net.TCPConn)
	if !ok {
		return fmt.Errorf("evproxy: resume of a %T, not a TCP connection", sock)
	}
	ip := ""
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ip = ta.IP.String()
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			ip = a.Unmap().String()
		}
	}
	sc, err := tc.SyscallConn()
	if err != nil {
		return fmt.Errorf("evproxy: resume: %w", err)
	}
	fd := -1
	var derr error
	if cerr := sc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil || derr != nil {
		return fmt.Errorf("evproxy: resume: dup: %w", errors.Join(cerr, derr))
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return fmt.Errorf("evproxy: resume: %w", err)
	}
	res := &resumed{ip: ip, in: buffered, adm: admission{preface: prefaceNone}}
	if isAdmit {
		_, slot, ok := ac.Detach()
		if !ok {
			_ = unix.Close(fd)
			return errors.New("evproxy: resume: the connection's PROXY header is still to be read")
		}
		res.adm.held, res.adm.slotIP = true, slot
	}
	// The loop owns the duplicate; the runtime's descriptor goes (the
	// socket stays open through the duplicate).
	_ = tc.Close()
	loops := *lp
	dst := loops[0]
	for _, l := range loops[1:] {
		if l.nconns.Load() < dst.nconns.Load() {
			dst = l
		}
	}
	dst.nconns.Add(1)
	dst.inboxMu.Lock()
	if dst.stopped {
		dst.inboxMu.Unlock()
		dst.closeResumed(accepted{fd: fd, res: res})
		return nil
	}
	dst.inbox = append(dst.inbox, accepted{fd: fd, res: res})
	dst.inboxMu.Unlock()
	dst.wake()
	return nil
}

// resumed is what a connection given back by Resume brings along.
type resumed struct {
	ip  string
	in  []byte
	adm admission
}

// addResumed takes a resumed connection on: it is served from its
// buffered bytes on.
func (l *loop) addResumed(a accepted) {
	cfg := &l.p.cfg
	c := &cconn{fd: a.fd, ip: a.res.ip, state: stRead, canRead: true, canWrite: true, adm: a.res.adm}
	c.req.ClientIP = c.ip
	c.req.Head = &c.head
	c.deadline = l.now + int64(cfg.IdleTimeout)
	if n := len(a.res.in); n > 0 {
		c.in = make([]byte, max(initialIn, n))
		c.iw = copy(c.in, a.res.in)
		c.deadline = l.now + int64(cfg.ReadHeaderTimeout)
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, a.fd, &unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(a.fd)}); err != nil {
		cfg.Logger.Warn("evproxy: epoll_ctl resumed client", "err", err)
		l.closeResumed(a)
		return
	}
	c.idx = len(l.conns)
	l.conns = append(l.conns, c)
	l.setObj(a.fd, c)
	l.nresumed.Add(1)
	l.drive(c)
}

// closeResumed closes a resumed connection the loop cannot take.
func (l *loop) closeResumed(a accepted) {
	_ = unix.Close(a.fd)
	l.nconns.Add(-1)
	if a.res.adm.held {
		l.p.cfg.Gate.Release(a.res.adm.slotIP)
	}
}
