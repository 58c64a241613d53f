package lock

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresConfig configures a PostgreSQL Locker. Zero values are the
// documented defaults.
type PostgresConfig struct {
	// Pool is the connection pool to use. Required; Close does not close
	// it.
	Pool *pgxpool.Pool
	// Table is the lease table's name, created if missing by
	// NewPostgres; its token sequence is Table+"_token". Default
	// "paaskit_locks". [a-z_][a-z0-9_]* only, at most 50 bytes.
	Table string
	// Now is the client's clock for Lease.Expires. Default time.Now.
	Now Clock
}

// Postgres is a Locker on PostgreSQL: a table of leases, one row per name
// ever locked, and a sequence for tokens.
//
// A grant is one statement, so one transaction: an INSERT ... ON CONFLICT
// DO UPDATE that takes the row only if its lease has expired (on the
// server's clock, clock_timestamp()), with the token
// GREATEST(nextval(sequence), row's token + 1). The sequence makes tokens
// unique and increasing; the GREATEST keeps them increasing per name even
// if a transaction that drew a value stalled for longer than a lease
// before it wrote (rows are never deleted, a release only expires them,
// so the row's token is the mark to stay above). The row lock the upsert
// takes serialises concurrent grants of one name. Renew and Release are
// UPDATEs that match name, holder and token of a lease that has not
// expired.
//
// Why a table and not advisory locks: an advisory lock belongs to a
// session, so it needs a connection held for the whole lease (a pool of
// short checkouts cannot hold one, and a pgbouncer in transaction mode
// breaks it), and it has no TTL: a holder whose connection hangs keeps
// it. A leased row lives on the server's clock, survives a dropped
// connection for the TTL, and works through any pooler.
type Postgres struct {
	cfg              PostgresConfig
	acquire, renew   string
	release, setupDB string
}

var pgIdent = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,49}$`)

// NewPostgres validates cfg, creates the table and sequence if they are
// missing, and returns a Locker.
func NewPostgres(ctx context.Context, cfg PostgresConfig) (*Postgres, error) {
	if cfg.Pool == nil {
		return nil, fmt.Errorf("%w: PostgresConfig.Pool is required", ErrInvalid)
	}
	if cfg.Table == "" {
		cfg.Table = "paaskit_locks"
	}
	if !pgIdent.MatchString(cfg.Table) {
		return nil, fmt.Errorf("%w: table name %q (want [a-z_][a-z0-9_]*, at most 50 bytes)", ErrInvalid, cfg.Table)
	}
	t, seq := cfg.Table, cfg.Table+"_token"
	p := &Postgres{cfg: cfg}
	p.setupDB = fmt.Sprintf(`CREATE SEQUENCE IF NOT EXISTS %[2]s;
CREATE TABLE IF NOT EXISTS %[1]s (
	name text PRIMARY KEY,
	holder text NOT NULL,
	token bigint NOT NULL,
	expires_at timestamptz NOT NULL)`, t, seq)
	p.acquire = fmt.Sprintf(`INSERT INTO %[1]s AS l (name, holder, token, expires_at)
VALUES ($1, $2, nextval('%[2]s'), clock_timestamp() + $3 * interval '1 millisecond')
ON CONFLICT (name) DO UPDATE
	SET holder = excluded.holder, token = GREATEST(excluded.token, l.token + 1), expires_at = excluded.expires_at
	WHERE l.expires_at <= clock_timestamp()
RETURNING token`, t, seq)
	p.renew = fmt.Sprintf(`UPDATE %s SET expires_at = clock_timestamp() + $4 * interval '1 millisecond'
WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp()`, t)
	p.release = fmt.Sprintf(`UPDATE %s SET expires_at = '-infinity', holder = ''
WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp()`, t)
	// Two lockers starting at once may both create: the loser of that race
	// sees a unique violation on the catalog, and the objects exist.
	for attempt := 0; ; attempt++ {
		_, err := cfg.Pool.Exec(ctx, p.setupDB)
		if err == nil {
			break
		}
		if attempt == 2 {
			return nil, fmt.Errorf("lock: create postgres table %s: %w", t, err)
		}
	}
	return p, nil
}

// TryAcquire implements Locker.
func (p *Postgres) TryAcquire(ctx context.Context, name string, ttl time.Duration) (*Lease, error) {
	if err := checkRequest(name, ttl); err != nil {
		return nil, err
	}
	holder := randomID()
	sent := p.cfg.Now.now()
	var token int64
	err := p.cfg.Pool.QueryRow(ctx, p.acquire, name, holder, ttl.Milliseconds()).Scan(&token)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %q", ErrHeld, name)
	}
	if err != nil {
		return nil, fmt.Errorf("lock: postgres acquire %q: %w", name, err)
	}
	return &Lease{Name: name, Token: uint64(token), Holder: holder, TTL: ttl, Expires: sent.Add(ttl)}, nil
}

// Acquire implements Locker.
func (p *Postgres) Acquire(ctx context.Context, name string, ttl time.Duration) (*Lease, error) {
	if err := checkRequest(name, ttl); err != nil {
		return nil, err
	}
	return acquireLoop(ctx, name, func(ctx context.Context) (*Lease, error) { return p.TryAcquire(ctx, name, ttl) })
}

// Renew implements Locker.
func (p *Postgres) Renew(ctx context.Context, l *Lease) error {
	if err := checkLease(l); err != nil {
		return err
	}
	sent := p.cfg.Now.now()
	tag, err := p.cfg.Pool.Exec(ctx, p.renew, l.Name, l.Holder, int64(l.Token), l.TTL.Milliseconds())
	if err != nil {
		return fmt.Errorf("lock: postgres renew %v: %w", l, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %v", ErrNotHeld, l)
	}
	l.Expires = sent.Add(l.TTL)
	return nil
}

// Release implements Locker.
func (p *Postgres) Release(ctx context.Context, l *Lease) error {
	if err := checkLease(l); err != nil {
		return err
	}
	tag, err := p.cfg.Pool.Exec(ctx, p.release, l.Name, l.Holder, int64(l.Token))
	if err != nil {
		return fmt.Errorf("lock: postgres release %v: %w", l, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %v", ErrNotHeld, l)
	}
	return nil
}

// Close implements Locker; the pool stays open (it is the caller's).
func (p *Postgres) Close() error { return nil }

var _ Locker = (*Postgres)(nil)
