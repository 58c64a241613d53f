//go:build !unix

package zmqloop

import (
	"os"
	"syscall"

	zmq "github.com/pebbe/zmq4"
)

func pollableFD(*zmq.Socket) (*os.File, syscall.RawConn, error) { return nil, nil, ErrUnsupportedOS }

func waitFD([]*zmq.Socket) (*os.File, syscall.RawConn, error) { return nil, nil, ErrUnsupportedOS }
