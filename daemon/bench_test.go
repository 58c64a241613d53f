package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkStop10000Loops starts 10,000 idle main loops, waits until all
// run, and times the ordered stop of all of them. It reports the stop time
// (stop-ms), the start time (start-ms) and the memory each idle loop costs
// (bytes/loop: heap plus goroutine stacks, measured after a GC).
func BenchmarkStop10000Loops(b *testing.B) {
	const n = 10000
	log := slog.New(slog.NewTextHandler(discard{}, nil))
	var stopTotal, startTotal time.Duration
	var perLoop float64
	for range b.N {
		d, err := New(Config{Name: "many", Logger: log, NoSignals: true})
		if err != nil {
			b.Fatal(err)
		}
		var running atomic.Int64
		all := make(chan struct{})
		for i := range n {
			_ = d.Add(fmt.Sprintf("loop%05d", i), func(ctx context.Context) error {
				if running.Add(1) == n {
					close(all)
				}
				<-ctx.Done()
				return nil
			})
		}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- d.Run(ctx) }()
		<-all
		startTotal += time.Since(start)
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		perLoop = float64((after.HeapAlloc+after.StackInuse)-(before.HeapAlloc+before.StackInuse)) / n
		stop := time.Now()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		stopTotal += time.Since(stop)
	}
	b.ReportMetric(float64(stopTotal.Milliseconds())/float64(b.N), "stop-ms")
	b.ReportMetric(float64(startTotal.Milliseconds())/float64(b.N), "start-ms")
	b.ReportMetric(perLoop, "bytes/loop")
}

// BenchmarkEveryLoopOverhead measures the supervisor's cost per call of a
// resilient loop with a tiny interval.
func BenchmarkEveryLoopOverhead(b *testing.B) {
	d, _ := New(Config{Name: "b", Logger: slog.New(slog.NewTextHandler(discard{}, nil)), NoSignals: true})
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int64
	target := int64(b.N)
	_ = d.Every("tick", time.Nanosecond, func(context.Context) error {
		if calls.Add(1) == target {
			cancel()
		}
		return nil
	})
	b.ResetTimer()
	_ = d.Run(ctx)
}
