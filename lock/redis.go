package lock

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisConfig configures a Redis Locker. Zero values are the documented
// defaults.
type RedisConfig struct {
	// Client is the go-redis client to use (a *redis.Client, a cluster or
	// ring client). Required; Close does not close it.
	Client redis.UniversalClient
	// Prefix starts every key this Locker writes. Default "paaskit:lock:".
	// The lease of name N is the key Prefix+"{"+N+"}" and its token counter
	// Prefix+"{"+N+"}:token": the braces are a Redis Cluster hash tag, so
	// both keys of a name live on one shard, as the scripts need. Prefix
	// itself must not contain "{".
	Prefix string
	// Now is the client's clock for Lease.Expires. Default time.Now.
	Now Clock
}

// Redis is a Locker on Redis: SET NX PX for the lease, INCR for the
// token, and Lua scripts so each step is atomic on the server.
//
// The lease key holds "holder:token". Acquire runs one script that, if the
// key is absent, increments the name's token counter and sets the key with
// the TTL (PX), so a grant and its token are one atomic step; Renew and
// Release run scripts that PEXPIRE or DEL the key only if it still holds
// the caller's exact "holder:token" (a release by anyone else, or after
// expiry, changes nothing). Expiry is Redis's own, on the server's clock.
//
// Tokens increase for as long as the counter survives: run Redis with
// persistence (appendonly yes) if it may restart, or a restart starts the
// counters again from 1. With a replicated Redis, a failover may lose the
// last writes (Redis replication is asynchronous); use the ZeroMQ locker,
// PostgreSQL or etcd where that matters.
type Redis struct {
	cfg RedisConfig
}

// NewRedis validates cfg and returns a Locker.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("%w: RedisConfig.Client is required", ErrInvalid)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "paaskit:lock:"
	}
	if strings.ContainsAny(cfg.Prefix, "{}") {
		return nil, fmt.Errorf("%w: Redis prefix %q contains a brace (it would change the cluster hash tag)", ErrInvalid, cfg.Prefix)
	}
	return &Redis{cfg: cfg}, nil
}

var (
	redisAcquire = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. t, 'PX', ARGV[2])
return t`)
	redisRenew = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)
	redisRelease = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)
)

func (r *Redis) key(name string) string { return r.cfg.Prefix + "{" + name + "}" }

// TryAcquire implements Locker.
func (r *Redis) TryAcquire(ctx context.Context, name string, ttl time.Duration) (*Lease, error) {
	if err := checkRequest(name, ttl); err != nil {
		return nil, err
	}
	holder := randomID()
	sent := r.cfg.Now.now()
	t, err := redisAcquire.Run(ctx, r.cfg.Client, []string{r.key(name), r.key(name) + ":token"},
		holder, ttl.Milliseconds()).Int64()
	if err != nil {
		return nil, fmt.Errorf("lock: redis acquire %q: %w", name, err)
	}
	if t == 0 {
		return nil, fmt.Errorf("%w: %q", ErrHeld, name)
	}
	return &Lease{Name: name, Token: uint64(t), Holder: holder, TTL: ttl, Expires: sent.Add(ttl)}, nil
}

// Acquire implements Locker.
func (r *Redis) Acquire(ctx context.Context, name string, ttl time.Duration) (*Lease, error) {
	if err := checkRequest(name, ttl); err != nil {
		return nil, err
	}
	return acquireLoop(ctx, name, func(ctx context.Context) (*Lease, error) { return r.TryAcquire(ctx, name, ttl) })
}

func redisValue(l *Lease) string { return l.Holder + ":" + strconv.FormatUint(l.Token, 10) }

// Renew implements Locker.
func (r *Redis) Renew(ctx context.Context, l *Lease) error {
	if err := checkLease(l); err != nil {
		return err
	}
	if strings.Contains(l.Holder, ":") {
		return fmt.Errorf("%w: holder %q", ErrInvalid, l.Holder)
	}
	sent := r.cfg.Now.now()
	n, err := redisRenew.Run(ctx, r.cfg.Client, []string{r.key(l.Name)}, redisValue(l), l.TTL.Milliseconds()).Int64()
	if err != nil {
		return fmt.Errorf("lock: redis renew %v: %w", l, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %v", ErrNotHeld, l)
	}
	l.Expires = sent.Add(l.TTL)
	return nil
}

// Release implements Locker.
func (r *Redis) Release(ctx context.Context, l *Lease) error {
	if err := checkLease(l); err != nil {
		return err
	}
	n, err := redisRelease.Run(ctx, r.cfg.Client, []string{r.key(l.Name)}, redisValue(l)).Int64()
	if err != nil {
		return fmt.Errorf("lock: redis release %v: %w", l, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %v", ErrNotHeld, l)
	}
	return nil
}

// Close implements Locker; the Redis client stays open (it is the
// caller's).
func (r *Redis) Close() error { return nil }

var _ Locker = (*Redis)(nil)
