package zmqloop

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	zmq "github.com/pebbe/zmq4"
)

// The ...Proc benchmarks and the failover tests put servers in processes
// of their own (this test binary, re-executed with benchServerEnv set; see
// TestMain), as client and service are in a deployment: each process has
// its own Go runtime, scheduler and libzmq I/O thread, and can be killed
// or stopped.

const benchServerEnv = "ZMQLOOP_BENCH_SERVER"

// benchBindEnv, if set, is the endpoint a benchServer binds instead of a
// free port (a restarted server keeps its address).
const benchBindEnv = "ZMQLOOP_BENCH_BIND"

func serverBindEndpoint() string {
	if ep := os.Getenv(benchBindEnv); ep != "" {
		return ep
	}
	return "tcp://127.0.0.1:*"
}

// benchServer serves until its stdin closes: "raw" echoes on a REP socket;
// "signed" is a ReplyLoop with the test key that serves "echo" and "pid"
// (this process's pid). It prints the endpoint on stdout and returns the
// exit code.
func benchServer(mode string) int {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
		os.Exit(0) // a REP socket blocked in libzmq does not see ctx
	}()
	switch mode {
	case "raw":
		rep, err := zmq.NewSocket(zmq.REP)
		if err == nil {
			err = rep.Bind(serverBindEndpoint())
		}
		var ep string
		if err == nil {
			ep, err = rep.GetLastEndpoint()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench server:", err)
			return 1
		}
		fmt.Println(ep)
		for {
			msg, err := rep.RecvBytes(0)
			if err != nil {
				return 1
			}
			if _, err := rep.SendBytes(msg, 0); err != nil {
				return 1
			}
		}
	case "signed", "signed-big":
		// signed-big takes messages up to 1 MiB, so echoed replies are
		// large enough for libzmq to send their body frame zero-copy.
		maxSize := 4096
		if mode == "signed-big" {
			maxSize = 1 << 20
		}
		ring, err := NewKeyRing(testKey)
		var c *Codec
		if err == nil {
			c, err = NewCodec(CodecConfig{Keys: ring, MaxSize: maxSize})
		}
		var l *ReplyLoop
		if err == nil {
			l, err = NewReplyLoop(ReplyConfig{Bind: []string{serverBindEndpoint()}, Codec: c, Logger: quietLog,
				Handlers: map[string]Handler{"echo": echoHandler, "pid": func(context.Context, *Request) (json.RawMessage, error) {
					return json.RawMessage(strconv.Itoa(os.Getpid())), nil
				}}})
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench server:", err)
			return 1
		}
		errc := make(chan error, 1)
		go func() { errc <- l.Run(ctx) }()
		select {
		case <-l.Ready():
		case err := <-errc:
			fmt.Fprintln(os.Stderr, "bench server:", err)
			return 1
		}
		fmt.Println(l.Endpoints()[0])
		<-errc
		return 0
	}
	fmt.Fprintf(os.Stderr, "bench server: unknown mode %q\n", mode)
	return 2
}

// startServerProcess starts a benchServer process and returns its
// endpoint and process; it is stopped (and continued first, if stopped)
// when the test ends. bind, if given, is the endpoint to bind.
func startServerProcess(b testing.TB, mode string, bind ...string) (string, *os.Process) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"="+mode)
	if len(bind) > 0 {
		cmd.Env = append(cmd.Env, benchBindEnv+"="+bind[0])
	}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("bench server %s: %v", mode, err)
	}
	return strings.TrimSpace(line), cmd.Process
}

// BenchmarkRawReqRepProc is BenchmarkRawReqRep with the REP socket in
// another process.
func BenchmarkRawReqRepProc(b *testing.B) {
	ep, _ := startServerProcess(b, "raw")
	rawReqRepCalls(b, ep).Close()
}

// BenchmarkSignedReqRepProc is BenchmarkSignedReqRep with the ReplyLoop in
// another process.
func BenchmarkSignedReqRepProc(b *testing.B) {
	ep, _ := startServerProcess(b, "signed")
	signedCalls(b, newTestCodec(b, nil), ep)
}
