package lock_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/paaskit/paaskit/lock"
	"github.com/paaskit/paaskit/zmqloop"
)

// A store guarded by fencing tokens refuses a write from a holder whose
// lease was taken over, however late the write arrives.
func ExampleFence() {
	f := lock.NewFence()
	fmt.Println(f.Admit("report", 7)) // the holder of token 7 writes
	fmt.Println(f.Admit("report", 9)) // its lease ran out; token 9 took over
	err := f.Admit("report", 7)       // the paused first holder wakes up
	fmt.Println(errors.Is(err, lock.ErrStaleToken), f.Highest("report"))
	// Output:
	// <nil>
	// <nil>
	// true 9
}

// A single locker (a pair names each other as Peer) and a client: run a
// job only while holding its lease; a second try meanwhile finds it held.
func ExampleHold() {
	ring, _ := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("example-secret-0123456789abcdef")})
	codec, _ := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	srv, err := lock.NewServer(lock.ServerConfig{ID: "a", Bind: "tcp://127.0.0.1:*", Codec: codec,
		ColdStartWait: -1, // a new locker: no earlier leases to wait out
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	<-srv.Ready()
	defer func() { stop(); <-done }()

	lk, err := lock.NewZMQ(lock.ZMQConfig{Endpoints: []string{srv.Endpoint()}, Codec: codec})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lk.Close()
	err = lock.Hold(ctx, lk, "nightly-report", lock.HoldOptions{TTL: 2 * time.Second}, func(ctx context.Context, l lock.Lease) error {
		fmt.Println("running under a token:", l.Token > 0)
		_, err := lk.TryAcquire(ctx, "nightly-report", time.Second)
		fmt.Println("a second holder:", errors.Is(err, lock.ErrHeld))
		return nil
	})
	fmt.Println("done:", err)
	// Output:
	// running under a token: true
	// a second holder: true
	// done: <nil>
}
