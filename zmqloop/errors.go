package zmqloop

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap one of these with
// the failing input, so callers test them with errors.Is.
var (
	// ErrUnknownKey: the key-id frame names a key that is not in the ring.
	ErrUnknownKey = errors.New("zmqloop: unknown key id")
	// ErrBadMAC: the MAC frame does not match key id and payload.
	ErrBadMAC = errors.New("zmqloop: bad MAC")
	// ErrStale: the payload's timestamp is outside the replay window.
	ErrStale = errors.New("zmqloop: timestamp outside the replay window")
	// ErrReplay: the message id was already seen inside the window, or the
	// window had to forget ids newer than this message's timestamp.
	ErrReplay = errors.New("zmqloop: replayed message")
	// ErrTooLarge: the message exceeds the configured maximum size.
	ErrTooLarge = errors.New("zmqloop: message too large")
	// ErrFrames: the message has the wrong number of frames.
	ErrFrames = errors.New("zmqloop: wrong number of frames")
	// ErrMalformed: the payload is not a valid envelope (bad JSON, a missing
	// or invalid field).
	ErrMalformed = errors.New("zmqloop: malformed payload")
	// ErrClosed: the client, pusher or publisher was closed.
	ErrClosed = errors.New("zmqloop: closed")
	// ErrTimeout: no endpoint answered before the call's deadline.
	ErrTimeout = errors.New("zmqloop: call timed out")
	// ErrCurveUnsupported: libzmq was built without CURVE support.
	ErrCurveUnsupported = errors.New("zmqloop: libzmq has no CURVE support")
	// ErrUnsupportedOS: the serve loops and clients wait for ZMQ_FD in the
	// Go netpoller, which this package implements for unix systems (and a
	// client of several endpoints for Linux) only.
	ErrUnsupportedOS = errors.New("zmqloop: not implemented on this operating system")
)

// Error codes the serve loops put in a RemoteError when the failure is
// theirs rather than the handler's.
const (
	CodeUnknownType = "unknown_type" // no handler for the request's type
	CodePanic       = "panic"        // the handler panicked
	CodeInternal    = "internal"     // the handler returned a non-RemoteError error, or its reply could not be sealed (over MaxSize)
	CodeRejected    = "rejected"     // the request was authentic but refused (stale, replayed)
)

// RemoteError is an error reply: a handler's failure as its caller sees it.
// A handler returns one (or wraps one) to choose the code; any other error
// reaches the caller with code CodeInternal and the error's text.
type RemoteError struct {
	Code    string // short machine-readable code, [A-Za-z0-9._:/-]{1,128}
	Message string // human-readable text
}

// Error implements error.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("zmqloop: remote error %s: %s", e.Code, e.Message)
}

// Errorf returns a *RemoteError with the given code and a formatted message.
func Errorf(code, format string, args ...any) *RemoteError {
	return &RemoteError{Code: code, Message: fmt.Sprintf(format, args...)}
}
