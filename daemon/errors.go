package daemon

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Sentinel errors. Compare with errors.Is.
var (
	// ErrAlreadyRun is returned by Run when the daemon has been run
	// before (or is running): a Daemon runs once.
	ErrAlreadyRun = errors.New("daemon: Run called twice")
	// ErrRunning is returned by Add and Every once Run has started.
	ErrRunning = errors.New("daemon: cannot add a loop while running")
	// ErrExitedEarly is the cause when an essential loop returns nil
	// before the daemon was asked to stop.
	ErrExitedEarly = errors.New("loop returned before the daemon was stopped")
	// ErrGaveUp is the cause when a restarting loop failed more often
	// than its Policy allows within the policy's window (supervisord's
	// FATAL state).
	ErrGaveUp = errors.New("loop failed too often, giving up")
	// ErrPanic wraps a panic recovered from a loop.
	ErrPanic = errors.New("loop panicked")
)

// StopError is what Run returns when the daemon stopped because of a loop,
// or when loops did not stop within the grace period.
type StopError struct {
	// Loop names the loop whose failure or exit stopped the daemon; empty
	// when the stop came from the context or a signal.
	Loop string
	// Err is that loop's error (wrapping ErrExitedEarly, ErrGaveUp or
	// ErrPanic where they apply).
	Err error
	// Signal is the signal that stopped the daemon, if one did.
	Signal os.Signal
	// Stuck names the loops that had not returned when the grace period
	// ended, in stop order. Their goroutines may still be running.
	Stuck []string
}

func (e *StopError) Error() string {
	var b strings.Builder
	b.WriteString("daemon stopped")
	switch {
	case e.Loop != "":
		fmt.Fprintf(&b, ": loop %q: %v", e.Loop, e.Err)
	case e.Signal != nil:
		fmt.Fprintf(&b, " on %v", e.Signal)
	case e.Err != nil:
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if len(e.Stuck) > 0 {
		fmt.Fprintf(&b, "; loops that did not stop in time: %s", strings.Join(e.Stuck, ", "))
	}
	return b.String()
}

func (e *StopError) Unwrap() error { return e.Err }

// PanicError carries a panic recovered from a loop, with the stack where it
// happened.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("%v: %v", ErrPanic, e.Value) }

func (e *PanicError) Unwrap() error { return ErrPanic }
