//go:build unix

package zmqloop

import (
	"fmt"
	"os"
	"syscall"

	zmq "github.com/pebbe/zmq4"
	"golang.org/x/sys/unix"
)

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
