package zmqloop

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(benchServerEnv); mode != "" {
		os.Exit(benchServer(mode))
	}
	goleak.VerifyTestMain(m)
}

// runner is a started loop: Ready, Endpoints and Run.
type runner interface {
	Run(ctx context.Context) error
	Ready() <-chan struct{}
	Endpoints() []string
}

// start runs l until the test ends and returns its first bound endpoint.
// Cleanup cancels it and checks Run returned nil.
func start(t testing.TB, l runner) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	select {
	case <-l.Ready():
	case err := <-errc:
		cancel()
		t.Fatalf("loop stopped before it was ready: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("loop not ready after 10s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("loop did not stop within 10s of cancel")
		}
	})
	return l.Endpoints()[0]
}

// echoHandler answers with the request's body (null if none) and its data.
func echoHandler(_ context.Context, r *Request) (json.RawMessage, error) {
	r.ReplyData = r.Data
	if len(r.Body) == 0 {
		return json.RawMessage(`null`), nil
	}
	return r.Body, nil
}

type replyOpts func(*ReplyConfig)

func startReply(t testing.TB, c *Codec, handlers map[string]Handler, opts ...replyOpts) (*ReplyLoop, string) {
	t.Helper()
	if handlers == nil {
		handlers = map[string]Handler{"echo": echoHandler}
	}
	cfg := ReplyConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Handlers: handlers, Logger: quietLog}
	for _, o := range opts {
		o(&cfg)
	}
	l, err := NewReplyLoop(cfg)
	require.NoError(t, err)
	return l, start(t, l)
}

func newClient(t testing.TB, c *Codec, eps []string, opts ...func(*ClientConfig)) *Client {
	t.Helper()
	cfg := ClientConfig{Endpoints: eps, Codec: c, Logger: quietLog}
	for _, o := range opts {
		o(&cfg)
	}
	cl, err := NewClient(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, cl.Close()) })
	return cl
}

// deadEndpoint returns a TCP endpoint on loopback where nothing listens.
func deadEndpoint(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return "tcp://" + addr
}

// rejections collects what a loop's Rejected hook reports.
type rejections struct {
	mu   sync.Mutex
	errs []error
}

func (r *rejections) hook(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *rejections) all() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

// rawSocket is a socket owned by the test goroutine, for sending bad input.
func rawSocket(t testing.TB, typ zmq.Type, ep string) *zmq.Socket {
	t.Helper()
	s, err := zmq.NewSocket(typ)
	require.NoError(t, err)
	require.NoError(t, s.SetLinger(0))
	require.NoError(t, s.Connect(ep))
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func sendRaw(t testing.TB, s *zmq.Socket, frames ...[]byte) {
	t.Helper()
	require.NoError(t, sendFrames(s, 0, frames...))
}

// recvRaw reads one message with a deadline.
func recvRaw(t testing.TB, s *zmq.Socket, within time.Duration) [][]byte {
	t.Helper()
	p := zmq.NewPoller()
	p.Add(s, zmq.POLLIN)
	polled, err := p.Poll(within)
	require.NoError(t, err)
	require.NotEmpty(t, polled, "no message within %v", within)
	frames, err := recvFrames(s, 0, nil)
	require.NoError(t, err)
	return frames
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		require.NoError(t, err)
		return v
	}
}

var _ = strings.Repeat

// quietLog keeps expected warnings (panics, bad input) out of test output.
var quietLog = slog.New(slog.DiscardHandler)
