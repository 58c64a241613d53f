package zmqloop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// Client defaults.
const (
	DefaultTryTimeout  = time.Second
	DefaultCallTimeout = 30 * time.Second
	// DefaultSyscallWait is the default ClientConfig.SyscallWait and
	// ReplyConfig.SyscallWait: a few loopback round trips.
	DefaultSyscallWait = 500 * time.Microsecond
)

// reconnectRetry is how often a call that found no connected endpoint
// tries again, besides whenever a socket reports a change.
const reconnectRetry = 20 * time.Millisecond

// ClientConfig configures a Client. Zero values are the documented
// defaults.
type ClientConfig struct {
	// Endpoints are the replicas of one service, e.g. both members of a
	// redundant pair. Required.
	Endpoints []string
	// Codec signs and verifies. Required.
	Codec *Codec
	// TryTimeout is how long a call waits for one endpoint before it also
	// sends the request (under a new message id) to the next endpoint; the
	// first reply from any of them wins, and the slow endpoint is tried last
	// for the next 10 TryTimeouts. An endpoint with no live connection is
	// skipped at once and tried last for the next 20ms, so the others share
	// its calls evenly. Default DefaultTryTimeout (1s).
	TryTimeout time.Duration
	// Timeout bounds a call whose ctx has no deadline. Default
	// DefaultCallTimeout (30s).
	Timeout time.Duration
	// Curve, if set, encrypts the transport; set ServerKey to the service's
	// public key.
	Curve *Curve
	// SyscallWait is how long a call with no other call in flight waits
	// for its reply in a blocking ppoll system call, which wakes faster,
	// before it parks in Go's netpoller (see the package doc, "Sockets and
	// goroutines"). Default DefaultSyscallWait (500µs); negative: never.
	// Linux only.
	SyscallWait time.Duration
	// ReconnectInterval is how soon libzmq tries again to connect to an
	// endpoint whose connection is gone or was refused (ZMQ_RECONNECT_IVL).
	// A caller that must reach a restarted server within a deadline of its
	// own, such as a heartbeat, sets it well below that deadline. Zero
	// means libzmq's default (100ms); negative is an error.
	ReconnectInterval time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Client calls a service served by ReplyLoops on one or more endpoints. It
// is safe for concurrent use by many goroutines: calls are multiplexed over
// one DEALER socket per endpoint and matched to replies by message id
// (zguide's Freelance pattern, not REQ lockstep). Each caller sends its own
// request; one caller at a time (the leader) waits for the sockets in Go's
// netpoller and hands other callers their replies (see the package doc). A
// request may reach more than one endpoint when the first is slow
// (at-least-once delivery), so handlers behind a failover client should be
// idempotent.
type Client struct {
	cfg ClientConfig
	log *slog.Logger

	// mu guards the sockets (libzmq sockets may be used from any thread if
	// access is serialised with a full memory barrier, which mu gives) and
	// every field below.
	mu       sync.Mutex
	started  bool
	isClosed bool
	startErr error
	socks    []*zmq.Socket
	wait     *os.File // readable when a socket has pending commands
	rc       syscall.RawConn
	ppoll    *ppollWaiter // the leader's first, short phase of waiting
	io       *msgIO
	byID     map[string]*call // attempt id -> call
	live     map[*call]struct{}
	suspect  []time.Time // per endpoint: tried last until then
	rr       int
	stats    ClientStats // Endpoints has one entry per endpoint
	leader   *call       // the call whose goroutine reads replies; nil if none
	parked   bool        // the leader waits in the netpoller (wake it to hand it its reply)
	inPpoll  bool        // the leader waits in ppoll (wake that instead)
	unsent   int         // live calls that found no connected endpoint
}

// call is one Call in flight. Its fields are guarded by Client.mu except
// sig, which wakes its goroutine.
type call struct {
	typ         string
	body        json.RawMessage
	data        []byte
	deadline    time.Time
	ctxDeadline bool          // deadline is ctx's
	sig         chan struct{} // capacity 1: the result is in, or leadership was handed over
	attempts    []string
	order       []int
	next        int       // position in order of the next endpoint to try
	last        int       // endpoint of the latest attempt, -1 before the first
	tryAt       time.Time // when to try the next endpoint
	sent        bool
	waiting     bool // counted in Client.unsent: no endpoint was connected
	done        bool
	res         callResult
}

type callResult struct {
	msg *Message
	err error
}

// NewClient validates cfg and returns a Client. It opens its sockets on the
// first call.
func NewClient(cfg ClientConfig) (*Client, error) {
	switch {
	case cfg.Codec == nil:
		return nil, fmt.Errorf("zmqloop: new client: Codec is required")
	case len(cfg.Endpoints) == 0:
		return nil, fmt.Errorf("zmqloop: new client: at least one endpoint is required")
	case cfg.TryTimeout < 0 || cfg.Timeout < 0:
		return nil, fmt.Errorf("zmqloop: new client: negative TryTimeout %v or Timeout %v", cfg.TryTimeout, cfg.Timeout)
	case cfg.ReconnectInterval < 0:
		return nil, fmt.Errorf("zmqloop: new client: negative ReconnectInterval %v", cfg.ReconnectInterval)
	}
	if err := validateEndpoints("client", cfg.Endpoints); err != nil {
		return nil, err
	}
	if err := cfg.Curve.validate(); err != nil {
		return nil, fmt.Errorf("zmqloop: new client: %w", err)
	}
	if cfg.TryTimeout == 0 {
		cfg.TryTimeout = DefaultTryTimeout
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultCallTimeout
	}
	if cfg.SyscallWait == 0 {
		cfg.SyscallWait = DefaultSyscallWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Endpoints = append([]string(nil), cfg.Endpoints...)
	c := &Client{cfg: cfg, log: cfg.Logger}
	c.stats.Endpoints = make([]EndpointStats, len(cfg.Endpoints))
	for i, ep := range cfg.Endpoints {
		c.stats.Endpoints[i].Endpoint = ep
	}
	return c, nil
}

// ClientStats counts what a Client did since it was made.
type ClientStats struct {
	Calls        uint64 // calls begun
	Failed       uint64 // calls that ended in an error of their own: timeout, cancellation, Close, a send error
	RemoteErrors uint64 // calls answered with a handler's error (*RemoteError)
	Endpoints    []EndpointStats
}

// EndpointStats is one endpoint's part in a Client's traffic.
type EndpointStats struct {
	Endpoint string
	Sent     uint64 // attempts sent to it (a call that fails over counts once per endpoint)
	Skipped  uint64 // attempts not sent because it had no live connection
	Replies  uint64 // replies from it that answered a call in flight
	Late     uint64 // authentic replies to a call already answered or given up
	Dropped  uint64 // replies refused: framing, size, key, MAC, timestamp or payload
	TooLarge uint64 // of Dropped, replies over the Codec's MaxSize (see LoopStats.TooLarge)
	// Suspect says calls try it last for now: it left an attempt
	// unanswered for TryTimeout, or had no live connection.
	Suspect bool
}

// Stats returns a snapshot of the Client's counters.
func (c *Client) Stats() ClientStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stats
	st.Endpoints = append([]EndpointStats(nil), c.stats.Endpoints...)
	now := time.Now()
	for i := range st.Endpoints {
		st.Endpoints[i].Suspect = c.suspect != nil && c.suspect[i].After(now)
	}
	return st
}

// Call sends a request of type typ with body (any JSON value, or empty) and
// returns the reply body. It fails over between endpoints as TryTimeout
// describes and gives up at ctx's deadline (or after Timeout), returning an
// error wrapping ErrTimeout (and context.DeadlineExceeded if ctx's
// deadline passed); a cancelled ctx returns context.Canceled wrapped. A
// handler's error comes back as a *RemoteError.
func (c *Client) Call(ctx context.Context, typ string, body json.RawMessage) (json.RawMessage, error) {
	body, _, err := c.CallData(ctx, typ, body, nil)
	return body, err
}

// CallData is Call with raw data: data (if not empty) travels in the
// request's data frame (Message.Data), and the reply's data frame, if it
// has one (Request.ReplyData), is returned beside its body. Neither is
// JSON-escaped or base64'd; both are covered by the MAC.
func (c *Client) CallData(ctx context.Context, typ string, body json.RawMessage, data []byte) (json.RawMessage, []byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("zmqloop: call %q: %w", typ, err)
	}
	now := time.Now()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = now.Add(c.cfg.Timeout)
	}
	pc := &call{typ: typ, body: body, data: data, deadline: deadline, ctxDeadline: ok, last: -1, sig: make(chan struct{}, 1)}
	c.mu.Lock()
	if !c.started {
		if err := c.startLocked(); err != nil {
			c.mu.Unlock()
			return nil, nil, fmt.Errorf("zmqloop: call %q: %w", typ, err)
		}
	}
	if c.isClosed {
		c.mu.Unlock()
		return nil, nil, fmt.Errorf("zmqloop: call %q: %w", typ, ErrClosed)
	}
	if c.startErr != nil {
		c.mu.Unlock()
		return nil, nil, fmt.Errorf("zmqloop: call %q: %w", typ, c.startErr)
	}
	c.begin(pc, now)
	c.mu.Unlock()

	var timer *time.Timer
	var stopCtx func() bool
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		if stopCtx != nil {
			stopCtx()
		}
	}()
	for {
		c.mu.Lock()
		c.check(ctx, pc, time.Now())
		if pc.done {
			if c.leader == pc {
				c.passLead()
			}
			c.mu.Unlock()
			break
		}
		if c.leader == nil {
			c.leader = pc
		}
		lead := c.leader == pc
		f, rc := c.wait, c.rc
		wake := pc.deadline
		if pc.tryAt.Before(wake) {
			wake = pc.tryAt
		}
		c.mu.Unlock()
		if lead {
			if stopCtx == nil && ctx.Done() != nil {
				stopCtx = context.AfterFunc(ctx, c.interrupt)
			}
			c.await(ctx, pc, f, rc, wake)
			continue
		}
		d := time.Until(wake)
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-pc.sig:
		case <-timer.C:
		case <-ctx.Done():
		}
	}
	if pc.res.err != nil {
		return nil, nil, pc.res.err
	}
	if pc.res.msg.Error != nil {
		return nil, nil, pc.res.msg.Error
	}
	return pc.res.msg.Body, pc.res.msg.Data, nil
}

