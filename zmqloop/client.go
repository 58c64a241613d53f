package zmqloop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// Client defaults.
const (
	DefaultTryTimeout  = time.Second
	DefaultCallTimeout = 30 * time.Second
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
	// skipped at once. Default DefaultTryTimeout (1s).
	TryTimeout time.Duration
	// Timeout bounds a call whose ctx has no deadline. Default
	// DefaultCallTimeout (30s).
	Timeout time.Duration
	// Curve, if set, encrypts the transport; set ServerKey to the service's
	// public key.
	Curve *Curve
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Client calls a service served by ReplyLoops on one or more endpoints. It
// is safe for concurrent use by many goroutines: calls are multiplexed over
// one DEALER socket per endpoint, owned by one goroutine, and matched to
// replies by message id (zguide's Freelance pattern, not REQ lockstep). A
// request may reach more than one endpoint when the first is slow
// (at-least-once delivery), so handlers behind a failover client should be
// idempotent.
type Client struct {
	cfg    ClientConfig
	log    *slog.Logger
	jobs   chan *callJob
	closed chan struct{}
	done   chan struct{}

	running  atomic.Bool
	mu       sync.Mutex
	started  bool
	isClosed bool
	startErr error
}

type callJob struct {
	ctx      context.Context
	typ      string
	body     json.RawMessage
	deadline time.Time
	result   chan callResult
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Endpoints = append([]string(nil), cfg.Endpoints...)
	return &Client{cfg: cfg, log: cfg.Logger, jobs: make(chan *callJob), closed: make(chan struct{}),
		done: make(chan struct{})}, nil
}

// Call sends a request of type typ with body (any JSON value, or empty) and
// returns the reply body. It fails over between endpoints as TryTimeout
// describes and gives up at ctx's deadline (or after Timeout), returning an
// error wrapping ErrTimeout; a cancelled ctx returns ctx.Err() wrapped. A
// handler's error comes back as a *RemoteError.
func (c *Client) Call(ctx context.Context, typ string, body json.RawMessage) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("zmqloop: call %q: %w", typ, err)
	}
	if !c.running.Load() {
		if err := c.start(); err != nil {
			return nil, fmt.Errorf("zmqloop: call %q: %w", typ, err)
		}
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(c.cfg.Timeout)
	}
	j := &callJob{ctx: ctx, typ: typ, body: body, deadline: deadline, result: make(chan callResult, 1)}
	select {
	case c.jobs <- j:
	case <-c.closed:
		return nil, fmt.Errorf("zmqloop: call %q: %w", typ, ErrClosed)
	case <-ctx.Done():
		return nil, fmt.Errorf("zmqloop: call %q: %w", typ, ctx.Err())
	}
	select {
	case r := <-j.result:
		if r.err != nil {
			return nil, r.err
		}
		if r.msg.Error != nil {
			return nil, r.msg.Error
		}
		return r.msg.Body, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("zmqloop: call %q: %w", typ, ctx.Err())
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

// Close fails calls in flight with ErrClosed, closes the sockets and
// returns once the client's goroutines have stopped. Calling it again does
// nothing.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.isClosed {
		c.mu.Unlock()
		return nil
	}
	c.isClosed = true
	close(c.closed)
	wait := c.started && c.startErr == nil
	c.mu.Unlock()
	if wait {
		<-c.done
	}
	return nil
}

func (c *Client) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isClosed {
		return ErrClosed
	}
	if c.started {
		return c.startErr
	}
	c.started = true
	ready := make(chan error, 1)
	go c.own(ready)
	c.startErr = <-ready
	if c.startErr == nil {
		c.running.Store(true)
	}
	return c.startErr
}

