package lock

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/paaskit/paaskit/internal/testserver"
	"github.com/stretchr/testify/require"
)

// Constructors and helpers refuse bad configuration with ErrInvalid.
func TestBadConfig(t *testing.T) {
	ctx := context.Background()
	_, err := NewRedis(RedisConfig{})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = NewPostgres(ctx, PostgresConfig{})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = NewEtcd(EtcdConfig{})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = NewZMQ(ZMQConfig{Codec: testCodec(t)})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = NewZMQ(ZMQConfig{Endpoints: []string{"tcp://127.0.0.1:1"}})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = NewZMQ(ZMQConfig{Endpoints: []string{"tcp://127.0.0.1:1"}, Codec: testCodec(t), OpTimeout: -1})
	require.ErrorIs(t, err, ErrInvalid)

	lk := redisBackend(t, "127.0.0.1:1").newLocker(t, nil) // never reached: every call below fails first
	for _, o := range []HoldOptions{{TTL: time.Millisecond}, {TTL: time.Second, RenewEvery: time.Second},
		{TTL: time.Second, Margin: -1}, {TTL: time.Second, Margin: 2 * time.Second}} {
		require.ErrorIs(t, Hold(ctx, lk, "x", o, func(context.Context, Lease) error { return nil }), ErrInvalid, "%+v", o)
	}
	require.ErrorIs(t, HoldCommand(ctx, lk, "x", HoldOptions{}, nil), ErrInvalid)
	started := exec.Command("true")
	require.NoError(t, started.Run())
	require.ErrorIs(t, HoldCommand(ctx, lk, "x", HoldOptions{}, started), ErrInvalid)
	require.ErrorIs(t, HoldLease(ctx, lk, &Lease{Name: "x"}, HoldOptions{}, nil), ErrInvalid)
}

func TestBadTableName(t *testing.T) {
	pool, err := pgxpool.New(context.Background(), testserver.Postgres(t))
	require.NoError(t, err)
	defer pool.Close()
	for _, name := range []string{"Locks", "1locks", "locks; drop table x", "a-b", strings.Repeat("a", 51)} {
		_, err := NewPostgres(context.Background(), PostgresConfig{Pool: pool, Table: name})
		require.ErrorIs(t, err, ErrInvalid, name)
	}
}
