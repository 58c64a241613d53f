package stats_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/paaskit/paaskit/stats"
	"github.com/paaskit/paaskit/zmqloop"
)

func exampleCodec() *zmqloop.Codec {
	ring, _ := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("an example secret of 32 bytes...")})
	c, _ := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	return c
}

// An emitter ships log lines and a counter to a collector writing chunked
// log files; the files answer "the last N lines".
func Example() {
	dir, _ := os.MkdirTemp("", "stats-example-")
	defer os.RemoveAll(dir)
	codec := exampleCodec()
	pull, ack := "ipc://"+filepath.Join(dir, "pull"), "ipc://"+filepath.Join(dir, "ack")

	files, _ := stats.NewFileSink(stats.FileSinkConfig{Dir: filepath.Join(dir, "logs")})
	defer files.Close()
	col, _ := stats.NewCollector(stats.CollectorConfig{Bind: []string{pull}, AckBind: []string{ack}, Codec: codec,
		Dir: filepath.Join(dir, "collector"), Sinks: []stats.Sink{files}})
	e, _ := stats.NewEmitter(stats.EmitterConfig{Collector: []string{pull}, Ack: []string{ack}, Codec: codec,
		SpoolDir: filepath.Join(dir, "spool"), Name: "node-a"})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { col.Run(ctx); done <- struct{}{} }()
	go func() { e.Run(ctx); done <- struct{}{} }()

	tags := stats.Tags{App: "hello", Instance: 1, Stream: "stdout"}
	for i := range 3 {
		e.Log(tags, []byte(fmt.Sprintf("request %d served", i)))
	}
	e.Count(stats.Tags{App: "hello"}, "requests", 3)

	for e.Stats().Acked < 4 || col.Stats().Sinks[0].Backlog > 0 {
		time.Sleep(10 * time.Millisecond)
	}
	lines, _ := files.Tail("hello", 2)
	for _, l := range lines {
		fmt.Printf("%s %d %s\n", l.Stream, l.Instance, l.Text)
	}
	cancel()
	<-done
	<-done
	// Output:
	// stdout 1 request 1 served
	// stdout 1 request 2 served
}

// A UsageMeter turns cumulative usage reports (as a runner's status gives
// them) into increments, which the PostgreSQL sink rolls up per app and
// hour for billing.
func ExampleUsageMeter() {
	dir, _ := os.MkdirTemp("", "stats-example-")
	defer os.RemoveAll(dir)
	e, _ := stats.NewEmitter(stats.EmitterConfig{Collector: []string{"ipc://" + filepath.Join(dir, "c")},
		Ack: []string{"ipc://" + filepath.Join(dir, "a")}, Codec: exampleCodec(), SpoolDir: dir, Name: "node-a"})
	m := stats.NewUsageMeter(e)
	now := time.Now()
	m.Observe(now, []stats.AppUsage{{App: "hello", CPU: 2 * time.Second, PeakMemoryBytes: 50 << 20, Requests: 10}})
	m.Observe(now.Add(10*time.Second), []stats.AppUsage{{App: "hello", CPU: 3 * time.Second, PeakMemoryBytes: 60 << 20, Requests: 15}})
	// Two reports: cpu 2s, 10 requests, peak 50 MiB; then cpu +1s,
	// +5 requests, peak 60 MiB.
	fmt.Println(e.Stats().Emitted, "usage records")
	// Output: 6 usage records
}
