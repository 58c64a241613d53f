package nexus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Defaults for EtcdConfig's zero values.
const (
	DefaultEtcdPrefix      = "/paaskit/nexus/"
	DefaultEtcdTTL         = 5 * time.Second
	DefaultEtcdDialTimeout = 5 * time.Second
)

// EtcdConfig configures the etcd backend. Zero values are the documented
// defaults.
type EtcdConfig struct {
	// Endpoints are etcd's client URLs ("http://127.0.0.1:2379").
	// Required unless Client is set.
	Endpoints []string
	// Client, if set, is used instead of dialling Endpoints, and Close
	// leaves it open.
	Client *clientv3.Client
	// Prefix is the key prefix; an instance is the key
	// Prefix+kind+"/"+id. Default DefaultEtcdPrefix ("/paaskit/nexus/").
	Prefix string
	// TTL is an announcement's lease: an announcer that stops renewing
	// it (KeepAlive) is gone TTL later. Whole seconds, at least 2.
	// Default DefaultEtcdTTL (5s).
	TTL time.Duration
	// DialTimeout bounds connecting. Default DefaultEtcdDialTimeout (5s).
	DialTimeout time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Etcd is the Directory on etcd, for operators who already run it or
// outgrow the resolver pair: an announcement is a key under a lease (kept
// alive by the announcer, revoked on goodbye, expired by etcd after TTL),
// a lookup is a range read over the kind's prefix, and a watch follows
// etcd's watch stream from the revision of its initial read. etcd has no
// suspect state: an instance is listed until its lease ends.
type Etcd struct {
	cfg EtcdConfig
	cli *clientv3.Client
	own bool
	log *slog.Logger
}

var _ Directory = (*Etcd)(nil)

// NewEtcd validates cfg and connects (lazily: etcd's client dials in the
// background and calls wait for it).
func NewEtcd(cfg EtcdConfig) (*Etcd, error) {
	if cfg.Client == nil && len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("%w: etcd: Endpoints or Client is required", ErrInvalid)
	}
	if cfg.TTL < 0 || cfg.DialTimeout < 0 {
		return nil, fmt.Errorf("%w: etcd: negative TTL %v or DialTimeout %v", ErrInvalid, cfg.TTL, cfg.DialTimeout)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultEtcdPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultEtcdTTL
	}
	if cfg.TTL < 2*time.Second || cfg.TTL%time.Second != 0 {
		return nil, fmt.Errorf("%w: etcd: TTL %v: want whole seconds, at least 2s", ErrInvalid, cfg.TTL)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultEtcdDialTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	e := &Etcd{cfg: cfg, cli: cfg.Client, log: cfg.Logger}
	if e.cli == nil {
		cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout, Logger: zap.NewNop()})
		if err != nil {
			return nil, fmt.Errorf("nexus: etcd %v: %w", cfg.Endpoints, err)
		}
		e.cli, e.own = cli, true
	}
	return e, nil
}

// Close closes the etcd client if NewEtcd dialled it. Watches end.
func (e *Etcd) Close() error {
	if e.own {
		return e.cli.Close()
	}
	return nil
}

func (e *Etcd) kindPrefix(kind string) string { return e.cfg.Prefix + kind + "/" }

func (e *Etcd) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, DefaultLookupTimeout)
}

// decode turns a key-value into an entry; a value that is not an instance
// of the key's kind and id is refused (something else wrote under the
// prefix) and logged.
func (e *Etcd) decode(kv []byte, value []byte, lease int64, rev int64) (Entry, bool) {
	var in Instance
	if err := json.Unmarshal(value, &in); err == nil {
		err = in.Validate()
		if err == nil && string(kv) == e.kindPrefix(in.Kind)+in.ID {
			return Entry{Instance: in, State: Alive, Incarnation: lease, Seq: uint64(rev)}, true
		}
	}
	e.log.Warn("nexus: etcd: ignoring a key that is not an announcement", "key", string(kv))
	return Entry{}, false
}

// Lookup reads the kind's prefix.
func (e *Etcd) Lookup(ctx context.Context, kind string) ([]Entry, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	ctx, cancel := e.callCtx(ctx)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.kindPrefix(kind), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("nexus: etcd lookup %q: %w", kind, err)
	}
	out := make([]Entry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if en, ok := e.decode(kv.Key, kv.Value, kv.Lease, kv.ModRevision); ok {
			out = append(out, en)
		}
	}
	return out, nil // etcd returns keys sorted, and the id is the key's tail
}

// Get reads one instance's key.
func (e *Etcd) Get(ctx context.Context, kind, id string) (Entry, error) {
	if err := checkKind(kind); err != nil {
		return Entry{}, err
	}
	ctx, cancel := e.callCtx(ctx)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.kindPrefix(kind)+id)
	if err != nil {
		return Entry{}, fmt.Errorf("nexus: etcd get %s/%s: %w", kind, id, err)
	}
	if len(resp.Kvs) == 0 {
		return Entry{}, fmt.Errorf("nexus: etcd get %s/%s: %w", kind, id, ErrNotFound)
	}
	kv := resp.Kvs[0]
	en, ok := e.decode(kv.Key, kv.Value, kv.Lease, kv.ModRevision)
	if !ok {
		return Entry{}, fmt.Errorf("nexus: etcd get %s/%s: %w: the key holds no announcement", kind, id, ErrNotFound)
	}
	return en, nil
}

