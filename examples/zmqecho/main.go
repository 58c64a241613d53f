// Command zmqecho is the reference daemon for package zmqloop: a signed
// request/reply service (echo and time) on a ROUTER socket, run as a main
// loop under package daemon, and the matching client in the same binary.
//
// Usage:
//
//	ZMQECHO_SECRET=... zmqecho [flags]                       # serve
//	ZMQECHO_SECRET=... zmqecho -call tcp://a:5555,tcp://b:5555 '{"hi":1}'
//
// Run two servers on different ports and give the client both: stop one
// and calls keep working (the client fails over). The secret (at least 16
// bytes) must be the same on both sides; without ZMQECHO_SECRET a demo
// secret is used and a warning logged.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/zmqloop"
)

const demoSecret = "paaskit-demo-secret-change-me"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, false))
}

// run is the whole program; noSignals is for tests, which stop it with ctx.
func run(ctx context.Context, args []string, stdout io.Writer, noSignals bool) int {
	fs := flag.NewFlagSet("zmqecho", flag.ContinueOnError)
	bind := fs.String("bind", "tcp://127.0.0.1:5555", "endpoint the service binds (serve mode)")
	call := fs.String("call", "", "comma-separated service endpoints: send one echo request and print the reply")
	keyID := fs.String("key-id", "k1", "id of the HMAC key")
	timeout := fs.Duration("timeout", 5*time.Second, "client: give up after this long")
	lc := daemon.LogFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: zmqecho [flags] [-call endpoints [json-body]]\n\nA signed ZeroMQ echo service on paaskit's zmqloop.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	lc.Name = "zmqecho"
	log, closeLog, err := daemon.NewLogger(*lc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "zmqecho:", err)
		return 2
	}
	defer closeLog()

	secret := os.Getenv("ZMQECHO_SECRET")
	if secret == "" {
		log.Warn("ZMQECHO_SECRET is not set; using the public demo secret")
		secret = demoSecret
	}
	ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: *keyID, Secret: []byte(secret)})
	if err != nil {
		log.Error("bad key", "error", err)
		return 2
	}
	codec, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	if err != nil {
		log.Error("bad codec config", "error", err)
		return 2
	}
	if *call != "" {
		body := json.RawMessage(`null`)
		if fs.NArg() > 0 {
			body = json.RawMessage(fs.Arg(0))
		}
		return callOnce(ctx, log, codec, strings.Split(*call, ","), body, *timeout, stdout)
	}
	return serve(ctx, log, codec, *bind, noSignals)
}

func serve(ctx context.Context, log *slog.Logger, codec *zmqloop.Codec, bind string, noSignals bool) int {
	loop, err := zmqloop.NewReplyLoop(zmqloop.ReplyConfig{
		Bind:   []string{bind},
		Codec:  codec,
		Logger: log,
		Handlers: map[string]zmqloop.Handler{
			"echo": func(_ context.Context, r *zmqloop.Request) (json.RawMessage, error) { return r.Body, nil },
			"time": zmqloop.HandleJSON(func(context.Context, struct{}) (time.Time, error) { return time.Now().UTC(), nil }),
		},
	})
	if err != nil {
		log.Error("cannot start", "error", err)
		return 2
	}
	d, err := daemon.New(daemon.Config{Name: "zmqecho", Logger: log, NoSignals: noSignals})
	if err == nil {
		err = d.Add("rpc", loop.Run)
	}
	if err != nil {
		log.Error("cannot start", "error", err)
		return 2
	}
	go func() {
		select {
		case <-loop.Ready():
			log.Info("serving", "endpoints", loop.Endpoints())
		case <-ctx.Done():
		}
	}()
	if err := d.Run(ctx); err != nil {
		return 1
	}
	return 0
}

func callOnce(ctx context.Context, log *slog.Logger, codec *zmqloop.Codec, endpoints []string, body json.RawMessage,
	timeout time.Duration, stdout io.Writer) int {
	client, err := zmqloop.NewClient(zmqloop.ClientConfig{Endpoints: endpoints, Codec: codec, Logger: log})
	if err != nil {
		log.Error("bad client config", "error", err)
		return 2
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, err := client.Call(ctx, "echo", body)
	if err != nil {
		log.Error("call failed", "error", err)
		return 1
	}
	fmt.Fprintln(stdout, string(reply))
	return 0
}
