//go:build !unix

package zmqloop

import (
	"errors"

	zmq "github.com/pebbe/zmq4"
)

// ErrUnsupportedOS: the serve loops and clients need ZMQ_FD in the Go
// netpoller, which this package implements for unix systems only.
var ErrUnsupportedOS = errors.New("zmqloop: serve loops and clients are implemented for unix systems only")

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
