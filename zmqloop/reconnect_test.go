package zmqloop

import (
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/require"
)

// ReconnectInterval reaches the socket, and a negative one is refused
// before anything is opened.
func TestClientReconnectInterval(t *testing.T) {
	codec := newTestCodec(t, nil)
	_, err := NewClient(ClientConfig{Endpoints: []string{"tcp://127.0.0.1:1"}, Codec: codec, ReconnectInterval: -time.Millisecond})
	require.ErrorContains(t, err, "negative ReconnectInterval")

	s, _, err := openSocket(sockOpts{typ: zmq.DEALER, connect: []string{"tcp://127.0.0.1:1"}, reconnect: 7 * time.Millisecond})
	require.NoError(t, err)
	defer closeSocket(s)
	got, err := s.GetReconnectIvl()
	require.NoError(t, err)
	require.Equal(t, 7*time.Millisecond, got)
}
