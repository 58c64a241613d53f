//go:build !linux

package zmqloop

import (
	"sync/atomic"
	"syscall"
	"time"
)

// ppollWaiter is the short ppoll phase of a wait (see ppoll_linux.go); elsewhere
// waits go straight to the netpoller.
type ppollWaiter struct{}

var ppollWaits atomic.Int64

func newPpollWaiter(syscall.RawConn, time.Duration) (*ppollWaiter, error) { return nil, nil }

func (s *ppollWaiter) until() time.Time { return time.Time{} }

func (s *ppollWaiter) wait(time.Duration) bool { return false }
func (s *ppollWaiter) wake()                   {}
func (s *ppollWaiter) close()                  {}
