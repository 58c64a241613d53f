//go:build !linux

package zmqloop

import (
	"sync/atomic"
	"syscall"
	"time"
)

// spinner is the short ppoll phase of a wait (see spin_linux.go); elsewhere
// waits go straight to the netpoller.
type spinner struct{}

var spinWaits atomic.Int64

func newSpinner(syscall.RawConn, time.Duration) (*spinner, error) { return nil, nil }

func (s *spinner) until() time.Time { return time.Time{} }

func (s *spinner) wait(time.Duration) bool { return false }
func (s *spinner) wake()                   {}
func (s *spinner) close()                  {}
