package zmqloop

import (
	"fmt"
	"os"
	"syscall"

	zmq "github.com/pebbe/zmq4"
	"golang.org/x/sys/unix"
)

// waitFD returns one file that is readable when any of socks has pending
// libzmq commands, for a goroutine to wait on in Go's netpoller: a dup of
// the socket's ZMQ_FD for one socket, an epoll set of their ZMQ_FDs for
// several (an epoll fd is itself pollable, level-triggered on its members).
// The caller closes the file before the sockets.
func waitFD(socks []*zmq.Socket) (*os.File, syscall.RawConn, error) {
	if len(socks) == 1 {
		return pollableFD(socks[0])
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, nil, fmt.Errorf("zmqloop: epoll_create1: %w", err)
	}
	for _, s := range socks {
		fd, err := s.GetFd()
		if err == nil {
			err = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)})
		}
		if err != nil {
			_ = unix.Close(ep)
			return nil, nil, fmt.Errorf("zmqloop: watch ZMQ_FD in epoll set: %w", err)
		}
	}
	if err := unix.SetNonblock(ep, true); err != nil {
		_ = unix.Close(ep)
		return nil, nil, fmt.Errorf("zmqloop: epoll set non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(ep), "zmq-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("zmqloop: watch epoll set: %w", err)
	}
	return f, rc, nil
}