// await is the leader's wait for the sockets' readiness until pc is done,
// its next attempt or deadline is due (wake), or it is interrupted: first
// up to SyscallWait in a blocking ppoll, then in Go's netpoller (see
// ppollWaiter). The readiness callback drains every socket and hands replies
// to their callers.
func (c *Client) await(ctx context.Context, pc *call, f *os.File, rc syscall.RawConn, wake time.Time) {
	_ = f.SetReadDeadline(wake)
	ppollUntil := c.ppoll.until()
	if ppollUntil.After(wake) {
		ppollUntil = wake
	}
	cb := func(uintptr) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.parked = false
		for {
			if c.isClosed {
				return true
			}
			for i := range c.socks {
				if c.drain(i, pc) {
					return true // the rest is for the next leader, who drains first
				}
			}
			if c.unsent > 0 {
				c.retryUnsent(time.Now())
			}
			if pc.done || ctx.Err() != nil {
				return true
			}
			d := time.Until(ppollUntil)
			if d <= 0 || len(c.live) > 1 {
				// With other calls in flight replies keep coming, and the
				// callers they wake need the P a ppoll would hold.
				break
			}
			c.inPpoll = true
			sp := c.ppoll
			c.mu.Unlock()
			ok := sp.wait(d)
			c.mu.Lock()
			c.inPpoll = false
			if !ok {
				break
			}
		}
		c.parked = true
		return false
	}
	err := rc.Read(cb)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		c.mu.Lock()
		c.parked = false
		if !pc.done && !c.isClosed {
			c.finish(pc, callResult{err: fmt.Errorf("zmqloop: call %q: wait for reply: %w", pc.typ, err)})
		}
		c.mu.Unlock()
	}
}

