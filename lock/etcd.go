package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdConfig configures an etcd Locker. Zero values are the documented
// defaults.
type EtcdConfig struct {
	// Client is the etcd client to use. Required; Close does not close
	// it.
	Client *clientv3.Client
	// Prefix starts every key this Locker writes. Default
	// "/paaskit/lock/".
	Prefix string
	// Now is the client's clock for Lease.Expires. Default time.Now.
	Now Clock
}

// Etcd is a Locker on etcd: each grant is an etcd lease with the TTL and
// a key under it, put only if the key does not exist (a transaction on
// its create revision), and the fencing token is the key's mod revision,
// which etcd's single revision counter makes larger than every earlier
// write's, across the whole cluster and every leader change. Renew is a
// keep-alive of the lease (refused once it expired), Release deletes the
// key only if its mod revision is still the caller's token, and revokes
// the lease.
//
// etcd grants TTLs in whole seconds, with a server-side minimum (about
// 2 s on a default cluster): a shorter TTL is rounded up, and Lease.TTL
// says what was granted, while Lease.Expires is still reckoned from the
// TTL asked for (it errs early).
type Etcd struct {
	cfg EtcdConfig
}

// NewEtcd validates cfg and returns a Locker.
func NewEtcd(cfg EtcdConfig) (*Etcd, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("%w: EtcdConfig.Client is required", ErrInvalid)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "/paaskit/lock/"
	}
	return &Etcd{cfg: cfg}, nil
}

func (e *Etcd) key(name string) string { return e.cfg.Prefix + name }

// TryAcquire implements Locker.
func (e *Etcd) TryAcquire(ctx context.Context, name string, ttl time.Duration) (*Lease, error) {
	if err := checkRequest(name, ttl); err != nil {
		return nil, err
	}
	secs := int64((ttl + time.Second - 1) / time.Second)
	sent := e.cfg.Now.now()
	grant, err := e.cfg.Client.Grant(ctx, secs)
	if err != nil {
		return nil, fmt.Errorf("lock: etcd grant lease for %q: %w", name, err)
	}
	holder := randomID()
	key := e.key(name)
	resp, err := e.cfg.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, holder, clientv3.WithLease(grant.ID))).
		Commit()
	if err != nil || !resp.Succeeded {
		// Do not leave the lease to time out on its own.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_, _ = e.cfg.Client.Revoke(rctx, grant.ID)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("lock: etcd acquire %q: %w", name, err)
		}
		return nil, fmt.Errorf("%w: %q", ErrHeld, name)
	}
	return &Lease{Name: name, Token: uint64(resp.Header.Revision), Holder: holder,
		TTL: time.Duration(grant.TTL) * time.Second, Expires: sent.Add(ttl), id: int64(grant.ID)}, nil
}

// Acquire implements Locker.
func (e *Etcd) Acquire(ctx context.Context, name string, ttl time.Duration) (*Lease, error) {
	if err := checkRequest(name, ttl); err != nil {
		return nil, err
	}
	return acquireLoop(ctx, name, func(ctx context.Context) (*Lease, error) { return e.TryAcquire(ctx, name, ttl) })
}

// Renew implements Locker.
func (e *Etcd) Renew(ctx context.Context, l *Lease) error {
	if err := checkLease(l); err != nil {
		return err
	}
	if l.id == 0 {
		return fmt.Errorf("%w: %v was not granted by etcd", ErrNotHeld, l)
	}
	sent := e.cfg.Now.now()
	// The key must still be this grant (a lease can outlive its key if the
	// key was deleted by hand).
	resp, err := e.cfg.Client.Get(ctx, e.key(l.Name))
	if err != nil {
		return fmt.Errorf("lock: etcd renew %v: %w", l, err)
	}
	if len(resp.Kvs) == 0 || uint64(resp.Kvs[0].ModRevision) != l.Token || string(resp.Kvs[0].Value) != l.Holder {
		return fmt.Errorf("%w: %v", ErrNotHeld, l)
	}
	ka, err := e.cfg.Client.KeepAliveOnce(ctx, clientv3.LeaseID(l.id))
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("%w: %v", ErrNotHeld, l)
	}
	if err != nil {
		return fmt.Errorf("lock: etcd renew %v: %w", l, err)
	}
	if ka.TTL <= 0 {
		return fmt.Errorf("%w: %v", ErrNotHeld, l)
	}
	l.Expires = sent.Add(l.TTL)
	return nil
}

// Release implements Locker.
func (e *Etcd) Release(ctx context.Context, l *Lease) error {
	if err := checkLease(l); err != nil {
		return err
	}
	key := e.key(l.Name)
	resp, err := e.cfg.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", int64(l.Token)),
			clientv3.Compare(clientv3.Value(key), "=", l.Holder)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return fmt.Errorf("lock: etcd release %v: %w", l, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: %v", ErrNotHeld, l)
	}
	if l.id != 0 {
		_, _ = e.cfg.Client.Revoke(ctx, clientv3.LeaseID(l.id))
	}
	return nil
}

// Close implements Locker; the etcd client stays open (it is the
// caller's).
func (e *Etcd) Close() error { return nil }

var _ Locker = (*Etcd)(nil)
