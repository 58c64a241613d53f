package zmqloop

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ppollWaiter is the first, short phase of a wait for a socket: a blocking
// ppoll(2) on the socket's wait fd and an eventfd that ends it early, made
// from the waiting goroutine itself. The netpoller phase that follows has
// no limit but wakes slower: on the 2-vCPU VM this was measured on, a
// goroutine parked in the netpoller took 118-125µs per bare DEALER/ROUTER
// round trip, one in ppoll 88-113µs, one blocked in libzmq 81-86µs (the
// scheduler's extra thread wake-ups cost a cross-CPU interrupt each).
//
// A goroutine in a blocking system call keeps its P until sysmon retakes
// it, as one in a file read does. So a wait stays in ppoll at most
// budget, only while its side is idle (a Client with no other call in
// flight, a ReplyLoop with no handler running: otherwise the goroutines
// its replies wake need that P), never with GOMAXPROCS 1, and never in
// more goroutines of the process at once than there are Ps.
type ppollWaiter struct {
	fds    [2]unix.PollFd // the socket's wait fd, the eventfd
	budget time.Duration
}

// newPpollWaiter returns a ppollWaiter for the wait fd behind rc that
// waits up to budget per wait, or nil if budget is not positive. The caller closes it
// after the last wait.
func newPpollWaiter(rc syscall.RawConn, budget time.Duration) (*ppollWaiter, error) {
	if budget <= 0 {
		return nil, nil
	}
	var fd int
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return nil, fmt.Errorf("zmqloop: wait fd: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("zmqloop: eventfd: %w", err)
	}
	return &ppollWaiter{fds: [2]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(efd), Events: unix.POLLIN}}, budget: budget}, nil
}

// ppollWaiters counts the goroutines of this process in a ppollWaiter's
// wait; ppollWaits counts the waits (for tests).
var ppollWaiters atomic.Int32
var ppollWaits atomic.Int64

// until returns when a wait that begins now must end: now plus budget, or
// the zero time for a nil ppollWaiter.
func (s *ppollWaiter) until() time.Time {
	if s == nil {
		return time.Time{}
	}
	return time.Now().Add(s.budget)
}

// wait blocks until the wait fd is readable, wake is called, or d has
// passed. It reports false if it cannot wait (a nil ppollWaiter, ppoll failed,
// or as many goroutines as there are Ps wait in one: see ppollWaiter); the
// caller then waits in the netpoller.
func (s *ppollWaiter) wait(d time.Duration) bool {
	if s == nil {
		return false
	}
	n := ppollWaiters.Add(1)
	defer ppollWaiters.Add(-1)
	if p := int32(runtime.GOMAXPROCS(0)); p < 2 || n > p {
		return false
	}
	ppollWaits.Add(1)
	ts := unix.NsecToTimespec(int64(d))
	fds := s.fds
	_, err := unix.Ppoll(fds[:], &ts, nil)
	if err != nil {
		return errors.Is(err, unix.EINTR)
	}
	if fds[1].Revents != 0 {
		var b [8]byte
		_, _ = unix.Read(int(s.fds[1].Fd), b[:])
	}
	return true
}

// wake ends the current or next wait early. Safe from any goroutine.
func (s *ppollWaiter) wake() {
	if s == nil {
		return
	}
	b := [8]byte{1}
	_, _ = unix.Write(int(s.fds[1].Fd), b[:])
}

// close releases the eventfd; the wait fd belongs to the caller.
func (s *ppollWaiter) close() {
	if s != nil {
		_ = unix.Close(int(s.fds[1].Fd))
	}
}
