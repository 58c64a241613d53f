package lock

import (
	"context"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/testserver"
)

// BenchmarkAcquireRelease is one uncontended TryAcquire plus Release per
// op, per backend, on loopback: the shared servers (or ones this binary
// starts) and an in-process locker pair with a synced standby, so every
// ZeroMQ grant and release is replicated before it is answered.
func BenchmarkAcquireRelease(b *testing.B) {
	backends := map[string]func(tb testing.TB) *backend{
		"zmq":      func(tb testing.TB) *backend { return zmqBackend(tb, startPair(tb, testCodec(tb))) },
		"redis":    func(tb testing.TB) *backend { return redisBackend(tb, testserver.Redis(tb)) },
		"postgres": func(tb testing.TB) *backend { return postgresBackend(tb, testserver.Postgres(tb)) },
		"etcd":     func(tb testing.TB) *backend { return etcdBackend(tb, testserver.Etcd(tb)) },
	}
	for _, name := range []string{"zmq", "redis", "postgres", "etcd"} {
		b.Run(name, func(b *testing.B) {
			be := backends[name](b)
			lk := be.newLocker(b, nil)
			ctx := context.Background()
			n := "bench-" + randSuffix()
			ttl := 10 * time.Second
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				l, err := lk.TryAcquire(ctx, n, ttl)
				if err != nil {
					b.Fatal(err)
				}
				if err := lk.Release(ctx, l); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFailover measures, per op, the time from stopping the active
// locker member (its sockets close and its state is gone, as in a kill)
// to the next successful grant through a client of both, with the
// production defaults (heartbeats every 100ms, failover after 1s).
func BenchmarkFailover(b *testing.B) {
	codec := testCodec(b)
	p := &pair{t: b, codec: codec, eps: [2]string{freeEndpoint(b), freeEndpoint(b)}}
	for i := range p.cfg {
		p.cfg[i] = ServerConfig{ID: string(rune('a' + i)), Bind: p.eps[i], Peer: p.eps[1-i], Codec: codec,
			ColdStartWait: -1, Logger: quietLogger()}
	}
	p.start(0)
	p.start(1)
	b.Cleanup(func() { p.stop(0); p.stop(1) })
	z, err := NewZMQ(ZMQConfig{Endpoints: p.eps[:], Codec: codec, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer z.Close()
	ctx := context.Background()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		a := p.waitActive()
		l, err := z.Acquire(ctx, "warm", time.Second) // the client knows the active member
		if err != nil {
			b.Fatal(err)
		}
		_ = z.Release(ctx, l)
		b.StartTimer()
		start := time.Now()
		p.stop(a)
		l, err = z.Acquire(ctx, "after-failover-"+randSuffix(), time.Second)
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		b.StopTimer()
		_ = z.Release(ctx, l)
		p.start(a)
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-grant")
}
