package zmqloop_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/paaskit/paaskit/zmqloop"
)

// The test vector from the package documentation.
func ExampleCodec_Seal() {
	ring, _ := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")})
	codec, _ := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring,
		Now: func() time.Time { return time.UnixMilli(1800000000000) }})
	frames, err := codec.Seal(zmqloop.Message{Type: "echo", ID: "a1", Body: json.RawMessage(`{"x":1}`)})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s\n%s\n%s\n", frames[0], frames[1], hex.EncodeToString(frames[2]))

	msg, err := codec.Open(frames)
	fmt.Println(msg.Type, msg.ID, string(msg.Body), err)
	// Output:
	// k1
	// {"type":"echo","id":"a1","ts":1800000000000,"body":{"x":1}}
	// 23e2b0d3dc5a6064999e4b854a0a86d7223f7d8b72338789cf473be0f3c80a7e
	// echo a1 {"x":1} <nil>
}

func ExampleReplyLoop() {
	ring, _ := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")})
	codec, _ := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})

	type add struct{ A, B int }
	loop, err := zmqloop.NewReplyLoop(zmqloop.ReplyConfig{
		Bind:  []string{"tcp://127.0.0.1:*"},
		Codec: codec,
		Handlers: map[string]zmqloop.Handler{
			"add": zmqloop.HandleJSON(func(_ context.Context, r add) (int, error) {
				if r.A < 0 {
					return 0, zmqloop.Errorf("negative", "A is %d", r.A)
				}
				return r.A + r.B, nil
			}),
		},
	})
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- loop.Run(ctx) }() // in a daemon: d.Add("rpc", loop.Run)
	<-loop.Ready()

	client, err := zmqloop.NewClient(zmqloop.ClientConfig{Endpoints: loop.Endpoints(), Codec: codec})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	sum, err := zmqloop.CallJSON[int](context.Background(), client, "add", add{A: 2, B: 40})
	fmt.Println(sum, err)
	_, err = zmqloop.CallJSON[int](context.Background(), client, "add", add{A: -1})
	fmt.Println(err)

	stop()
	fmt.Println(<-done)
	// Output:
	// 42 <nil>
	// zmqloop: remote error negative: A is -1
	// <nil>
}

func ExamplePusher() {
	ring, _ := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")})
	codec, _ := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})

	lines := make(chan string, 3)
	pull, _ := zmqloop.NewPullLoop(zmqloop.PullConfig{
		Bind:  []string{"tcp://127.0.0.1:*"},
		Codec: codec,
		Handlers: map[string]zmqloop.MessageHandler{"log": func(_ context.Context, m *zmqloop.Request) error {
			lines <- string(m.Body)
			return nil
		}},
		Logger: slog.New(slog.DiscardHandler),
	})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- pull.Run(ctx) }()
	<-pull.Ready()

	push, _ := zmqloop.NewPusher(zmqloop.SenderConfig{Connect: pull.Endpoints(), Codec: codec})
	for _, l := range []string{`"one"`, `"two"`, `"three"`} {
		_ = push.Push(context.Background(), "log", json.RawMessage(l))
	}
	for range 3 {
		fmt.Println(<-lines)
	}
	_ = push.Close()
	stop()
	fmt.Println(<-done)
	// Output:
	// "one"
	// "two"
	// "three"
	// <nil>
}

func ExampleKeyRing() {
	ring, _ := zmqloop.NewKeyRing(zmqloop.Key{ID: "2026-01", Secret: []byte("old secret, 16+ bytes long")})
	// Rotation: every node adds the new key, then signs with it, then drops
	// the old one once no message signed with it can still be in flight.
	_ = ring.Add(zmqloop.Key{ID: "2026-02", Secret: []byte("new secret, 16+ bytes long")})
	_ = ring.SetSigning("2026-02")
	fmt.Println(ring.KeyIDs(), ring.SigningKeyID())
	_ = ring.Remove("2026-01")
	fmt.Println(ring.KeyIDs())
	// Output:
	// [2026-01 2026-02] 2026-02
	// [2026-02]
}

// A heartbeat: a Publisher that beats until the subscriber has one. As
// with any PUB socket, beats sent before the subscription is in place are
// lost, which periodic messages do not mind.
func ExampleSubLoop() {
	ring, _ := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")})
	codec, _ := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})

	pub, _ := zmqloop.NewPublisher(zmqloop.SenderConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: codec})
	defer pub.Close()

	beats := make(chan string, 1)
	sub, _ := zmqloop.NewSubLoop(zmqloop.SubConfig{
		PullConfig: zmqloop.PullConfig{
			Connect: pub.Endpoints(),
			Codec:   codec,
			Handlers: map[string]zmqloop.MessageHandler{"heartbeat.runner": func(_ context.Context, m *zmqloop.Request) error {
				select {
				case beats <- m.Type + " " + string(m.Body):
				default:
				}
				return nil
			}},
			Logger: slog.New(slog.DiscardHandler),
		},
		Topics: []string{"heartbeat."},
	})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- sub.Run(ctx) }()
	<-sub.Ready()

	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for got := false; !got; {
		_ = pub.Publish(context.Background(), "heartbeat.runner", json.RawMessage(`{"node":"a"}`))
		_ = pub.Publish(context.Background(), "stats.runner", json.RawMessage(`{}`)) // not subscribed
		select {
		case b := <-beats:
			fmt.Println(b)
			got = true
		case <-tick.C:
		}
	}
	stop()
	fmt.Println(<-done)
	// Output:
	// heartbeat.runner {"node":"a"}
	// <nil>
}

// CURVE: the service holds a long-term key pair; clients know its public
// key. Both sides still sign with the shared HMAC key.
func ExampleCurve() {
	ring, _ := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")})
	codec, _ := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	server, err := zmqloop.NewCurveKeyPair()
	if err != nil {
		fmt.Println(err) // libzmq without CURVE: ErrCurveUnsupported
		return
	}

	loop, _ := zmqloop.NewReplyLoop(zmqloop.ReplyConfig{
		Bind:  []string{"tcp://127.0.0.1:*"},
		Codec: codec,
		Curve: &zmqloop.Curve{KeyPair: server},
		Handlers: map[string]zmqloop.Handler{"ping": func(context.Context, *zmqloop.Request) (json.RawMessage, error) {
			return json.RawMessage(`"pong"`), nil
		}},
	})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- loop.Run(ctx) }()
	<-loop.Ready()

	// The client gets a fresh key pair of its own; it needs only the
	// server's public key.
	client, _ := zmqloop.NewClient(zmqloop.ClientConfig{Endpoints: loop.Endpoints(), Codec: codec,
		Curve: &zmqloop.Curve{ServerKey: server.Public}})
	defer client.Close()
	reply, err := client.Call(context.Background(), "ping", nil)
	fmt.Println(string(reply), err)
	stop()
	fmt.Println(<-done)
	// Output:
	// "pong" <nil>
	// <nil>
}
