// Command paasctl is the operator's client of paaskit's remote commands:
// it runs a command in an app's sandbox on a runnerd (pty sessions over
// zmqloop), attaches the local terminal in raw mode, forwards keystrokes
// and window changes, prints the output and exits with the remote exit
// status.
//
//	paasctl [flags] run [-d] APP -- COMMAND [ARGS...]
//	paasctl [flags] attach SESSION
//	paasctl [flags] status SESSION
//	paasctl [flags] list
//	paasctl [flags] hangup SESSION
//
// run -d starts the command detached (Heroku's run:detached): it prints
// the session id and returns; its output goes to runnerd's log directory
// and "attach" shows it later. If paasctl loses its connection, the
// command keeps running for runnerd's grace period and "attach SESSION"
// resumes it without losing output.
//
// The key file (--keys, or $PAASCTL_KEYS) has one "ID SECRET" per line:
// the first is this operator's key (it signs requests and names the
// caller), the others verify runnerd's replies.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/paaskit/paaskit/pty"
	"github.com/paaskit/paaskit/zmqloop"
)

func main() { os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

func run(ctx context.Context, args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("paasctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoint := fs.String("endpoint", "tcp://127.0.0.1:7301", "runnerd's remote command endpoint (its --pty-bind)")
	keys := fs.String("keys", os.Getenv("PAASCTL_KEYS"), "key file: \"ID SECRET\" per line, the first is yours")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: paasctl [flags] run [-d] APP -- COMMAND [ARGS...] | attach SESSION | status SESSION | list | hangup SESSION\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	ring, err := loadKeyRing(*keys)
	if err != nil {
		fmt.Fprintln(stderr, "paasctl: keys:", err)
		return 2
	}
	codec, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	if err != nil {
		fmt.Fprintln(stderr, "paasctl:", err)
		return 2
	}
	c, err := pty.NewClient(pty.ClientConfig{Endpoint: *endpoint, Codec: codec})
	if err != nil {
		fmt.Fprintln(stderr, "paasctl:", err)
		return 2
	}
	defer c.Close()
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch {
	case cmd == "run":
		return runCommand(ctx, c, rest, stdin, stdout, stderr)
	case cmd == "attach" && len(rest) == 1:
		rs, err := c.Attach(callCtx, rest[0], -1)
		if err != nil {
			fmt.Fprintln(stderr, "paasctl: attach:", err)
			return 1
		}
		return attach(ctx, rs, stdin, stdout, stderr)
	case cmd == "status" && len(rest) == 1:
		info, err := c.Status(callCtx, rest[0])
		return printJSON(info, err, stdout, stderr)
	case cmd == "list" && len(rest) == 0:
		l, err := c.List(callCtx)
		return printJSON(l, err, stdout, stderr)
	case cmd == "hangup" && len(rest) == 1:
		info, err := c.Hangup(callCtx, rest[0])
		return printJSON(info, err, stdout, stderr)
	}
	fs.Usage()
	return 2
}

func runCommand(ctx context.Context, c *pty.Client, args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("paasctl run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	detached := fs.Bool("d", false, "start detached: print the session id and return")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	argv := fs.Args()
	if len(argv) > 1 && argv[1] == "--" {
		argv = append(argv[:1:1], argv[2:]...)
	}
	if len(argv) < 2 {
		fmt.Fprintln(stderr, "usage: paasctl run [-d] APP -- COMMAND [ARGS...]")
		return 2
	}
	req := pty.StartRequest{App: argv[0], Argv: argv[1:], Detached: *detached}
	if size, err := pty.TerminalSize(stdin); err == nil {
		req.Rows, req.Cols = size.Rows, size.Cols
	}
	callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	info, err := c.Start(callCtx, req)
	if err != nil {
		fmt.Fprintln(stderr, "paasctl: run:", err)
		return 1
	}
	if *detached {
		fmt.Fprintln(stdout, info.ID)
		return 0
	}
	rs, err := c.Attach(callCtx, info.ID, 0)
	if err != nil {
		fmt.Fprintln(stderr, "paasctl: attach:", err)
		return 1
	}
	return attach(ctx, rs, stdin, stdout, stderr)
}

func attach(ctx context.Context, rs *pty.RemoteSession, stdin *os.File, stdout, stderr io.Writer) int {
	defer rs.Close()
	st, err := pty.Attach(ctx, stdin, stdout, rs)
	if err != nil {
		fmt.Fprintf(stderr, "\r\npaasctl: %v\r\npaasctl: the command keeps running for a while; resume it with: paasctl attach %s\r\n", err, rs.ID())
		return 255
	}
	return st.Code
}

func printJSON(v any, err error, stdout, stderr io.Writer) int {
	if err != nil {
		fmt.Fprintln(stderr, "paasctl:", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
	return 0
}

// loadKeyRing reads the key file (zmqloop.ReadKeyFile's format).
func loadKeyRing(path string) (*zmqloop.KeyRing, error) {
	if path == "" {
		return nil, errors.New("no key file: set --keys or $PAASCTL_KEYS")
	}
	return zmqloop.ReadKeyFile(path)
}
