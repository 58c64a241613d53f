package zmqloop

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/require"
)

func TestCurve(t *testing.T) {
	require.True(t, zmq.HasCurve(), "libzmq without CURVE: install libzmq3-dev from Debian (make deps)")
	server, err := NewCurveKeyPair()
	require.NoError(t, err)
	require.Len(t, server.Public, 40)
	require.Len(t, server.Secret, 40)
	other, err := NewCurveKeyPair()
	require.NoError(t, err)
	require.NotEqual(t, server, other)

	c := newTestCodec(t, nil)
	_, ep := startReply(t, c, nil, func(cfg *ReplyConfig) { cfg.Curve = &Curve{KeyPair: server} })

	// The right server key: encrypted calls work (with a generated client
	// key pair, and with a fixed one).
	good := newClient(t, c, []string{ep}, func(cfg *ClientConfig) { cfg.Curve = &Curve{ServerKey: server.Public} })
	got, err := good.Call(context.Background(), "echo", json.RawMessage(`"secret"`))
	require.NoError(t, err)
	require.Equal(t, `"secret"`, string(got))
	fixed := newClient(t, c, []string{ep}, func(cfg *ClientConfig) { cfg.Curve = &Curve{ServerKey: server.Public, KeyPair: other} })
	_, err = fixed.Call(context.Background(), "echo", nil)
	require.NoError(t, err)

	// The wrong server key: the handshake fails and nothing gets through.
	wrong := newClient(t, c, []string{ep}, func(cfg *ClientConfig) {
		cfg.Curve = &Curve{ServerKey: other.Public}
		cfg.Timeout = 300 * time.Millisecond
	})
	_, err = wrong.Call(context.Background(), "echo", nil)
	require.ErrorIs(t, err, ErrTimeout)

	// No CURVE at all: refused too.
	plain := newClient(t, c, []string{ep}, func(cfg *ClientConfig) { cfg.Timeout = 300 * time.Millisecond })
	_, err = plain.Call(context.Background(), "echo", nil)
	require.ErrorIs(t, err, ErrTimeout)

	// Encrypted PUSH/PULL, the puller holding the server key.
	var got2 collector
	pl, err := NewPullLoop(PullConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Logger: quietLog,
		Curve: &Curve{KeyPair: server}, Handlers: map[string]MessageHandler{"stat": got2.handle}})
	require.NoError(t, err)
	pep := start(t, pl)
	p, err := NewPusher(SenderConfig{Connect: []string{pep}, Codec: c, Logger: quietLog, Curve: &Curve{ServerKey: server.Public}})
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Push(context.Background(), "stat", json.RawMessage(`7`)))
	require.Eventually(t, func() bool { return len(got2.list()) == 1 }, 5*time.Second, time.Millisecond)

	// Bad keys are configuration errors.
	for _, cv := range []*Curve{
		{KeyPair: CurveKeyPair{Public: "short", Secret: server.Secret}},
		{ServerKey: "not-z85"},
		{ServerKey: server.Public, KeyPair: CurveKeyPair{Public: server.Public}},
	} {
		_, err := NewClient(ClientConfig{Endpoints: []string{ep}, Codec: c, Curve: cv})
		require.Error(t, err)
	}
}