// own is the socket goroutine: one DEALER per endpoint, all calls in flight.
func (c *Client) own(ready chan<- error) {
	o := &clientOwner{c: c, cfg: &c.cfg, byID: make(map[string]*pendingCall),
		suspect: make([]time.Time, len(c.cfg.Endpoints)), io: newMsgIO(c.cfg.Codec.maxSize)}
	sig := make(chan struct{}, 1)
	defer func() {
		for _, w := range o.watches {
			w.stop()
		}
		for _, s := range o.socks {
			closeSocket(s)
		}
	}()
	for _, ep := range c.cfg.Endpoints {
		s, _, err := openSocket(sockOpts{typ: zmq.DEALER, connect: []string{ep}, maxSize: c.cfg.Codec.maxSize,
			curve: c.cfg.Curve, immediate: true})
		if err != nil {
			ready <- err
			return
		}
		o.socks = append(o.socks, s)
		w, err := newFDWatch(s, sig)
		if err != nil {
			ready <- err
			return
		}
		o.watches = append(o.watches, w)
	}
	defer close(c.done)
	ready <- nil
	o.loop(sig)
}

type clientOwner struct {
	c       *Client
	cfg     *ClientConfig
	socks   []*zmq.Socket
	watches []*fdWatch
	byID    map[string]*pendingCall // attempt id -> call
	active  []*pendingCall
	suspect []time.Time // per endpoint: tried last until then
	rr      int
	io      *msgIO
	wakeAt  time.Time
	unsent  int
}

type pendingCall struct {
	j        *callJob
	attempts []string
	order    []int
	next     int       // position in order of the next endpoint to try
	last     int       // endpoint of the latest attempt, -1 before the first
	tryAt    time.Time // when to try the next endpoint
	sent     bool
	done     bool
}

func (o *clientOwner) loop(sig <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var timerAt time.Time
	for {
		o.drain()
		if !o.wakeAt.Equal(timerAt) {
			timerAt = o.wakeAt
			if timerAt.IsZero() {
				timer.Stop()
			} else {
				timer.Reset(time.Until(timerAt))
			}
		}
		select {
		case j := <-o.c.jobs:
			o.start(j)
		case <-sig:
			if o.unsent > 0 {
				o.scan(time.Now(), true)
			}
		case <-timer.C:
			timerAt = time.Time{}
			o.scan(time.Now(), false)
		case <-o.c.closed:
			for _, pc := range o.active {
				if !pc.done {
					o.finish(pc, callResult{err: fmt.Errorf("zmqloop: call %q: %w", pc.j.typ, ErrClosed)})
				}
			}
			return
		}
	}
}

func (o *clientOwner) wake(at time.Time) {
	if o.wakeAt.IsZero() || at.Before(o.wakeAt) {
		o.wakeAt = at
	}
}

func (o *clientOwner) start(j *callJob) {
	n := len(o.socks)
	pc := &pendingCall{j: j, last: -1, order: make([]int, 0, n)}
	now := time.Now()
	o.rr++
	for pass := 0; pass < 2; pass++ {
		for k := 0; k < n; k++ {
			i := (o.rr + k) % n
			if o.suspect[i].After(now) == (pass == 1) {
				pc.order = append(pc.order, i)
			}
		}
	}
	o.active = append(o.active, pc)
	o.send(pc, now)
	o.wake(j.deadline)
}

// send sends a new attempt of pc to the next endpoint that has a live
// connection; if none has, pc waits for one.
func (o *clientOwner) send(pc *pendingCall, now time.Time) {
	j := pc.j
	for k := 0; k < len(pc.order); k++ {
		i := pc.order[pc.next%len(pc.order)]
		pc.next++
		m := Message{Type: j.typ, Body: j.body}
		key, payload, mac, bufp, err := o.cfg.Codec.sealInto(&m)
		if err != nil {
			o.finish(pc, callResult{err: fmt.Errorf("zmqloop: call %q: %w", j.typ, err)})
			return
		}
		err = o.io.send(o.socks[i], zmq.DONTWAIT, emptyFrame, key, payload, mac)
		o.cfg.Codec.release(bufp)
		switch {
		case err == nil:
			pc.sent = true
			if pc.last >= 0 && pc.last != i {
				// The previous endpoint had its TryTimeout and did not answer.
				o.suspect[pc.last] = now.Add(10 * o.cfg.TryTimeout)
			}
			pc.last = i
			pc.attempts = append(pc.attempts, m.ID)
			o.byID[m.ID] = pc
			pc.tryAt = now.Add(o.cfg.TryTimeout)
			o.wake(pc.tryAt)
			return
		case isAgain(err): // no live connection to this endpoint: next
		default:
			o.finish(pc, callResult{err: fmt.Errorf("zmqloop: call %q: send to %s: %w", j.typ, o.cfg.Endpoints[i], err)})
			return
		}
	}
	// Nothing is connected: retry when a socket changes, or soon.
	o.unsent++
	pc.sent = false
	pc.tryAt = now.Add(reconnectRetry)
	o.wake(pc.tryAt)
}

