package lock

import (
	"context"
	"math/rand/v2"
	"net/url"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/testserver"
	"github.com/stretchr/testify/require"
)

// chaosDuration is how long each chaos test runs: LOCK_CHAOS_DURATION
// (a Go duration), 3s by default so make test stays quick; the issue's
// figure is 30s.
func chaosDuration(t *testing.T) time.Duration {
	if v := os.Getenv("LOCK_CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "LOCK_CHAOS_DURATION")
		return d
	}
	// 6 s: under a loaded suite (2 test binaries per core), 3 s with
	// connections cut every 100-400 ms once ended with no grant at all.
	return 6 * time.Second
}

// holding is one client's tenure, as it saw it: from the grant's reply to
// its last use of the lease.
type holding struct {
	client     int
	token      uint64
	start, end time.Time
	writes     int
}

// runChaos has 20 clients contend for one lock while disrupt breaks the
// service, then checks the history: no two tenures overlap, grants'
// tokens increase in the order they were granted, and the protected
// resource (a Fence) never refused a write from a client that held the
// lock (it would if a later grant had a smaller token) nor accepted one
// out of order (a write is only attempted while its lease is unexpired).
func runChaos(t *testing.T, b *backend, disrupt func(ctx context.Context)) {
	const clients = 20
	d := chaosDuration(t)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	name := "chaos-" + randSuffix()
	fence := NewFence()
	var (
		mu       sync.Mutex
		history  []holding
		refused  int
		failures int
	)
	lockers := make([]Locker, clients)
	for i := range lockers {
		lockers[i] = b.newLocker(t, nil)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		disrupt(ctx)
	}()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			lk := lockers[i]
			for ctx.Err() == nil {
				l, err := lk.Acquire(ctx, name, b.ttl)
				if err != nil {
					mu.Lock()
					failures++
					mu.Unlock()
					continue
				}
				h := holding{client: i, token: l.Token, start: time.Now()}
				for w := 0; w < 3; w++ {
					now := time.Now()
					// Use the lease only while it is surely ours: with a
					// tenth of the TTL to spare.
					if !now.Add(b.ttl / 10).Before(l.Expires) {
						break
					}
					if err := fence.Admit(name, l.Token); err != nil {
						mu.Lock()
						refused++
						mu.Unlock()
						t.Errorf("client %d token %d holding the lock was refused: %v", i, l.Token, err)
					}
					h.end = time.Now()
					h.writes++
					time.Sleep(time.Duration(rand.Int64N(int64(b.ttl / 20))))
				}
				if h.writes > 0 {
					mu.Lock()
					history = append(history, h)
					mu.Unlock()
				}
				rctx, rcancel := context.WithTimeout(context.Background(), b.ttl)
				_ = lk.Release(rctx, l)
				rcancel()
			}
		}(i)
	}
	wg.Wait()
	require.NotEmpty(t, history)
	sort.Slice(history, func(i, j int) bool { return history[i].start.Before(history[j].start) })
	for i := 1; i < len(history); i++ {
		prev, cur := history[i-1], history[i]
		if cur.start.Before(prev.end) {
			t.Errorf("overlap: client %d token %d held %v-%v, client %d token %d from %v",
				prev.client, prev.token, prev.start.Format("15:04:05.000"), prev.end.Format("15:04:05.000"),
				cur.client, cur.token, cur.start.Format("15:04:05.000"))
		}
		if cur.token <= prev.token {
			t.Errorf("token went back: %d after %d", cur.token, prev.token)
		}
	}
	t.Logf("%s chaos for %v: %d tenures, %d writes refused, %d acquires cut short (by a disruption or the end)",
		b.name, d, len(history), refused, failures)
}

// cutEvery drops every connection through px at random intervals.
func cutEvery(px *proxy, min, max time.Duration, cuts *int) func(ctx context.Context) {
	return func(ctx context.Context) {
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(min + time.Duration(rand.Int64N(int64(max-min)))):
				px.cut()
				*cuts++
			}
		}
	}
}

func TestChaosRedis(t *testing.T) {
	px := startProxy(t, testserver.Redis(t))
	cuts := 0
	runChaos(t, redisBackend(t, px.addr()), cutEvery(px, 100*time.Millisecond, 400*time.Millisecond, &cuts))
	t.Logf("connections cut %d times", cuts)
}

func TestChaosPostgres(t *testing.T) {
	u, err := url.Parse(testserver.Postgres(t))
	require.NoError(t, err)
	px := startProxy(t, u.Host)
	u.Host = px.addr()
	cuts := 0
	runChaos(t, postgresBackend(t, u.String()), cutEvery(px, 100*time.Millisecond, 400*time.Millisecond, &cuts))
	t.Logf("connections cut %d times", cuts)
}

func TestChaosEtcd(t *testing.T) {
	u, err := url.Parse(testserver.Etcd(t))
	require.NoError(t, err)
	px := startProxy(t, u.Host)
	cuts := 0
	runChaos(t, etcdBackend(t, "http://"+px.addr()), cutEvery(px, 300*time.Millisecond, 900*time.Millisecond, &cuts))
	t.Logf("connections cut %d times", cuts)
}

// TestChaosZMQ kills the active locker member again and again (its state
// dies with it), restarting it as soon as the standby has taken over, and
// waits for the restarted member to hold a replica before the next kill.
func TestChaosZMQ(t *testing.T) {
	p := startPair(t, testCodec(t))
	kills := 0
	runChaos(t, zmqBackend(t, p), func(ctx context.Context) {
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(200+rand.IntN(300)) * time.Millisecond):
			}
			i := p.waitActive()
			p.stop(i)
			kills++
			p.start(i)
			p.waitActive()
		}
	})
	t.Logf("active member killed %d times", kills)
}
