// Command testapp is the tiny app that runner's tests and benchmarks start
// inside a sandbox. It binds $PAASKIT_SOCKET (a unix socket) or, when that
// is empty, 127.0.0.1:$PORT, at once, and serves HTTP.
//
// Its first argument selects a misbehaviour for the fault tests:
//
//	serve       (default) bind and serve
//	exit        print to stderr and exit 3 at once
//	nobind      never bind; sleep until killed
//	wrongpath   bind a socket at another path than $PAASKIT_SOCKET
//	flood=N     write N bytes of 4 KiB lines to stdout, then bind and serve
//	ignoreterm  ignore SIGTERM, then bind and serve
//	dropidle    bind and serve, but close every connection once its
//	            response is sent, without saying so (a stale keep-alive
//	            connection for the client's next request)
//	sleeper     sleep forever (the children of /forkbomb)
//
// Paths it serves:
//
//	/            "hello <app>" (PAASKIT_APP)
//	/whoami      JSON: uid, gid, pid, hostname, env socket
//	/write?path= try to create a file; "ok" or the error
//	/kill?pid=   try to SIGKILL a pid; "ok" or the error
//	/forkbomb    start sleepers until fork fails; report how many, kill them
//	/alloc?mb=   allocate and touch that many MiB
//	/stream?n=   stream n lines, one per 10 ms
//	/hold?ms=    answer after ms milliseconds
//	/stderr?s=   print s to stderr
//	/echo        answer "<length of the body> <its first 20 bytes>"
//	/upgrade     switch protocols (101) and echo bytes back until EOF
//	/rawchunked?kind=  answer with a raw chunked body from
//	             http1test.BadChunkedResponses (as a hostile app would),
//	             then answer every later request on that connection
//	             with "reused" (a front that pooled it shows); with
//	             &late=1, a good chunk first and the bad body 100 ms later
//	             (after the front relayed the head)
//	/count       how many requests (but /count) the app has seen
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/paaskit/paaskit/internal/http1/http1test"
)

func main() {
	mode := "serve"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch {
	case mode == "exit":
		fmt.Fprintln(os.Stderr, "testapp: exiting at once as asked")
		os.Exit(3)
	case mode == "nobind" || mode == "sleeper":
		fmt.Fprintln(os.Stderr, "testapp: sleeping, not binding")
		for {
			time.Sleep(time.Hour)
		}
	case mode == "wrongpath":
		l, err := net.Listen("unix", "/tmp/not-the-right.sock")
		if err != nil {
			fmt.Fprintln(os.Stderr, "testapp:", err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "testapp: bound the wrong path")
		_ = http.Serve(l, handler())
		return
	case strings.HasPrefix(mode, "flood="):
		n, _ := strconv.ParseInt(strings.TrimPrefix(mode, "flood="), 10, 64)
		flood(n)
	case mode == "ignoreterm":
		signal.Ignore(syscall.SIGTERM)
	case mode == "serve", mode == "dropidle":
	default:
		fmt.Fprintln(os.Stderr, "testapp: unknown mode", mode)
		os.Exit(2)
	}
	l, err := listen()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: handler()}
	if mode == "dropidle" {
		srv.ConnState = func(c net.Conn, s http.ConnState) {
			if s == http.StateIdle {
				c.Close()
			}
		}
	}
	_ = srv.Serve(l)
}

func listen() (net.Listener, error) {
	if p := os.Getenv("PAASKIT_SOCKET"); p != "" {
		return net.Listen("unix", p)
	}
	return net.Listen("tcp", "127.0.0.1:"+os.Getenv("PORT"))
}

func flood(n int64) {
	line := []byte(strings.Repeat("x", 4095) + "\n")
	// One line far over any sane bound first, to check line splitting.
	huge := make([]byte, 1<<20)
	for i := range huge {
		huge[i] = 'y'
	}
	_, _ = os.Stdout.Write(huge)
	_, _ = os.Stdout.Write([]byte("\n"))
	var done int64 = int64(len(huge) + 1)
	buf := make([]byte, 0, 64*len(line))
	for done < n {
		buf = buf[:0]
		for len(buf)+len(line) <= cap(buf) && done+int64(len(buf)) < n {
			buf = append(buf, line...)
		}
		w, err := os.Stdout.Write(buf)
		if err != nil {
			os.Exit(1)
		}
		done += int64(w)
	}
	fmt.Fprintln(os.Stderr, "testapp: flood done")
}

