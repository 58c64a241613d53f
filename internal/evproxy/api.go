package evproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"time"

	"github.com/paaskit/paaskit/internal/admit"
	"github.com/paaskit/paaskit/internal/http1"
)

// ErrUnsupported is returned by New where there is no epoll.
var ErrUnsupported = errors.New("evproxy: event loops need Linux (epoll)")

// Action is what a Handler decides for a request.
type Action int

const (
	// Forward sends the request to Decision.Target.
	Forward Action = iota
	// Reply answers with Decision.Status and Decision.Body and closes the
	// client connection.
	Reply
	// Handoff passes the client connection, with every byte read from
	// it since the request began, to Config.Handoff.
	Handoff
)

// Target is where a request goes: a network ("tcp" or "unix") and an
// address. TCP addresses must be literal IP:port; a request for another
// address is handed off (the loop never blocks on a name lookup).
type Target struct {
	Network, Addr string
	// Via, if set, is the unix socket path the loop connects to instead
	// of Addr, which still names the target (and keys its pool). The
	// runner sets it to /proc/self/fd/N, a descriptor pinning the app's
	// socket inode, so that nothing an app puts at Addr is followed.
	Via string
	// CheckPeer makes the loop check, on every new unix connection, that
	// the listener's SO_PEERCRED UID is PeerUID; any other is closed
	// before a byte is sent and counts as ConnectFailed.
	CheckPeer bool
	PeerUID   uint32
}

// Decision is a Handler's answer for one request.
type Decision struct {
	Action Action
	Target Target
	// ID is the handler's own number for Target; a target whose
	// connection failed before anything was sent is added to
	// Request.Tried by this ID.
	ID int32
	// Replayable says the request may be sent again on another
	// connection after its connection failed before any response byte
	// (idempotent, no body).
	Replayable bool
	// HandoffOnMiss hands the connection, from the start of this
	// request, to Config.Handoff when the target answers 404 with
	// Config.MissHeader set to "1" (the slow path then deals with the
	// miss). Only for Replayable requests.
	HandoffOnMiss bool

	// Reply: status line and plain-text body; Extra are more header
	// lines ("Name: value").
	Status int
	Reason string
	Body   string
	Extra  []string
}

// Outcome is how one routed request ended for its target, reported to
// Handler.Done exactly once per Forward decision.
type Outcome int

const (
	// Answered: the target sent a response head (whatever happened to
	// the body afterwards).
	Answered Outcome = iota
	// ConnectFailed: no connection could be made; nothing was sent.
	ConnectFailed
	// Failed: the target closed or broke the connection, or sent a
	// malformed head, before a response head.
	Failed
	// TimedOut: no response head within ResponseHeaderTimeout (or no
	// connection within DialTimeout).
	TimedOut
	// Broken: the target sent a head too large, a malformed head or a
	// 101 nobody asked for (answered 502; not a health signal).
	Broken
	// Stale: a pooled connection turned out closed and the request
	// could not be sent again (answered 502; not a health signal). A
	// request is sent again once on a fresh connection when it is
	// Replayable, or when the pooled connection failed the send (EPIPE)
	// or was reset (ECONNRESET) before any response byte: the target had
	// dropped it without reading the request.
	Stale
	// Aborted: the request ended before an answer from the target: the
	// client went away, the proxy stopped, or it was handed off.
	Aborted
	// Missed: the target answered with a miss and the request was
	// handed off (Decision.HandoffOnMiss).
	Missed
)