// interrupt wakes the leader from its wait. Safe from any goroutine; a
// wake-up nobody needed costs one pass of the wait loop.
func (c *Client) interrupt() {
	c.mu.Lock()
	f := c.wait
	if c.inPpoll {
		c.ppoll.wake()
	}
	c.mu.Unlock()
	if f != nil {
		_ = f.SetReadDeadline(time.Unix(1, 0))
	}
}

// passLead hands the leadership to another live call, if any (mu held).
func (c *Client) passLead() {
	c.leader = nil
	c.parked = false
	c.inPpoll = false
	for pc := range c.live {
		c.leader = pc
		select {
		case pc.sig <- struct{}{}:
		default:
		}
		return
	}
}

// CallJSON is Call with encoding/json on both ends: req is encoded as the
// body and the reply body is decoded into a Resp.
func CallJSON[Resp any](ctx context.Context, c *Client, typ string, req any) (Resp, error) {
	var out Resp
	var body json.RawMessage
	if req != nil {
		b, err := json.Marshal(req)
		if err != nil {
			return out, fmt.Errorf("zmqloop: call %q: encode request: %w", typ, err)
		}
		body = b
	}
	reply, err := c.Call(ctx, typ, body)
	if err != nil {
		return out, err
	}
	if len(reply) > 0 {
		if err := json.Unmarshal(reply, &out); err != nil {
			return out, fmt.Errorf("zmqloop: call %q: decode reply: %w", typ, err)
		}
	}
	return out, nil
}

