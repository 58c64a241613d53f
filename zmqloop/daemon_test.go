package zmqloop_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/zmqloop"
	"github.com/stretchr/testify/require"
)

// TestLoopsUnderDaemon runs a reply loop and a pull loop as daemon main
// loops and checks they serve and stop cleanly with the daemon.
func TestLoopsUnderDaemon(t *testing.T) {
	ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")})
	require.NoError(t, err)
	codec, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	require.NoError(t, err)
	log := slog.New(slog.DiscardHandler)
	rl, err := zmqloop.NewReplyLoop(zmqloop.ReplyConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: codec, Logger: log,
		Handlers: map[string]zmqloop.Handler{"ping": func(context.Context, *zmqloop.Request) (json.RawMessage, error) {
			return json.RawMessage(`"pong"`), nil
		}}})
	require.NoError(t, err)
	got := make(chan string, 1)
	pl, err := zmqloop.NewPullLoop(zmqloop.PullConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: codec, Logger: log,
		Handlers: map[string]zmqloop.MessageHandler{"log": func(_ context.Context, r *zmqloop.Request) error {
			got <- string(r.Body)
			return nil
		}}})
	require.NoError(t, err)

	d, err := daemon.New(daemon.Config{Name: "zmqtest", Logger: log, NoSignals: true})
	require.NoError(t, err)
	require.NoError(t, d.Add("reply", rl.Run))
	require.NoError(t, d.Add("pull", pl.Run))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	<-rl.Ready()
	<-pl.Ready()

	cl, err := zmqloop.NewClient(zmqloop.ClientConfig{Endpoints: rl.Endpoints(), Codec: codec, Logger: log})
	require.NoError(t, err)
	defer cl.Close()
	reply, err := cl.Call(context.Background(), "ping", nil)
	require.NoError(t, err)
	require.Equal(t, `"pong"`, string(reply))

	p, err := zmqloop.NewPusher(zmqloop.SenderConfig{Connect: pl.Endpoints(), Codec: codec, Logger: log})
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Push(context.Background(), "log", json.RawMessage(`"line"`)))
	require.Equal(t, `"line"`, <-got)

	cancel()
	require.NoError(t, <-done)
}
