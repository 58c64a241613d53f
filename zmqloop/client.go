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
	DefaultMaxConcurrent = 16
	DefaultTryTimeout    = time.Second
	DefaultCallTimeout   = 30 * time.Second
)

// ClientConfig configures a Client. Zero values are the documented
// defaults.
type ClientConfig struct {
	// Endpoints are the replicas of one service, e.g. both members of a
	// redundant pair. Required.
	Endpoints []string
	// Codec signs and verifies. Required.
	Codec *Codec
	// MaxConcurrent bounds the calls in flight at once; more callers wait
	// for a free slot. Each slot is a goroutine owning one DEALER socket per
	// endpoint, opened the first time it is needed. Default
	// DefaultMaxConcurrent (16).
	MaxConcurrent int
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
// is safe for concurrent use by many goroutines. A request may reach more
// than one endpoint when the first is slow (at-least-once delivery), so
// handlers behind a failover client should be idempotent.
type Client struct {
	cfg     ClientConfig
	log     *slog.Logger
	jobs    chan *callJob
	closed  chan struct{}
	next    atomic.Uint64
	suspect []atomic.Int64 // per endpoint: unix ns until which it is tried last

	mu       sync.Mutex
	isClosed bool
	lanes    int
	wg       sync.WaitGroup
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

// NewClient validates cfg and returns a Client. It opens no socket until
// the first call.
func NewClient(cfg ClientConfig) (*Client, error) {
	switch {
	case cfg.Codec == nil:
		return nil, fmt.Errorf("zmqloop: new client: Codec is required")
	case len(cfg.Endpoints) == 0:
		return nil, fmt.Errorf("zmqloop: new client: at least one endpoint is required")
	case cfg.MaxConcurrent < 0 || cfg.TryTimeout < 0 || cfg.Timeout < 0:
		return nil, fmt.Errorf("zmqloop: new client: negative MaxConcurrent %d, TryTimeout %v or Timeout %v", cfg.MaxConcurrent, cfg.TryTimeout, cfg.Timeout)
	}
	if err := validateEndpoints("client", cfg.Endpoints); err != nil {
		return nil, err
	}
	if err := cfg.Curve.validate(); err != nil {
		return nil, fmt.Errorf("zmqloop: new client: %w", err)
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent
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
		suspect: make([]atomic.Int64, len(cfg.Endpoints))}, nil
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
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(c.cfg.Timeout)
	}
	j := &callJob{ctx: ctx, typ: typ, body: body, deadline: deadline, result: make(chan callResult, 1)}
	select {
	case c.jobs <- j:
	case <-c.closed:
		return nil, fmt.Errorf("zmqloop: call %q: %w", typ, ErrClosed)
	default:
		if err := c.spawnLane(); err != nil {
			return nil, fmt.Errorf("zmqloop: call %q: %w", typ, err)
		}
		select {
		case c.jobs <- j:
		case <-c.closed:
			return nil, fmt.Errorf("zmqloop: call %q: %w", typ, ErrClosed)
		case <-ctx.Done():
			return nil, fmt.Errorf("zmqloop: call %q: waiting for a free slot: %w", typ, ctx.Err())
		}
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

// Close fails calls in flight with ErrClosed, closes every socket and
// returns once all the client's goroutines have stopped (within about
// 100ms). Calling it again does nothing.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.isClosed {
		c.mu.Unlock()
		return nil
	}
	c.isClosed = true
	close(c.closed)
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

// spawnLane starts one more lane unless MaxConcurrent are running.
func (c *Client) spawnLane() error {
	c.mu.Lock()
	if c.isClosed || c.lanes >= c.cfg.MaxConcurrent {
		c.mu.Unlock()
		return nil
	}
	c.lanes++
	c.wg.Add(1)
	c.mu.Unlock()
	ready := make(chan error, 1)
	go c.lane(ready)
	if err := <-ready; err != nil {
		c.mu.Lock()
		c.lanes--
		c.mu.Unlock()
		return err
	}
	return nil
}

// lane owns one DEALER socket per endpoint and runs one call at a time.
func (c *Client) lane(ready chan<- error) {
	defer c.wg.Done()
	socks := make([]*zmq.Socket, len(c.cfg.Endpoints))
	defer func() {
		for _, s := range socks {
			closeSocket(s)
		}
	}()
	poller := zmq.NewPoller()
	for i, ep := range c.cfg.Endpoints {
		s, _, err := openSocket(sockOpts{typ: zmq.DEALER, connect: []string{ep}, maxSize: c.cfg.Codec.maxSize,
			curve: c.cfg.Curve, immediate: true})
		if err != nil {
			ready <- err
			return
		}
		socks[i] = s
		poller.Add(s, zmq.POLLIN)
	}
	ready <- nil
	l := &laneState{c: c, socks: socks, poller: poller, frames: make([][]byte, 0, maxFrames)}
	for {
		select {
		case j := <-c.jobs:
			r := l.call(j)
			j.result <- r
		case <-c.closed:
			return
		}
	}
}

type laneState struct {
	c        *Client
	socks    []*zmq.Socket
	poller   *zmq.Poller
	frames   [][]byte
	attempts []string // message ids sent for the current call
	order    []int
	pollOut  bool
}

var emptyFrame = []byte{}

func (l *laneState) setPollOut(on bool) {
	if l.pollOut == on {
		return
	}
	ev := zmq.POLLIN
	if on {
		ev |= zmq.POLLOUT
	}
	for i := range l.socks {
		_, _ = l.poller.Update(i, ev)
	}
	l.pollOut = on
}

// endpointOrder returns the endpoints to try: rotating start, suspects last.
func (l *laneState) endpointOrder() []int {
	c := l.c
	n := len(c.cfg.Endpoints)
	start := int(c.next.Add(1) % uint64(n))
	now := time.Now().UnixNano()
	l.order = l.order[:0]
	for pass := 0; pass < 2; pass++ {
		for k := 0; k < n; k++ {
			i := (start + k) % n
			if (c.suspect[i].Load() > now) == (pass == 1) {
				l.order = append(l.order, i)
			}
		}
	}
	return l.order
}

func (l *laneState) call(j *callJob) callResult {
	c := l.c
	cfg := &c.cfg
	l.attempts = l.attempts[:0]
	order := l.endpointOrder()
	next := 0             // position in order of the next endpoint to try
	last := -1            // endpoint of the latest attempt
	var nextTry time.Time // when to try another endpoint
	for {
		select {
		case <-c.closed:
			return callResult{err: fmt.Errorf("zmqloop: call %q: %w", j.typ, ErrClosed)}
		default:
		}
		if err := j.ctx.Err(); err != nil {
			return callResult{err: fmt.Errorf("zmqloop: call %q: %w", j.typ, err)}
		}
		now := time.Now()
		if !now.Before(j.deadline) {
			return callResult{err: fmt.Errorf("zmqloop: call %q to %s: no reply after %d attempt(s): %w",
				j.typ, strings.Join(cfg.Endpoints, ","), len(l.attempts), ErrTimeout)}
		}
		if !now.Before(nextTry) {
			if last >= 0 && len(l.attempts) > 0 {
				// The endpoint had its TryTimeout and did not answer.
				c.suspect[last].Store(now.Add(10 * cfg.TryTimeout).UnixNano())
			}
			sent := false
			for k := 0; k < len(order) && !sent; k++ {
				i := order[next%len(order)]
				next++
				m := Message{Type: j.typ, Body: j.body}
				key, payload, mac, bufp, err := cfg.Codec.sealInto(&m)
				if err != nil {
					return callResult{err: fmt.Errorf("zmqloop: call %q: %w", j.typ, err)}
				}
				err = sendFrames(l.socks[i], zmq.DONTWAIT, emptyFrame, key, payload, mac)
				cfg.Codec.release(bufp)
				switch {
				case err == nil:
					sent = true
					last = i
					l.attempts = append(l.attempts, m.ID)
				case isAgain(err): // no live connection to this endpoint: next
				default:
					return callResult{err: fmt.Errorf("zmqloop: call %q: send to %s: %w", j.typ, cfg.Endpoints[i], err)}
				}
			}
			if sent {
				nextTry = now.Add(cfg.TryTimeout)
				l.setPollOut(false)
			} else {
				// Nothing is connected: wake when a socket becomes writable.
				nextTry = time.Time{}
				l.setPollOut(true)
			}
		}
		wait := j.deadline.Sub(now)
		if !nextTry.IsZero() {
			wait = min(wait, nextTry.Sub(now))
		}
		wait = max(min(wait, pollSlice), time.Millisecond)
		polled, err := l.poller.Poll(wait)
		if err != nil {
			return callResult{err: fmt.Errorf("zmqloop: call %q: poll: %w", j.typ, err)}
		}
		for _, p := range polled {
			if p.Events&zmq.POLLIN == 0 {
				continue
			}
			for {
				frames, err := recvFrames(p.Socket, zmq.DONTWAIT, l.frames)
				if isAgain(err) {
					break
				}
				if err != nil && !errors.Is(err, ErrFrames) {
					return callResult{err: fmt.Errorf("zmqloop: call %q: receive: %w", j.typ, err)}
				}
				if err != nil || len(frames) != 4 || len(frames[0]) != 0 {
					c.log.Debug("zmqloop: client: dropped reply with bad framing", "frames", len(frames))
					continue
				}
				m := new(Message)
				if err := cfg.Codec.open(frames[1:], m); err != nil {
					c.log.Debug("zmqloop: client: dropped reply", "err", err)
					continue
				}
				for _, id := range l.attempts {
					if m.ReplyTo == id {
						for i, s := range l.socks {
							if s == p.Socket {
								c.suspect[i].Store(0)
							}
						}
						return callResult{msg: m}
					}
				}
				// A late reply to an earlier call or attempt: drop it.
			}
		}
	}
}