// Close fails calls in flight with ErrClosed and closes the sockets; it
// returns once no caller is using them. Calling it again does nothing.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.isClosed {
		c.mu.Unlock()
		return nil
	}
	c.isClosed = true
	for pc := range c.live {
		c.finish(pc, callResult{err: fmt.Errorf("zmqloop: call %q: %w", pc.typ, ErrClosed)})
	}
	f := c.wait
	c.wait = nil
	if c.inPpoll {
		c.ppoll.wake()
	}
	c.mu.Unlock()
	// Closing the file wakes a leader waiting on it in the netpoller and
	// waits until its callback (and any ppoll in it) has returned; then
	// nobody touches the sockets.
	if f != nil {
		_ = f.Close()
	}
	c.mu.Lock()
	for _, s := range c.socks {
		closeSocket(s)
	}
	c.socks = nil
	c.ppoll.close()
	c.ppoll = nil
	c.mu.Unlock()
	return nil
}

// start opens the sockets (the first Call does it).
func (c *Client) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isClosed {
		return ErrClosed
	}
	if !c.started {
		return c.startLocked()
	}
	return c.startErr
}

// startLocked opens one DEALER per endpoint and the file to wait on (mu
// held). On error nothing is left open and every call fails with it.
func (c *Client) startLocked() error {
	c.started = true
	c.byID = make(map[string]*call)
	c.live = make(map[*call]struct{})
	c.suspect = make([]time.Time, len(c.cfg.Endpoints))
	c.io = newMsgIO(c.cfg.Codec.maxSize)
	for _, ep := range c.cfg.Endpoints {
		s, _, err := openSocket(sockOpts{typ: zmq.DEALER, connect: []string{ep}, maxSize: c.cfg.Codec.maxSize,
			curve: c.cfg.Curve, immediate: true, reconnect: c.cfg.ReconnectInterval, log: c.log})
		if err != nil {
			c.startErr = err
			break
		}
		c.socks = append(c.socks, s)
	}
	if c.startErr == nil {
		c.wait, c.rc, c.startErr = waitFD(c.socks)
	}
	if c.startErr == nil {
		if c.ppoll, c.startErr = newPpollWaiter(c.rc, c.cfg.SyscallWait); c.startErr != nil {
			_ = c.wait.Close()
			c.wait = nil
		}
	}
	if c.startErr != nil {
		for _, s := range c.socks {
			closeSocket(s)
		}
		c.socks = nil
	}
	return c.startErr
}

