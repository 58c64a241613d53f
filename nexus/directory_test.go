package nexus

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/paaskit/paaskit/internal/testserver"
)

// directorySuite holds any Directory to the interface's contract:
// lookups by kind, Get and not-found, a watch that starts with the whole
// set and a Sync and then follows arrivals and goodbyes.
func directorySuite(t *testing.T, d Directory, announce func(Instance) (stop func())) {
	ctx := context.Background()
	es, err := d.Lookup(ctx, "suite-runner")
	require.NoError(t, err)
	require.Empty(t, es)
	announce(inst("suite-runner", "b"))
	announce(inst("suite-runner", "a"))
	announce(inst("suite-other", "x"))
	waitIDs(t, d, "suite-runner", "a", "b")
	waitIDs(t, d, "suite-other", "x")
	e, err := d.Get(ctx, "suite-runner", "a")
	require.NoError(t, err)
	require.Equal(t, inst("suite-runner", "a").Endpoints, e.Endpoints)
	require.Equal(t, "z1", e.Meta["zone"])
	require.Equal(t, Alive, e.State)
	_, err = d.Get(ctx, "suite-runner", "zz")
	require.ErrorIs(t, err, ErrNotFound)
	_, err = d.Lookup(ctx, "Not A Kind")
	require.ErrorIs(t, err, ErrInvalid)

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := d.Watch(wctx, "suite-runner")
	require.NoError(t, err)
	got := map[string]bool{}
	for len(got) < 2 {
		ev := nextEvent(t, w)
		require.Equal(t, Put, ev.Type)
		got[ev.Entry.ID] = true
	}
	require.Equal(t, Sync, nextEvent(t, w).Type)
	stopC := announce(inst("suite-runner", "c"))
	ev := nextEvent(t, w)
	require.Equal(t, [2]any{Put, "c"}, [2]any{ev.Type, ev.Entry.ID})
	stopC()
	ev = nextEvent(t, w)
	require.Equal(t, [2]any{Delete, "c"}, [2]any{ev.Type, ev.Entry.ID})

	// Follow hands the whole set over.
	fctx, fcancel := context.WithCancel(ctx)
	sets := make(chan []string, 16)
	fdone := make(chan error, 1)
	go func() { fdone <- Follow(fctx, d, "suite-runner", func(es []Entry) { sets <- ids(es) }) }()
	select {
	case s := <-sets:
		require.Equal(t, []string{"a", "b"}, s)
	case <-time.After(10 * time.Second):
		t.Fatal("Follow did not deliver the set")
	}
	fcancel()
	require.ErrorIs(t, <-fdone, context.Canceled)

	cancel()
	for range w {
	}
}

func TestDirectorySuiteOnResolverPair(t *testing.T) {
	_, a := startResolver(t, ResolverConfig{SuspectAfter: time.Hour, Grace: time.Hour})
	_, b := startResolver(t, ResolverConfig{SuspectAfter: time.Hour, Grace: time.Hour})
	cfg := Config{Endpoints: []string{a, b}, Codec: mustCodec(t), Interval: testInterval, Logger: quietLog()}
	d, err := Open(cfg)
	require.NoError(t, err)
	defer d.Close()
	directorySuite(t, d, func(in Instance) func() {
		an, err := NewAnnouncerFor(cfg, in)
		require.NoError(t, err)
		return runAnnouncer(t, an)
	})
}

func TestDirectorySuiteOnEtcd(t *testing.T) {
	ep := testserver.Etcd(t)
	cfg := Config{Backend: BackendEtcd, Endpoints: []string{ep}, EtcdPrefix: "/nexus-test/" + t.Name() + "/",
		TTL: 2 * time.Second, Logger: quietLog()}
	d, err := Open(cfg)
	require.NoError(t, err)
	defer d.Close()
	directorySuite(t, d, func(in Instance) func() {
		an, err := NewAnnouncerFor(cfg, in)
		require.NoError(t, err)
		return runAnnouncer(t, an)
	})
}

// On etcd an announcer that stops renewing (its process gone) leaves when
// its lease expires; a value under the prefix that is not an announcement
// is ignored.
func TestEtcdLeaseExpiryAndForeignKeys(t *testing.T) {
	ep := testserver.Etcd(t)
	prefix := "/nexus-test/" + t.Name() + "/"
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	require.NoError(t, err)
	defer cli.Close()
	e, err := NewEtcd(EtcdConfig{Client: cli, Prefix: prefix, TTL: 2 * time.Second, Logger: quietLog()})
	require.NoError(t, err)
	ctx := context.Background()
	_, err = cli.Put(ctx, prefix+"runner/junk", "not json")
	require.NoError(t, err)
	_, err = cli.Put(ctx, prefix+"runner/liar", `{"kind":"runner","id":"someone-else"}`)
	require.NoError(t, err)

	// An announcement whose keep-alive has stopped: a lease, a key, no
	// renewals.
	lease, err := cli.Grant(ctx, 2)
	require.NoError(t, err)
	_, err = cli.Put(ctx, prefix+"runner/n1", `{"kind":"runner","id":"n1","endpoints":{"http":"h:1"}}`, clientv3.WithLease(lease.ID))
	require.NoError(t, err)
	w, err := e.Watch(ctx, "runner")
	require.NoError(t, err)
	ev := nextEvent(t, w)
	require.Equal(t, [2]any{Put, "n1"}, [2]any{ev.Type, ev.Entry.ID})
	require.Equal(t, int64(lease.ID), ev.Entry.Incarnation)
	require.Equal(t, Sync, nextEvent(t, w).Type)
	es, err := e.Lookup(ctx, "runner")
	require.NoError(t, err)
	require.Equal(t, []string{"n1"}, ids(es))
	ev = nextEvent(t, w)
	require.Equal(t, [2]any{Delete, "n1"}, [2]any{ev.Type, ev.Entry.ID}, "expired with its lease")

	for _, bad := range []EtcdConfig{{}, {Endpoints: []string{ep}, TTL: time.Second}, {Endpoints: []string{ep}, TTL: 2500 * time.Millisecond}} {
		_, err := NewEtcd(bad)
		require.ErrorIs(t, err, ErrInvalid)
	}
}