// scan fails calls past their deadline or cancelled, fails over calls past
// their TryTimeout, and (onlyUnsent) retries calls waiting for a connection.
func (o *clientOwner) scan(now time.Time, onlyUnsent bool) {
	o.wakeAt = time.Time{}
	kept := o.active[:0]
	o.unsent = 0
	for _, pc := range o.active {
		if pc.done {
			continue
		}
		j := pc.j
		switch {
		case j.ctx.Err() != nil:
			o.finish(pc, callResult{err: fmt.Errorf("zmqloop: call %q: %w", j.typ, j.ctx.Err())})
			continue
		case !now.Before(j.deadline):
			o.finish(pc, callResult{err: fmt.Errorf("zmqloop: call %q to %s: no reply after %d attempt(s): %w",
				j.typ, strings.Join(o.cfg.Endpoints, ","), len(pc.attempts), ErrTimeout)})
			continue
		case !pc.sent || (!onlyUnsent && !now.Before(pc.tryAt)):
			o.send(pc, now)
			if pc.done {
				continue
			}
		}
		if !pc.sent {
			o.unsent++
		}
		o.wake(pc.tryAt)
		o.wake(j.deadline)
		kept = append(kept, pc)
	}
	for i := len(kept); i < len(o.active); i++ {
		o.active[i] = nil
	}
	o.active = kept
}

func (o *clientOwner) finish(pc *pendingCall, r callResult) {
	pc.done = true
	for _, id := range pc.attempts {
		delete(o.byID, id)
	}
	pc.j.result <- r // capacity 1, sent once
}

// drain reads every waiting reply on every socket.
func (o *clientOwner) drain() {
	for i, s := range o.socks {
		for {
			frames, err := o.io.recv(s, zmq.DONTWAIT)
			if isAgain(err) {
				break
			}
			if err != nil && !errors.Is(err, ErrFrames) && !errors.Is(err, ErrTooLarge) {
				o.c.log.Warn("zmqloop: client: receive failed", "endpoint", o.cfg.Endpoints[i], "err", err)
				break
			}
			if err != nil || len(frames) != 4 || len(frames[0]) != 0 {
				o.c.log.Debug("zmqloop: client: dropped reply with bad framing", "endpoint", o.cfg.Endpoints[i], "frames", len(frames), "err", err)
				continue
			}
			m := new(Message)
			if err := o.cfg.Codec.open(frames[1:], m); err != nil {
				o.c.log.Debug("zmqloop: client: dropped reply", "endpoint", o.cfg.Endpoints[i], "err", err)
				continue
			}
			pc, ok := o.byID[m.ReplyTo]
			if !ok {
				continue // a late reply to a finished call or an earlier attempt
			}
			o.suspect[i] = time.Time{}
			o.finish(pc, callResult{msg: m})
		}
		o.watches[i].drained()
	}
	if len(o.active) > 64 && len(o.byID) < len(o.active)/2 {
		o.compact()
	}
}

func (o *clientOwner) compact() {
	kept := o.active[:0]
	for _, pc := range o.active {
		if !pc.done {
			kept = append(kept, pc)
		}
	}
	for i := len(kept); i < len(o.active); i++ {
		o.active[i] = nil
	}
	o.active = kept
}

var emptyFrame = []byte{}
