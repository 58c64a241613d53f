package nexus

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/paaskit/paaskit/internal/testserver"
)

// Announcers, resolvers, clients and watches release every goroutine
// when stopped and closed.
func TestNoGoroutineLeft(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	func() {
		ctx, cancel := context.WithCancel(context.Background())
		r, err := NewResolver(ResolverConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: mustCodec(t), Interval: testInterval, Logger: quietLog()})
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		<-r.Ready()
		ep := r.Endpoints()[0]
		a, err := NewAnnouncer(AnnouncerConfig{Resolvers: []string{ep}, Codec: mustCodec(t), Instance: inst("runner", "a"),
			Interval: testInterval, Logger: quietLog()})
		require.NoError(t, err)
		actx, acancel := context.WithCancel(ctx)
		adone := make(chan error, 1)
		go func() { adone <- a.Run(actx) }()
		c, err := NewClient(ClientConfig{Resolvers: []string{ep, ep}, Codec: mustCodec(t), Logger: quietLog()})
		require.NoError(t, err)
		w, err := c.Watch(ctx, "runner")
		require.NoError(t, err)
		// On a busy machine the watch may sync (empty) before the first
		// heartbeat arrives; the announcer's Put follows.
		for ev := nextEvent(t, w); ev.Type != Put; ev = nextEvent(t, w) {
			require.Equal(t, Sync, ev.Type, "only a Sync may come before the Put")
		}
		acancel()
		require.NoError(t, <-adone)
		require.NoError(t, c.Close())
		for range w {
		}
		cancel()
		require.NoError(t, <-done)
	}()
}

// On etcd, an announcer whose lease is lost (as when etcd was
// unreachable for longer than the TTL and expired it) announces again
// under a new lease, and the watch sees it leave and come back.
func TestEtcdLeaseLostAnnouncerRecovers(t *testing.T) {
	ctx := context.Background()
	ep := testserver.Etcd(t)
	cfg := Config{Backend: BackendEtcd, Endpoints: []string{ep}, EtcdPrefix: "/nexus-test/" + t.Name() + "/",
		TTL: 2 * time.Second, Logger: quietLog()}
	d, err := Open(cfg)
	require.NoError(t, err)
	defer d.Close()
	an, err := NewAnnouncerFor(cfg, inst("runner", "n1"))
	require.NoError(t, err)
	runAnnouncer(t, an)
	waitIDs(t, d, "runner", "n1")
	w, err := d.Watch(ctx, "runner")
	require.NoError(t, err)
	first := nextEvent(t, w)
	require.Equal(t, Put, first.Type)
	require.Equal(t, Sync, nextEvent(t, w).Type)

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	require.NoError(t, err)
	defer cli.Close()
	_, err = cli.Revoke(ctx, clientv3.LeaseID(first.Entry.Incarnation))
	require.NoError(t, err)
	ev := nextEvent(t, w)
	require.Equal(t, [2]any{Delete, "n1"}, [2]any{ev.Type, ev.Entry.ID})
	ev = nextEvent(t, w)
	require.Equal(t, [2]any{Put, "n1"}, [2]any{ev.Type, ev.Entry.ID})
	require.NotEqual(t, first.Entry.Incarnation, ev.Entry.Incarnation, "a new lease")
}
