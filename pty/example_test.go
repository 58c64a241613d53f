package pty_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"

	"github.com/paaskit/paaskit/pty"
	"github.com/paaskit/paaskit/zmqloop"
)

// A command in a terminal of its own: what it prints, how it ended.
func ExampleStart() {
	s, err := pty.Start(exec.Command("/bin/sh", "-c", "stty size; exit 3"), pty.Config{Size: pty.WindowSize{Rows: 40, Cols: 132}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close(context.Background())
	out, _ := io.ReadAll(s) // to io.EOF: every byte, the tail included
	st, _ := s.Wait(context.Background())
	fmt.Printf("%s, %v\n", strings.TrimSpace(string(out)), st)
	// Output: 40 132, exit status 3
}

func ExampleWindowSize_Validate() {
	fmt.Println(pty.WindowSize{Rows: 24, Cols: 80}.Validate())
	fmt.Println(pty.WindowSize{Rows: 0, Cols: 80}.Validate())
	// Output:
	// <nil>
	// pty: window size out of range: 0x80 (rows x cols), want 1 to 4096 each
}

// Attach the caller's terminal to a local shell, as a terminal emulator
// would: raw mode, window changes forwarded, the shell's exit status out.
func ExampleAttach() {
	if !pty.IsTerminal(os.Stdin) {
		return
	}
	s, err := pty.Start(exec.Command("/bin/bash", "-i"), pty.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close(context.Background())
	st, err := pty.Attach(context.Background(), os.Stdin, os.Stdout, s)
	if err != nil {
		fmt.Println(err)
		return
	}
	os.Exit(st.Code)
}

// A remote session server and a client over loopback. The server runs
// commands as they are asked for here; runnerd builds them in an app's
// sandbox with runner.Runner.Command.
func ExampleServer() {
	// A key ring signing with the first id and verifying all of them.
	keys := func(ids ...string) *zmqloop.Codec {
		var ks []zmqloop.Key
		for _, id := range ids {
			ks = append(ks, zmqloop.Key{ID: id, Secret: []byte("secret of " + id + ", at least 32 bytes long")})
		}
		ring, _ := zmqloop.NewKeyRing(ks...)
		c, _ := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
		return c
	}
	srv, err := pty.NewServer(pty.ServerConfig{
		Bind:   []string{"tcp://127.0.0.1:*"},
		Codec:  keys("server", "ops"), // callers are the keys it verifies
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Command: func(_ context.Context, caller string, req pty.StartRequest) (*exec.Cmd, error) {
			return exec.Command(req.Argv[0], req.Argv[1:]...), nil
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()
	defer func() { stop(); <-done }()
	<-srv.Ready()

	c, _ := pty.NewClient(pty.ClientConfig{Endpoint: srv.Endpoints()[0], Codec: keys("ops", "server"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer c.Close()
	rs, err := c.Run(ctx, pty.StartRequest{App: "blog", Argv: []string{"/bin/sh", "-c", "read x; echo got $x; exit 4"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rs.Close()
	rs.Write([]byte("hello\n"))
	out, _ := io.ReadAll(rs)
	st, _ := rs.Wait(ctx)
	fmt.Println(strings.Contains(string(out), "got hello"), st)
	// Output: true exit status 4
}