// Watch reads the kind, then follows etcd's watch stream from the next
// revision. When the stream fails (a compacted revision, a lost
// connection), it reads again and emits the difference.
func (e *Etcd) Watch(ctx context.Context, kind string) (<-chan Event, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	out := make(chan Event, 64)
	go func() {
		defer close(out)
		e.follow(ctx, kind, out)
	}()
	return out, nil
}

func (e *Etcd) follow(ctx context.Context, kind string, out chan<- Event) {
	send := func(ev Event) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	prefix := e.kindPrefix(kind)
	have := map[string]Entry{}
	synced := false
	pause := 100 * time.Millisecond
	for ctx.Err() == nil {
		resp, err := e.cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			e.log.Warn("nexus: etcd watch: read failed; retrying", "kind", kind, "err", err)
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return
			}
			pause = min(2*pause, 2*time.Second)
			continue
		}
		pause = 100 * time.Millisecond
		now := map[string]Entry{}
		for _, kv := range resp.Kvs {
			if en, ok := e.decode(kv.Key, kv.Value, kv.Lease, kv.ModRevision); ok {
				now[en.ID] = en
			}
		}
		for id, old := range have {
			if _, ok := now[id]; !ok && !send(Event{Type: Delete, Entry: old}) {
				return
			}
		}
		for _, en := range sortedEntries(now) {
			if old, ok := have[en.ID]; (!ok || old.Seq != en.Seq) && !send(Event{Type: Put, Entry: en}) {
				return
			}
		}
		have = now
		if !synced {
			synced = true
			if !send(Event{Type: Sync}) {
				return
			}
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wc := e.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
		ok := e.stream(ctx, kind, wc, have, send)
		cancel()
		if !ok {
			return
		}
	}
}

// stream applies watch responses until the stream ends; false means ctx
// ended or the consumer is gone.
func (e *Etcd) stream(ctx context.Context, kind string, wc clientv3.WatchChan, have map[string]Entry, send func(Event) bool) bool {
	for wr := range wc {
		if err := wr.Err(); err != nil {
			e.log.Warn("nexus: etcd watch: stream failed; reading again", "kind", kind, "err", err)
			return ctx.Err() == nil
		}
		for _, ev := range wr.Events {
			id := strings.TrimPrefix(string(ev.Kv.Key), e.kindPrefix(kind))
			switch ev.Type {
			case clientv3.EventTypePut:
				en, ok := e.decode(ev.Kv.Key, ev.Kv.Value, ev.Kv.Lease, ev.Kv.ModRevision)
				if !ok {
					continue
				}
				have[en.ID] = en
				if !send(Event{Type: Put, Entry: en}) {
					return false
				}
			case clientv3.EventTypeDelete:
				old, ok := have[id]
				if !ok {
					continue
				}
				delete(have, id)
				if !send(Event{Type: Delete, Entry: old}) {
					return false
				}
			}
		}
	}
	return ctx.Err() == nil
}

// EtcdAnnouncer keeps one instance's key alive under a lease.
type EtcdAnnouncer struct {
	e    *Etcd
	inst Instance
}

var _ Announcer = (*EtcdAnnouncer)(nil)

// Announcer returns an announcer of inst on this etcd.
func (e *Etcd) Announcer(inst Instance) (*EtcdAnnouncer, error) {
	if err := inst.Validate(); err != nil {
		return nil, fmt.Errorf("etcd announcer: %w", err)
	}
	return &EtcdAnnouncer{e: e, inst: inst.clone()}, nil
}

// Run grants a lease, writes the instance's key under it and keeps the
// lease alive until ctx ends; then it revokes the lease, which deletes
// the key at once (the goodbye). If the lease is lost (etcd unreachable
// for longer than TTL), it starts again with a new one.
func (a *EtcdAnnouncer) Run(ctx context.Context) error {
	e := a.e
	key := e.kindPrefix(a.inst.Kind) + a.inst.ID
	value, err := json.Marshal(a.inst)
	if err != nil {
		return fmt.Errorf("nexus: etcd announce %s: %w", key, err)
	}
	pause := 100 * time.Millisecond
	for ctx.Err() == nil {
		lease, err := a.once(ctx, key, value)
		if lease != 0 {
			rctx, cancel := context.WithTimeout(context.Background(), DefaultByeTimeout)
			_, rerr := e.cli.Revoke(rctx, lease)
			cancel()
			if ctx.Err() != nil {
				if rerr != nil {
					e.log.Warn("nexus: etcd goodbye failed; the key expires with its lease", "key", key, "err", rerr)
				}
				return nil
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		e.log.Warn("nexus: etcd announcement lost; announcing again", "key", key, "err", err)
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return nil
		}
		pause = min(2*pause, 2*time.Second)
	}
	return nil
}

// once announces under one lease until ctx ends or the lease is lost.
func (a *EtcdAnnouncer) once(ctx context.Context, key string, value []byte) (clientv3.LeaseID, error) {
	e := a.e
	gctx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	grant, err := e.cli.Grant(gctx, int64(e.cfg.TTL/time.Second))
	cancel()
	if err != nil {
		return 0, fmt.Errorf("grant lease: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	_, err = e.cli.Put(pctx, key, string(value), clientv3.WithLease(grant.ID))
	cancel()
	if err != nil {
		return grant.ID, fmt.Errorf("put %s: %w", key, err)
	}
	ka, err := e.cli.KeepAlive(ctx, grant.ID)
	if err != nil {
		return grant.ID, fmt.Errorf("keep lease alive: %w", err)
	}
	for range ka {
	}
	return grant.ID, errors.New("lease keep-alive ended")
}