func (o Outcome) String() string {
	switch o {
	case Answered:
		return "answered"
	case ConnectFailed:
		return "connect failed"
	case Failed:
		return "failed"
	case TimedOut:
		return "timed out"
	case Broken:
		return "broken"
	case Stale:
		return "stale"
	case Aborted:
		return "aborted"
	case Missed:
		return "missed"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Request is one parsed request as a Handler sees it. It belongs to the
// client connection and is reused for its next request; a Handler must not
// keep it (or slices of it) after Done.
type Request struct {
	// Head is the parsed request head; its slices point into the
	// connection's buffer.
	Head *http1.Head
	// ClientIP is the client's address without port.
	ClientIP string
	// Tried holds the IDs of the targets whose connection failed for
	// this request so far (empty on the first Route).
	Tried []int32
	// Tag is the handler's own state for this request (for instance the
	// picked backend), kept from Route to Done; the loop clears it before
	// the next request.
	Tag any
	// Scratch is a byte buffer the handler may reuse across requests of
	// the connection (for instance for the normalized host).
	Scratch []byte
	// Ctx is nil on the event loops, where Route must not block. The
	// goroutine forwarder (internal/connproxy) sets it for a Route that
	// may block: it ends when the request is abandoned (the net/http
	// request's context on connproxy's ServeHTTP, the proxy's final cut
	// on its own connections).
	Ctx context.Context
}

// Handler routes requests and learns their outcomes. Its methods are
// called on the event loops (several at once, one per loop): they must
// not block, and must be safe for concurrent use. A panic in one is
// recovered and logged with its stack (Stats.Panics counts it): in Route
// the request is answered 502; in Done or End the report is lost and the
// exchange goes on.
type Handler interface {
	// Route decides what to do with a request. It is called again with
	// a longer Tried when the connection to the target it chose failed
	// before anything was sent, or (Replayable) failed before any
	// response byte.
	Route(r *Request) Decision
	// Done reports how a Forward decision ended.
	Done(r *Request, o Outcome)
}

// Ender is an optional interface of a Handler that needs to know when an
// exchange is wholly over, not only answered: Done(Answered) comes when
// the response head arrives, while the body may stream for much longer.
// End is called exactly once per Forward decision, after its Done: when
// the response body was wholly relayed, or the exchange was cut (the
// client went away, the target closed mid-body, the proxy stopped), or
// at once for an outcome other than Answered (including a hand-off).
// It runs on the event loop, like Route and Done; Request.Tag is still
// set.
type Ender interface {
	End(r *Request)
}

// Config configures a Proxy. Zero values mean the documented defaults.
type Config struct {
	// Listener is the plain TCP listener to serve (required). The proxy
	// duplicates its descriptor; the caller still owns and closes it.
	Listener *net.TCPListener
	// Handler routes requests (required).
	Handler Handler
	// Handoff takes a client connection the loop does not serve itself
	// (Upgrade, Expect: 100-continue, large request bodies, chunked ones
	// the client paused in, HTTP/1.0, a Handoff decision, a miss), with the bytes already read
	// from it, starting at the request it could not serve. It runs on the
	// loop: it must start its own goroutine and return. A panic in it is
	// recovered, logged and the connection closed. Required.
	Handoff func(c net.Conn, buffered []byte)
	// Loops is the number of event loops. Default GOMAXPROCS.
	Loops int
	// Proto is the X-Forwarded-Proto value. Default "http".
	Proto string
	// KeepForwarded passes the client's X-Forwarded-Proto and
	// X-Forwarded-Host on, where it sent them, instead of setting them
	// (a front behind a balancer that set them), as connproxy's
	// KeepForwarded does.
	KeepForwarded bool

	// ReadHeaderTimeout bounds a request head (and a buffered body)
	// from its first byte. Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request, and any stall of
	// a response body in either direction. Default 90s.
	IdleTimeout time.Duration
	// DialTimeout bounds connecting to a target. Default 3s.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a response head after
	// the request was sent (answered 504). Default 60s.
	ResponseHeaderTimeout time.Duration
	// ShutdownTimeout bounds how long Run lets exchanges in flight
	// finish after its context ends; then each loop closes what it has
	// left at once (it wakes for the deadline), so Run returns within
	// about ShutdownTimeout of the cancel. Default 10s.
	ShutdownTimeout time.Duration

	// MaxHeaderBytes bounds a request or response head. Default 32 KiB.
	MaxHeaderBytes int
	// MaxHeaderFields bounds the fields of a head. Default 100.
	MaxHeaderFields int
	// MaxBufferedBody is the largest request body (Content-Length) the
	// loop buffers and sends itself; larger ones are handed off.
	// Default 16 KiB.
	MaxBufferedBody int
	// MaxBodyBytes, if positive, bounds a request body: a larger
	// Content-Length is answered 413 at once.
	MaxBodyBytes int64
	// MaxIdlePerTarget bounds each loop's idle connections per target.
	// Default 256.
	MaxIdlePerTarget int
	// MissHeader is the response field (lower case) that marks a miss.
	// Empty: no miss detection.
	MissHeader string
	// DropFieldPrefix (lower case), if set, drops every response field
	// whose name starts with it before the head is passed on, so that a
	// target cannot forge fields the platform gives a meaning to (the
	// runner drops "x-paaskit-").
	DropFieldPrefix string
	// SocketBuffer, if positive, is set as SO_RCVBUF and SO_SNDBUF of
	// every client and target socket of the loops, bounding what the
	// kernel holds for a slow reader or a slow target (the loops' own
	// buffers are fixed). 0 leaves the kernel's autotuning.
	SocketBuffer int
	// Gate, if set, admits client connections (internal/admit): its caps
	// per process and per client address refuse a connection by closing
	// it as it is accepted, and a trusted source's PROXY header names
	// the client (Request.ClientIP, X-Forwarded-For). A handed-off
	// connection keeps its slot: Handoff then gets an *admit.Conn, whose
	// Close gives the slot back. nil: no caps and no trusted source.
	// Whatever the Gate, a connection from an untrusted source that
	// starts with a PROXY header is closed.
	Gate *admit.Gate
	// BusyPoll, if set, makes a loop that just handled events poll once
	// without blocking before it blocks in epoll_wait.
	BusyPoll bool

	// Logger receives the proxy's logs; nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Listener == nil {
		return errors.New("evproxy: Config.Listener is nil")
	}
	if c.Handler == nil {
		return errors.New("evproxy: Config.Handler is nil")
	}
	if c.Handoff == nil {
		return errors.New("evproxy: Config.Handoff is nil")
	}
	if err := SetDurations("evproxy",
		Dur(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout, "ReadHeaderTimeout"),
		Dur(&c.IdleTimeout, DefaultIdleTimeout, "IdleTimeout"),
		Dur(&c.DialTimeout, DefaultDialTimeout, "DialTimeout"),
		Dur(&c.ResponseHeaderTimeout, DefaultResponseHeaderTimeout, "ResponseHeaderTimeout"),
		Dur(&c.ShutdownTimeout, DefaultShutdownTimeout, "ShutdownTimeout"),
	); err != nil {
		return err
	}
	if err := SetHeadLimits("evproxy", &c.MaxHeaderBytes, &c.MaxHeaderFields); err != nil {
		return err
	}
	if c.Loops < 0 || c.SocketBuffer < 0 || c.MaxBufferedBody < 0 || c.MaxIdlePerTarget < 0 {
		return errors.New("evproxy: negative count or size in Config")
	}
	if c.Loops == 0 {
		c.Loops = runtime.GOMAXPROCS(0)
	}
	if c.Proto == "" {
		c.Proto = "http"
	}
	if c.MaxBufferedBody == 0 {
		c.MaxBufferedBody = 16 << 10
	}
	if c.MaxIdlePerTarget == 0 {
		c.MaxIdlePerTarget = 256
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
