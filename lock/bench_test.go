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
	backends["zmq-proc"] = func(tb testing.TB) *backend {
		pp := startProcPair(tb)
		return zmqBackend(tb, &pair{t: tb, codec: testCodec(tb), eps: pp.eps})
	}
	for _, name := range []string{"zmq", "zmq-proc", "redis", "postgres", "etcd"} {
		b.Run(name, func(b *testing.B) {
			be := backends[name](b)
			lk := be.newLocker(b, nil)
			ctx := context.Background()
			n := "bench-" + randSuffix()
			ttl := 10 * time.Second
			// Warm up: connections made, the client settled on the active
			// member, the standby synced (for the process pair, whose state
			// this process cannot see, a blocking acquire rides it out).
			for i := 0; i < 20; i++ {
				l, err := lk.Acquire(ctx, n, ttl)
				if err != nil {
					b.Fatal(err)
				}
				_ = lk.Release(ctx, l)
			}
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

// BenchmarkFailover measures, per op, the time from SIGKILL of the active
// locker member's process to the next successful grant through a client
// of both, with the production defaults (heartbeats every 100ms, failover
// after 1s). The killed member is restarted (it rejoins as the standby)
// before the next op.
func BenchmarkFailover(b *testing.B) {
	p := startProcPair(b)
	z, err := NewZMQ(ZMQConfig{Endpoints: p.eps[:], Codec: testCodec(b), Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer z.Close()
	ctx := context.Background()
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		l, err := z.Acquire(ctx, "warm", time.Second) // the client settles on the active member
		if err != nil {
			b.Fatal(err)
		}
		_ = z.Release(ctx, l)
		z.mu.Lock()
		active := z.current
		z.mu.Unlock()
		time.Sleep(2 * DefaultFailoverAfter) // let the restarted standby sync
		b.StartTimer()
		start := time.Now()
		p.kill(active)
		l, err = z.Acquire(ctx, "after-failover-"+randSuffix(), time.Second)
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		b.StopTimer()
		_ = z.Release(ctx, l)
		p.start(active)
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-grant")
}