// begin orders the endpoints for pc and sends its first attempt (mu
// held). Calls take turns over the endpoints in good standing, so each
// gets an even share even while others are suspect (with a plain turn
// over all of them, the one after a dead endpoint would take its share
// too); suspects come last, in turn among themselves.
func (c *Client) begin(pc *call, now time.Time) {
	n := len(c.socks)
	pc.order = make([]int, 0, n)
	for pass := 0; pass < 2; pass++ {
		for i := 0; i < n; i++ {
			if c.suspect[i].After(now) == (pass == 1) {
				pc.order = append(pc.order, i)
			}
		}
	}
	good := 0
	for good < n && !c.suspect[pc.order[good]].After(now) {
		good++
	}
	c.rr++
	rotate(pc.order[:good], c.rr)
	rotate(pc.order[good:], c.rr)
	c.live[pc] = struct{}{}
	c.stats.Calls++
	c.send(pc, now)
}

// rotate turns s left by k places.
func rotate(s []int, k int) {
	if len(s) < 2 {
		return
	}
	k %= len(s)
	slices.Reverse(s[:k])
	slices.Reverse(s[k:])
	slices.Reverse(s)
}

// check finishes pc if it is cancelled or past its deadline and sends its
// next attempt when due (mu held).
func (c *Client) check(ctx context.Context, pc *call, now time.Time) {
	switch {
	case pc.done:
	case c.isClosed:
		c.finish(pc, callResult{err: fmt.Errorf("zmqloop: call %q: %w", pc.typ, ErrClosed)})
	case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		c.finish(pc, callResult{err: fmt.Errorf("zmqloop: call %q: %w", pc.typ, ctx.Err())})
	case ctx.Err() != nil || !now.Before(pc.deadline):
		// Whichever timer fired first, a deadline is a timeout.
		err := fmt.Errorf("zmqloop: call %q to %s: no reply after %d attempt(s): %w",
			pc.typ, strings.Join(c.cfg.Endpoints, ","), len(pc.attempts), ErrTimeout)
		if pc.ctxDeadline {
			err = fmt.Errorf("%w (%w)", err, context.DeadlineExceeded)
		}
		c.finish(pc, callResult{err: err})
	case !now.Before(pc.tryAt):
		c.send(pc, now)
	}
}

// retryUnsent sends the calls that found no connected endpoint (mu held).
func (c *Client) retryUnsent(now time.Time) {
	for pc := range c.live {
		if !pc.sent && !pc.done {
			c.send(pc, now)
		}
	}
}

// send sends a new attempt of pc to the next endpoint that has a live
// connection; if none has, pc waits for one (mu held). Whoever sends then
// drains that socket: a send may consume the ZMQ_FD notification of a reply
// that is already there, and the leader would not see it.
func (c *Client) send(pc *call, now time.Time) {
	if pc.waiting {
		pc.waiting = false
		c.unsent--
	}
	for k := 0; k < len(pc.order); k++ {
		i := pc.order[pc.next%len(pc.order)]
		pc.next++
		m := Message{Type: pc.typ, Body: pc.body, Data: pc.data}
		key, payload, mac, bufp, err := c.cfg.Codec.sealInto(&m)
		if err != nil {
			c.finish(pc, callResult{err: fmt.Errorf("zmqloop: call %q: %w", pc.typ, err)})
			return
		}
		if len(m.Data) > 0 {
			err = c.io.send(c.socks[i], zmq.DONTWAIT, emptyFrame, key, payload, mac, m.Data)
		} else {
			err = c.io.send(c.socks[i], zmq.DONTWAIT, emptyFrame, key, payload, mac)
		}
		c.cfg.Codec.release(bufp)
		switch {
		case err == nil:
			if pc.last >= 0 && pc.last != i {
				// The previous endpoint had its TryTimeout and did not answer.
				c.suspect[pc.last] = now.Add(10 * c.cfg.TryTimeout)
			}
			c.stats.Endpoints[i].Sent++
			pc.sent = true
			pc.last = i
			pc.attempts = append(pc.attempts, m.ID)
			c.byID[m.ID] = pc
			pc.tryAt = now.Add(c.cfg.TryTimeout)
			c.afterSend(i)
			return
		case isAgain(err): // no live connection to this endpoint: next
			c.stats.Endpoints[i].Skipped++
			// Tried last by the calls of the next reconnectRetry, so the
			// others share its calls evenly (see begin); then it is
			// tried again, so a new connection soon gets its share.
			if t := now.Add(reconnectRetry); c.suspect[i].Before(t) {
				c.suspect[i] = t
			}
			c.afterSend(i)
		default:
			c.finish(pc, callResult{err: fmt.Errorf("zmqloop: call %q: send to %s: %w", pc.typ, c.cfg.Endpoints[i], err)})
			return
		}
	}
	// Nothing is connected: the leader retries when a socket changes, the
	// caller itself soon.
	pc.sent = false
	pc.waiting = true
	c.unsent++
	pc.tryAt = now.Add(reconnectRetry)
}

