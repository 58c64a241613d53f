package evproxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/paaskit/paaskit/internal/evproxy"
)

// toOne sends every request to one target.
type toOne struct{ addr string }

func (h toOne) Route(r *evproxy.Request) evproxy.Decision {
	return evproxy.Decision{Action: evproxy.Forward, Target: evproxy.Target{Network: "tcp", Addr: h.addr}, Replayable: string(r.Head.Method) == "GET"}
}

func (toOne) Done(*evproxy.Request, evproxy.Outcome) {}

func Example() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s via %s", r.URL.Path, r.Header.Get("X-Forwarded-For"))
	}))
	defer app.Close()

	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	p, err := evproxy.New(evproxy.Config{
		Listener: ln,
		Handler:  toOne{strings.TrimPrefix(app.URL, "http://")},
		// What the loops do not serve (here: nothing) would go to a
		// goroutine-per-connection server.
		Handoff: func(c net.Conn, _ []byte) { _ = c.Close() },
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, string(body))

	cancel()
	fmt.Println(<-done)
	// Output:
	// 200 hello / via 127.0.0.1
	// <nil>
}
