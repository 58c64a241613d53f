package lock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/paaskit/paaskit/zmqloop"
)

// ZMQConfig configures a client of the ZeroMQ locker pair. Zero values are
// the documented defaults.
type ZMQConfig struct {
	// Endpoints are the locker members (both of a pair). Required.
	Endpoints []string
	// Codec signs and verifies. Required.
	Codec *zmqloop.Codec
	// AttemptTimeout bounds one request to one member before the client
	// tries the other. Default 500ms.
	AttemptTimeout time.Duration
	// OpTimeout bounds a TryAcquire, Renew or Release whose ctx has no
	// deadline, across every attempt. Default 5s.
	OpTimeout time.Duration
	// Now is the client's clock for Lease.Expires. Default time.Now.
	Now Clock
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// ZMQ is a Locker that talks to the locker pair (Server). It asks the
// member it last found active; a standby answers "not_active" and a dead
// member does not answer within AttemptTimeout, and either way the client
// asks the other, until the operation's deadline. Requests are idempotent
// (an acquire carries its holder id, so asking again after a lost reply
// returns the same grant), so retrying after a failover is safe.
type ZMQ struct {
	cfg     ZMQConfig
	clients []*zmqloop.Client

	mu      sync.Mutex
	current int
	closed  bool
}

// NewZMQ validates cfg and returns a Locker.
func NewZMQ(cfg ZMQConfig) (*ZMQ, error) {
	if len(cfg.Endpoints) == 0 || cfg.Codec == nil {
		return nil, fmt.Errorf("%w: ZMQConfig.Endpoints and Codec are required", ErrInvalid)
	}
	if cfg.AttemptTimeout == 0 {
		cfg.AttemptTimeout = 500 * time.Millisecond
	}
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = 5 * time.Second
	}
	if cfg.AttemptTimeout < 0 || cfg.OpTimeout < 0 {
		return nil, fmt.Errorf("%w: negative ZMQConfig timeouts", ErrInvalid)
	}
	z := &ZMQ{cfg: cfg}
	for _, ep := range cfg.Endpoints {
		c, err := zmqloop.NewClient(zmqloop.ClientConfig{Endpoints: []string{ep}, Codec: cfg.Codec,
			TryTimeout: time.Hour, Logger: cfg.Logger})
		if err != nil {
			z.Close()
			return nil, fmt.Errorf("lock: locker client for %s: %w", ep, err)
		}
		z.clients = append(z.clients, c)
	}
	return z, nil
}

// call sends one request to the active member, failing over until ctx is
// done. It returns the reply body, or the active member's refusal mapped
// to this package's errors.
func (z *ZMQ) call(ctx context.Context, typ string, body any) (json.RawMessage, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, z.cfg.OpTimeout)
		defer cancel()
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("lock: encode %s: %w", typ, err)
	}
	wait := RetryMin
	var last error
	for {
		z.mu.Lock()
		if z.closed {
			z.mu.Unlock()
			return nil, ErrClosed
		}
		i := z.current
		z.mu.Unlock()
		actx, cancel := context.WithTimeout(ctx, z.cfg.AttemptTimeout)
		resp, err := z.clients[i].Call(actx, typ, raw)
		cancel()
		if err == nil {
			return resp, nil
		}
		var re *zmqloop.RemoteError
		switch {
		case errors.As(err, &re) && re.Code == CodeHeld:
			return nil, fmt.Errorf("%w: %s", ErrHeld, re.Message)
		case errors.As(err, &re) && re.Code == CodeNotHeld:
			return nil, fmt.Errorf("%w: %s", ErrNotHeld, re.Message)
		case errors.As(err, &re) && (re.Code == CodeInvalid || re.Code == zmqloop.CodeBadRequest):
			return nil, fmt.Errorf("%w: %s", ErrInvalid, re.Message)
		case errors.As(err, &re) && re.Code == CodeNotActive:
			z.switchFrom(i)
		case errors.As(err, &re) && re.Code == CodeUnavailable:
			// The active member is waiting out a cold start: ask it again.
		case errors.As(err, &re):
			// Refused as stale or replayed (our clock is off, or the member
			// just restarted): the retry is a fresh message.
		default:
			// No answer: the member may be dead, or have applied it.
			z.switchFrom(i)
		}
		last = err
		if ctx.Err() != nil {
			return nil, fmt.Errorf("lock: %s: %w (last: %v)", typ, ctx.Err(), last)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("lock: %s: %w (last: %v)", typ, ctx.Err(), last)
		case <-t.C:
		}
		if wait *= 2; wait > 50*time.Millisecond {
			wait = 50 * time.Millisecond
		}
	}
}

