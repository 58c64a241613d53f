package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/nexus"
	"github.com/paaskit/paaskit/zmqloop"
)

// Two nexusd side by side: an announcer reaches both, the lookup mode
// prints it from either, and it still answers with one of them stopped.
func TestTwoResolversAndLookupMode(t *testing.T) {
	t.Setenv("NEXUS_SECRET", "nexusd-test-secret-0123456789")
	var eps []string
	var stops []func()
	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		got := make(chan []string, 1)
		done := make(chan int, 1)
		go func() {
			done <- runWith(ctx, []string{"--bind", "tcp://127.0.0.1:*", "--interval", "100ms"}, io.Discard, io.Discard, true,
				func(e []string) { got <- e })
		}()
		select {
		case e := <-got:
			eps = append(eps, e[0])
		case code := <-done:
			t.Fatalf("nexusd exited %d", code)
		}
		stops = append(stops, func() { cancel(); require.Equal(t, 0, <-done) })
	}
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("nexusd-test-secret-0123456789")})
	require.NoError(t, err)
	codec, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	require.NoError(t, err)
	a, err := nexus.NewAnnouncer(nexus.AnnouncerConfig{Resolvers: eps, Codec: codec, Interval: 100 * time.Millisecond,
		Instance:   nexus.Instance{Kind: "runner", ID: "node1", Endpoints: map[string]string{"http": "127.0.0.1:8080"}},
		ByeTimeout: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	actx, acancel := context.WithCancel(context.Background())
	adone := make(chan error, 1)
	go func() { adone <- a.Run(actx) }()
	defer func() { acancel(); <-adone }()

	lookup := func(spec string) []nexus.Entry {
		var out bytes.Buffer
		require.Equal(t, 0, run(context.Background(), []string{"--lookup", "runner", "--nexus", spec}, &out, io.Discard, true))
		var es []nexus.Entry
		require.NoError(t, json.Unmarshal(out.Bytes(), &es), out.String())
		return es
	}
	for _, spec := range []string{eps[0], eps[1], strings.Join(eps, ",")} {
		require.Eventually(t, func() bool { return len(lookup(spec)) == 1 }, 10*time.Second, 20*time.Millisecond, spec)
		es := lookup(spec)
		require.Equal(t, "node1", es[0].ID)
		require.Equal(t, "127.0.0.1:8080", es[0].Endpoints["http"])
	}
	stops[0]()
	stops[0] = func() {}
	require.Len(t, lookup(strings.Join(eps, ",")), 1, "the other resolver answers")
}

func TestBadFlags(t *testing.T) {
	var errOut bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"--help"}, io.Discard, &errOut, true))
	require.Contains(t, errOut.String(), "-lookup")
	require.Equal(t, 2, run(context.Background(), []string{"extra"}, io.Discard, io.Discard, true))
	require.Equal(t, 2, run(context.Background(), []string{"--bind", "nonsense"}, io.Discard, io.Discard, true))
	require.Equal(t, 2, run(context.Background(), []string{"--lookup", "runner", "--nexus", "bogus"}, io.Discard, io.Discard, true))
	require.Equal(t, 2, run(context.Background(), []string{"--interval", "1s", "--suspect-after", "1ms"}, io.Discard, io.Discard, true))
}
