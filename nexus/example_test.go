package nexus_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/paaskit/paaskit/nexus"
	"github.com/paaskit/paaskit/zmqloop"
)

// A resolver pair, one announced runner node, and a client that looks it
// up and watches the kind.
func Example() {
	ring, _ := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("example-secret-0123456789abcdef")})
	codec, _ := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var resolvers []string
	var running []chan error
	for i := 0; i < 2; i++ {
		r, err := nexus.NewResolver(nexus.ResolverConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: codec,
			Interval: 100 * time.Millisecond, Logger: quiet})
		if err != nil {
			panic(err)
		}
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		<-r.Ready()
		resolvers = append(resolvers, r.Endpoints()[0])
		running = append(running, done)
	}
	defer func() {
		cancel()
		for _, d := range running {
			<-d
		}
	}()

	a, _ := nexus.NewAnnouncer(nexus.AnnouncerConfig{Resolvers: resolvers, Codec: codec, Interval: 100 * time.Millisecond,
		Instance: nexus.Instance{Kind: "runner", ID: "node-1", Endpoints: map[string]string{"http": "10.0.0.1:8080"}},
		Logger:   quiet})
	actx, stopAnnouncing := context.WithCancel(ctx)
	announced := make(chan error, 1)
	go func() { announced <- a.Run(actx) }()

	c, _ := nexus.NewClient(nexus.ClientConfig{Resolvers: resolvers, Codec: codec, Logger: quiet})
	defer c.Close()
	w, _ := c.Watch(ctx, "runner")
	for ev := range w {
		if ev.Type == nexus.Put { // (a Sync may come first, before the node)
			fmt.Println(ev.Type, ev.Entry.ID, ev.Entry.Endpoints["http"])
			break
		}
	}
	es, _ := c.Lookup(ctx, "runner")
	for len(es) == 0 { // the other resolver may not have had the beat yet
		time.Sleep(10 * time.Millisecond)
		es, _ = c.Lookup(ctx, "runner")
	}
	fmt.Println(len(es), es[0].ID, es[0].State)

	stopAnnouncing() // a clean stop says goodbye
	<-announced
	for ev := range w {
		if ev.Type == nexus.Delete {
			fmt.Println(ev.Type, ev.Entry.ID)
			break
		}
	}
	// Output:
	// put node-1 10.0.0.1:8080
	// 1 node-1 alive
	// delete node-1
}

// ParseSpec reads the daemons' --nexus flag; Open gives the Directory.
func ExampleParseSpec() {
	for _, spec := range []string{"tcp://10.0.0.1:7400,tcp://10.0.0.2:7400", "etcd://10.0.0.1:2379"} {
		cfg, err := nexus.ParseSpec(spec)
		fmt.Println(cfg.Backend, cfg.Endpoints, err)
	}
	_, err := nexus.ParseSpec("10.0.0.1:7400")
	fmt.Println(err != nil)
	// Output:
	// resolvers [tcp://10.0.0.1:7400 tcp://10.0.0.2:7400] <nil>
	// etcd [http://10.0.0.1:2379] <nil>
	// true
}
