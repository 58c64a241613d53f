//go:build unix

package zmqloop

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"
	"golang.org/x/sys/unix"
)

// fdWatch turns a socket's ZMQ_FD into a Go channel signal, so the
// goroutine that owns the socket parks in a select (on this, its ctx, its
// work channels) instead of blocking in a cgo zmq_poll. A goroutine blocked
// in cgo keeps its P until sysmon retakes it (20µs to 10ms later); with two
// cores and two such loops, every hand-off to a handler goroutine waited
// for that, which made a round trip several times slower than raw REQ/REP.
//
// ZMQ_FD is libzmq's mailbox eventfd: readable means "commands are pending,
// look at ZMQ_EVENTS", not "a message is there"; libzmq consumes it whenever
// the owner touches the socket. The owner therefore always drains (recv
// until ZMQ_EVENTS has no POLLIN) before it waits. The watcher waits on a
// dup of the fd in Go's netpoller (edge-triggered). Before each wait it
// re-arms and then checks the fd's level with poll(2), so an edge that
// arrived while the owner was busy is never lost: it either left the
// eventfd readable (seen by the check) or arrives after re-arming (seen by
// the netpoller). The watcher never calls libzmq.
type fdWatch struct {
	f     *os.File
	c     chan<- struct{}
	rearm chan struct{} // the owner drained the socket: wait again
	quit  chan struct{}
	done  chan struct{}
}

// newFDWatch starts a watcher for s that signals c (capacity 1; signals
// coalesce). Call from the goroutine that owns s.
func newFDWatch(s *zmq.Socket, c chan<- struct{}) (*fdWatch, error) {
	f, rc, err := pollableFD(s)
	if err != nil {
		return nil, err
	}
	w := &fdWatch{f: f, c: c, rearm: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go w.run(rc)
	return w, nil
}

func (w *fdWatch) run(rc syscall.RawConn) {
	defer close(w.done)
	for {
		checked := false
		err := rc.Read(func(fd uintptr) bool {
			if checked {
				return true // the netpoller saw an edge
			}
			checked = true
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, 0)
			return err == nil && n > 0 // readable now: no need to wait
		})
		if err != nil {
			return // closed
		}
		select {
		case w.c <- struct{}{}:
		default:
		}
		// The eventfd stays readable until libzmq consumes it, which only
		// the owner does (by draining); wait for that before looking
		// again, or this loop would spin.
		select {
		case <-w.rearm:
		case <-w.quit:
			return
		}
	}
}

// drained tells the watcher the owner has drained the socket (ZMQ_EVENTS
// shows no POLLIN), so it may wait for the next edge. Owner only; never
// blocks.
func (w *fdWatch) drained() {
	select {
	case w.rearm <- struct{}{}:
	default:
	}
}

// stop closes the dup and waits for the watcher goroutine to exit. Call
// before closing the socket.
func (w *fdWatch) stop() {
	close(w.quit)
	_ = w.f.Close()
	<-w.done
}

// fdWaiter lets the goroutine that owns a socket wait for its ZMQ_FD in Go's
// netpoller itself (no watcher goroutine, one hand-off less per message).
// Other goroutines wake it with interrupt, which sets a read deadline in the
// past; ctx cancellation does the same through context.AfterFunc. The same
// drain-before-wait rule as fdWatch applies.
type fdWaiter struct {
	f  *os.File
	rc syscall.RawConn
}

func newFDWaiter(s *zmq.Socket) (*fdWaiter, error) {
	f, rc, err := pollableFD(s)
	if err != nil {
		return nil, err
	}
	return &fdWaiter{f: f, rc: rc}, nil
}

// wait blocks until the fd is readable (now or after an edge) or until
// interrupt is called. Owner only.
func (w *fdWaiter) wait() error {
	checked := false
	err := w.rc.Read(func(fd uintptr) bool {
		if checked {
			return true
		}
		checked = true
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		return err == nil && n > 0
	})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return err
}

// interrupt wakes a wait in progress or makes the next one return at once
// (until rearm). Safe from any goroutine.
func (w *fdWaiter) interrupt() { _ = w.f.SetReadDeadline(time.Unix(1, 0)) }

// rearm clears an interrupt. Owner only; check for work after it.
func (w *fdWaiter) rearm() { _ = w.f.SetReadDeadline(time.Time{}) }

func (w *fdWaiter) close() { _ = w.f.Close() }

// pollableFD duplicates s's ZMQ_FD into an *os.File whose RawConn waits in
// Go's netpoller. The duplicate belongs to the caller, who closes it.
func pollableFD(s *zmq.Socket) (*os.File, syscall.RawConn, error) {
	fd, err := s.GetFd()
	if err != nil {
		return nil, nil, fmt.Errorf("zmqloop: get ZMQ_FD: %w", err)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("zmqloop: dup ZMQ_FD %d: %w", fd, err)
	}
	f := os.NewFile(uintptr(dup), "zmq-fd")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("zmqloop: watch ZMQ_FD: %w", err)
	}
	return f, rc, nil
}
