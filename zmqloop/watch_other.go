//go:build !unix

package zmqloop

import (
	"os"
	"syscall"

	zmq "github.com/pebbe/zmq4"
)

type fdWatch struct{}

func newFDWatch(*zmq.Socket, chan<- struct{}) (*fdWatch, error) { return nil, ErrUnsupportedOS }
func (*fdWatch) drained()                                       {}
func (*fdWatch) stop()                                          {}

type fdWaiter struct{}

func newFDWaiter(*zmq.Socket) (*fdWaiter, error) { return nil, ErrUnsupportedOS }
func (*fdWaiter) wait() error                    { return ErrUnsupportedOS }
func (*fdWaiter) interrupt()                     {}
func (*fdWaiter) rearm()                         {}
func (*fdWaiter) close()                         {}

func waitFD([]*zmq.Socket) (*os.File, syscall.RawConn, error) { return nil, nil, ErrUnsupportedOS }