// finish records pc's result and wakes its goroutine (mu held).
func (c *Client) finish(pc *call, r callResult) {
	if pc.done {
		return
	}
	if pc.waiting {
		pc.waiting = false
		c.unsent--
	}
	pc.done = true
	pc.res = r
	switch {
	case r.err != nil:
		c.stats.Failed++
	case r.msg != nil && r.msg.Error != nil:
		c.stats.RemoteErrors++
	}
	for _, id := range pc.attempts {
		delete(c.byID, id)
	}
	delete(c.live, pc)
	select {
	case pc.sig <- struct{}{}:
	default:
	}
	if pc == c.leader {
		if c.inPpoll {
			c.ppoll.wake()
		} else if c.parked && c.wait != nil {
			c.parked = false
			_ = c.wait.SetReadDeadline(time.Unix(1, 0))
		}
	}
}

// afterSend keeps the leader's wait sound after a send on socket i (mu
// held): the send may have consumed the ZMQ_FD notification of a reply
// that is already there, so unless the sender is about to lead (and drain
// first), it drains the socket itself. Each drain to EAGAIN costs libzmq
// a poll(2), so this is skipped when it is not needed.
func (c *Client) afterSend(i int) {
	if c.leader != nil {
		c.drain(i, nil)
	}
}

// drain reads every waiting reply on socket i until EAGAIN and hands each
// to its call (mu held). The EAGAIN also consumes libzmq's pending
// commands, so the next reply makes ZMQ_FD readable again. If mine's
// reply arrives, drain stops there and reports true; the caller then
// stops leading, and the next leader drains before it waits.
func (c *Client) drain(i int, mine *call) bool {
	s := c.socks[i]
	for {
		frames, err := c.io.recv(s, zmq.DONTWAIT)
		if isAgain(err) {
			return false
		}
		if err != nil && !errors.Is(err, ErrFrames) && !errors.Is(err, ErrTooLarge) {
			c.log.Warn("zmqloop: client: receive failed", "endpoint", c.cfg.Endpoints[i], "err", err)
			return false
		}
		if err != nil || (len(frames) != 4 && len(frames) != 5) || len(frames[0]) != 0 {
			c.stats.Endpoints[i].Dropped++
			if errors.Is(err, ErrTooLarge) {
				c.stats.Endpoints[i].TooLarge++
			}
			c.log.Debug("zmqloop: client: dropped reply with bad framing", "endpoint", c.cfg.Endpoints[i], "frames", len(frames), "err", err)
			continue
		}
		m := new(Message)
		if err := c.cfg.Codec.open(frames[1:], m); err != nil {
			c.stats.Endpoints[i].Dropped++
			if errors.Is(err, ErrTooLarge) {
				c.stats.Endpoints[i].TooLarge++
			}
			c.log.Debug("zmqloop: client: dropped reply", "endpoint", c.cfg.Endpoints[i], "err", err)
			continue
		}
		pc, ok := c.byID[m.ReplyTo]
		if !ok {
			c.stats.Endpoints[i].Late++
			continue // a late reply to a finished call or an earlier attempt
		}
		c.stats.Endpoints[i].Replies++
		c.suspect[i] = time.Time{}
		c.finish(pc, callResult{msg: m})
		if pc == mine {
			return true
		}
	}
}

var emptyFrame = []byte{}