func (z *ZMQ) switchFrom(i int) {
	z.mu.Lock()
	if z.current == i {
		z.current = (i + 1) % len(z.clients)
	}
	z.mu.Unlock()
}

// TryAcquire implements Locker.
func (z *ZMQ) TryAcquire(ctx context.Context, name string, ttl time.Duration) (*Lease, error) {
	if err := checkRequest(name, ttl); err != nil {
		return nil, err
	}
	return z.tryAcquire(ctx, name, randomID(), ttl)
}

func (z *ZMQ) tryAcquire(ctx context.Context, name, holder string, ttl time.Duration) (*Lease, error) {
	sent := z.cfg.Now.now()
	resp, err := z.call(ctx, TypeAcquire, acquireReq{Name: name, Holder: holder, TTLms: ttl.Milliseconds()})
	if err != nil {
		return nil, fmt.Errorf("lock: acquire %q: %w", name, err)
	}
	var g grantResp
	if err := json.Unmarshal(resp, &g); err != nil || g.Token == 0 {
		return nil, fmt.Errorf("lock: acquire %q: bad reply %q: %v", name, resp, err)
	}
	return &Lease{Name: name, Token: g.Token, Holder: holder, TTL: ttl,
		Expires: sent.Add(time.Duration(g.RemainingMs) * time.Millisecond)}, nil
}

// Acquire implements Locker. One holder id serves every attempt, so a
// grant whose reply was lost is found again rather than left to expire.
func (z *ZMQ) Acquire(ctx context.Context, name string, ttl time.Duration) (*Lease, error) {
	if err := checkRequest(name, ttl); err != nil {
		return nil, err
	}
	holder := randomID()
	return acquireLoop(ctx, name, func(ctx context.Context) (*Lease, error) { return z.tryAcquire(ctx, name, holder, ttl) })
}

// Renew implements Locker.
func (z *ZMQ) Renew(ctx context.Context, l *Lease) error {
	if err := checkLease(l); err != nil {
		return err
	}
	sent := z.cfg.Now.now()
	if _, err := z.call(ctx, TypeRenew, leaseReq{Name: l.Name, Holder: l.Holder, Token: l.Token}); err != nil {
		return fmt.Errorf("lock: renew %v: %w", l, err)
	}
	l.Expires = sent.Add(l.TTL)
	return nil
}

// Release implements Locker.
func (z *ZMQ) Release(ctx context.Context, l *Lease) error {
	if err := checkLease(l); err != nil {
		return err
	}
	// A Release asked again after a lost reply needs no guessing here: the
	// members remember what they released and answer the repeat as done.
	if _, err := z.call(ctx, TypeRelease, leaseReq{Name: l.Name, Holder: l.Holder, Token: l.Token, Call: randomID()}); err != nil {
		return fmt.Errorf("lock: release %v: %w", l, err)
	}
	return nil
}

// Close implements Locker.
func (z *ZMQ) Close() error {
	z.mu.Lock()
	z.closed = true
	z.mu.Unlock()
	for _, c := range z.clients {
		_ = c.Close()
	}
	return nil
}

var _ Locker = (*ZMQ)(nil)
