package evproxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
)

// benchHandler forwards everything to one target, without the test
// handler's bookkeeping (its allocations would be counted).
type benchHandler struct{ t Target }

func (h benchHandler) Route(*Request) Decision {
	return Decision{Action: Forward, Target: h.t, Replayable: true}
}
func (h benchHandler) Done(*Request, Outcome) {}

// BenchmarkLoopForward measures keep-alive GETs through one event loop to
// a raw target that answers each request with a fixed response, from
// conns raw clients, each with one request in flight. ns/op is the wall
// time per request with everything (clients, target, loop) in this
// process on the machine's cores; allocs/op counts the whole process,
// the raw client and target allocating nothing per request, so it is
// the loop's.
func BenchmarkLoopForward(b *testing.B) {
	for _, conns := range []int{1, 32} {
		b.Run(map[int]string{1: "conns=1", 32: "conns=32"}[conns], func(b *testing.B) {
			benchLoopForward(b, conns)
		})
	}
}

func benchLoopForward(b *testing.B, conns int) {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world\n")
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer tln.Close()
	go func() {
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 16<<10)
				n := 0
				for {
					m, err := c.Read(buf[n:])
					if err != nil {
						return
					}
					n += m
					for {
						i := bytes.Index(buf[:n], []byte("\r\n\r\n"))
						if i < 0 {
							break
						}
						if _, err := c.Write(resp); err != nil {
							return
						}
						n = copy(buf, buf[i+4:n])
					}
				}
			}()
		}
	}()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	p, err := New(Config{Listener: ln, Handler: benchHandler{Target{Network: "tcp", Addr: tln.Addr().String()}},
		Handoff: func(c net.Conn, _ []byte) { c.Close() }, Loops: 1})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	req := []byte("GET / HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	cs := make([]net.Conn, conns)
	for i := range cs {
		if cs[i], err = net.Dial("tcp", ln.Addr().String()); err != nil {
			b.Fatal(err)
		}
		defer cs[i].Close()
	}
	one := func(c net.Conn, buf []byte) error {
		if _, err := c.Write(req); err != nil {
			return err
		}
		n := 0
		for n < len(resp)+20 { // the head grows by the loop's fields; read to the body's end
			m, err := c.Read(buf[n:])
			if err != nil {
				return err
			}
			n += m
			if bytes.HasSuffix(buf[:n], []byte("Hello, world\n")) {
				return nil
			}
		}
		return io.ErrUnexpectedEOF
	}
	buf := make([]byte, 4096)
	if err := one(cs[0], buf); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N / conns
	for i, c := range cs {
		n := per
		if i == 0 {
			n += b.N % conns
		}
		wg.Add(1)
		go func(c net.Conn, n int) {
			defer wg.Done()
			buf := make([]byte, 4096)
			for k := 0; k < n; k++ {
				if err := one(c, buf); err != nil {
					b.Error(err)
					return
				}
			}
		}(c, n)
	}
	wg.Wait()
}
