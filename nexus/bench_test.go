package nexus

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/zmqloop"
)

// beater sends heartbeats for many instances over a few sockets, as a
// fleet of announcers would (one process cannot cheaply hold 10,000
// announcers' sockets, and the resolver cannot tell the difference).
type beater struct {
	clients []*zmqloop.Client
	inc     int64
	seq     atomic.Uint64
}

func newBeater(tb testing.TB, ep string, sockets int) *beater {
	b := &beater{inc: time.Now().UnixNano()}
	for i := 0; i < sockets; i++ {
		c, err := zmqloop.NewClient(zmqloop.ClientConfig{Endpoints: []string{ep}, Codec: mustCodec(tb), TryTimeout: time.Minute, Logger: quietLog()})
		require.NoError(tb, err)
		tb.Cleanup(func() { c.Close() })
		b.clients = append(b.clients, c)
	}
	return b
}

// round beats every instance once, with workers callers at a time, and
// returns the number of failed calls.
func (b *beater) round(insts []Instance, workers int) int64 {
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := b.clients[w%len(b.clients)]
			for {
				i := next.Add(1) - 1
				if i >= int64(len(insts)) {
					return
				}
				body, _ := json.Marshal(beatMsg{Instance: insts[i], Inc: b.inc, Seq: b.seq.Add(1)})
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if _, err := c.Call(ctx, TypeBeat, body); err != nil {
					failed.Add(1)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	return failed.Load()
}

func fleet(n, kinds int) []Instance {
	out := make([]Instance, n)
	for i := range out {
		out[i] = Instance{Kind: fmt.Sprintf("kind%03d", i%kinds), ID: fmt.Sprintf("node-%05d", i),
			Endpoints: map[string]string{"http": fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250)}, Meta: map[string]string{"zone": "z1"}}
	}
	return out
}

func percentile(d []time.Duration, p float64) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// BenchmarkLookup10000 registers 10,000 instances in 100 kinds with one
// resolver, then times lookups of a kind (100 entries each) and Gets of
// one instance, one caller at a time; it reports p50 and p99.
func BenchmarkLookup10000(b *testing.B) {
	_, ep := startResolver(b, ResolverConfig{Interval: time.Second, SuspectAfter: time.Hour, Grace: time.Hour})
	insts := fleet(10000, 100)
	require.Zero(b, newBeater(b, ep, 4).round(insts, 32))
	c := newTestClient(b, ep)
	ctx := context.Background()
	es, err := c.Lookup(ctx, "kind007")
	require.NoError(b, err)
	require.Len(b, es, 100)
	for _, mode := range []string{"lookup-kind-of-100", "get-one"} {
		b.Run(mode, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				var err error
				if mode == "get-one" {
					_, err = c.Get(ctx, insts[i%len(insts)].Kind, insts[i%len(insts)].ID)
				} else {
					_, err = c.Lookup(ctx, fmt.Sprintf("kind%03d", i%100))
				}
				lat = append(lat, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(percentile(lat, 0.50).Microseconds()), "p50-us")
			b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-us")
		})
	}
}

// BenchmarkBeats measures how many heartbeats one resolver accepts per
// second from 10,000 instances, 64 callers at once.
func BenchmarkBeats(b *testing.B) {
	_, ep := startResolver(b, ResolverConfig{Interval: time.Second, SuspectAfter: time.Hour, Grace: time.Hour})
	insts := fleet(10000, 100)
	bt := newBeater(b, ep, 8)
	b.ResetTimer()
	t0 := time.Now()
	for done := 0; done < b.N; done += len(insts) {
		n := min(len(insts), b.N-done)
		if f := bt.round(insts[:n], 64); f != 0 {
			b.Fatalf("%d heartbeats failed", f)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "beats/s")
}

func cpuTicks(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s, nil
}

// BenchmarkKeepUp10000 runs one resolver in a process of its own while
// 10,000 instances heartbeat once a second for NEXUS_KEEPUP_SECONDS
// (default 3), and reports the resolver's CPU (percent of one core), the
// longest time a round of 10,000 heartbeats took, and how many
// instances the resolver ever suspected (it must be 0). b.N is ignored:
// it is one timed run.
func BenchmarkKeepUp10000(b *testing.B) {
	secs := 3
	if s, err := strconv.Atoi(os.Getenv("NEXUS_KEEPUP_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	child := startChildResolver(b, "tcp://127.0.0.1:*", childIntervalEnv+"=1s")
	insts := fleet(10000, 100)
	bt := newBeater(b, child.ep, 8)
	require.Zero(b, bt.round(insts, 64))
	c0, err := cpuTicks(child.cmd.Process.Pid)
	require.NoError(b, err)
	start := time.Now()
	var worst time.Duration
	var failed int64
	for s := 1; s <= secs; s++ {
		t0 := time.Now()
		failed += bt.round(insts, 64)
		worst = max(worst, time.Since(t0))
		time.Sleep(time.Until(start.Add(time.Duration(s) * time.Second)))
	}
	c1, err := cpuTicks(child.cmd.Process.Pid)
	require.NoError(b, err)
	elapsed := time.Since(start)
	cl, err := zmqloop.NewClient(zmqloop.ClientConfig{Endpoints: []string{child.ep}, Codec: mustCodec(b), Logger: quietLog()})
	require.NoError(b, err)
	defer cl.Close()
	st, err := zmqloop.CallJSON[ResolverStatus](context.Background(), cl, TypeStatus, struct{}{})
	require.NoError(b, err)
	require.Zero(b, failed, "failed heartbeats")
	require.Equal(b, 10000, st.Instances)
	b.ReportMetric(100*float64(c1-c0)/100/elapsed.Seconds(), "resolver-cpu-%")
	b.ReportMetric(float64(worst.Milliseconds()), "worst-round-ms")
	b.ReportMetric(float64(st.Suspected), "suspected")
	b.ReportMetric(float64(st.Beats)/elapsed.Seconds(), "beats/s")
}
