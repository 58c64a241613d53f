//go:build unix && !linux

package zmqloop

import (
	"fmt"
	"os"
	"syscall"

	zmq "github.com/pebbe/zmq4"
)

// waitFD returns a file readable when the socket has pending libzmq
// commands. Waiting on several sockets at once needs an epoll set, which
// is implemented for Linux only.
func waitFD(socks []*zmq.Socket) (*os.File, syscall.RawConn, error) {
	if len(socks) != 1 {
		return nil, nil, fmt.Errorf("zmqloop: a client of %d endpoints: %w", len(socks), ErrUnsupportedOS)
	}
	return pollableFD(socks[0])
}