func handler() http.Handler {
	mux := http.NewServeMux()
	var seen atomic.Int64
	mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, seen.Load())
	})
	mux.HandleFunc("/rawchunked", func(w http.ResponseWriter, r *http.Request) {
		body, ok := http1test.BadChunkedResponses[r.URL.Query().Get("kind")]
		if !ok {
			http.Error(w, "unknown kind", http.StatusBadRequest)
			return
		}
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		// In one write, so that the front gets it with the head.
		head := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		if r.URL.Query().Get("late") != "" {
			_, _ = io.WriteString(c, head+"4\r\ngood\r\n")
			time.Sleep(100 * time.Millisecond)
			head = ""
		}
		_, _ = io.WriteString(c, head+body)
		for {
			req, err := http.ReadRequest(brw.Reader)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nreused"); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s\n", os.Getenv("PAASKIT_APP"))
	})
	mux.HandleFunc("/xff", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-For"))
	})
	mux.HandleFunc("/forwarded", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-Proto")+" "+r.Header.Get("X-Forwarded-Host"))
	})
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		host, _ := os.Hostname()
		_ = json.NewEncoder(w).Encode(map[string]any{
			"uid": os.Getuid(), "gid": os.Getgid(), "pid": os.Getpid(), "ppid": os.Getppid(),
			"hostname": host, "socket": os.Getenv("PAASKIT_SOCKET"), "app": os.Getenv("PAASKIT_APP"),
		})
	})
	mux.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		err := os.WriteFile(r.URL.Query().Get("path"), []byte("x"), 0o644)
		report(w, err)
	})
	mux.HandleFunc("/kill", func(w http.ResponseWriter, r *http.Request) {
		pid, err := strconv.Atoi(r.URL.Query().Get("pid"))
		if err == nil {
			err = syscall.Kill(pid, syscall.SIGKILL)
		}
		report(w, err)
	})
	mux.HandleFunc("/forkbomb", forkbomb)
	mux.HandleFunc("/alloc", func(w http.ResponseWriter, r *http.Request) {
		mb, _ := strconv.Atoi(r.URL.Query().Get("mb"))
		var keep [][]byte
		for i := 0; i < mb; i++ {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		fmt.Fprintf(w, "allocated %d MiB\n", len(keep))
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		f, _ := w.(http.Flusher)
		for i := 0; i < n; i++ {
			fmt.Fprintf(w, "line %d\n", i)
			if f != nil {
				f.Flush()
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		io.WriteString(w, "held\n")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		head := b
		if len(head) > 20 {
			head = head[:20]
		}
		fmt.Fprintf(w, "%d %s", len(b), head)
	})
	mux.HandleFunc("/upgrade", func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", r.Header.Get("Upgrade"))
		_ = brw.Flush()
		_, _ = io.Copy(c, brw)
	})
	mux.HandleFunc("/stderr", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(os.Stderr, r.URL.Query().Get("s"))
		io.WriteString(w, "ok\n")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/count" {
			seen.Add(1)
		}
		mux.ServeHTTP(w, r)
	})
}

func report(w http.ResponseWriter, err error) {
	if err != nil {
		fmt.Fprintf(w, "error: %v\n", err)
		return
	}
	io.WriteString(w, "ok\n")
}

// forkbomb starts sleepers until the kernel refuses, reports the count and
// the error, then kills them so the app can keep serving.
func forkbomb(w http.ResponseWriter, r *http.Request) {
	self, err := os.Executable()
	if err != nil {
		report(w, err)
		return
	}
	var pids []int
	var ferr error
	for len(pids) < 100000 {
		pid, err := syscall.ForkExec(self, []string{self, "sleeper"}, &syscall.ProcAttr{})
		if err != nil {
			ferr = err
			break
		}
		pids = append(pids, pid)
	}
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(p, &ws, 0, nil)
	}
	fmt.Fprintf(w, "started %d, stopped by: %v\n", len(pids), ferr)
}
