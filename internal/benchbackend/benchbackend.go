// Package benchbackend is a tiny, fast HTTP/1.1 server used as the common
// backend when benchmarking proxies against each other (the balancer
// against nginx and HAProxy). It answers every request with a fixed small
// body, keeps connections alive, and does as little work as it can so the
// proxies, not the backend, dominate the measurement. It understands only
// requests without a body (or with a Content-Length body, which it skips)
// and is not a general server.
package benchbackend

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"strconv"
	"sync"
)

// Body is what every request gets.
const Body = "Hello, world\n"

var response = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
	strconv.Itoa(len(Body)) + "\r\n\r\n" + Body)

// Serve accepts connections on ln until it is closed, answering each
// request. Once ln is closed it waits for the open connections to be
// closed by their clients, then returns nil.
func Serve(ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveConn(c)
		}()
	}
}

func serveConn(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 16<<10)
	w := bufio.NewWriterSize(c, 16<<10)
	n := 0
	for {
		m, err := c.Read(buf[n:])
		if m == 0 && err != nil {
			return
		}
		n += m
		start := 0
		for {
			end := bytes.Index(buf[start:n], []byte("\r\n\r\n"))
			if end < 0 {
				break
			}
			headEnd := start + end + 4
			skip := contentLength(buf[start:headEnd])
			if headEnd+skip > n {
				// Body not yet here: keep reading (bodies are small in benches).
				break
			}
			_, _ = w.Write(response)
			start = headEnd + skip
		}
		if w.Buffered() > 0 {
			if w.Flush() != nil {
				return
			}
		}
		copy(buf, buf[start:n])
		n -= start
		if n == len(buf) {
			return // head too large for this toy
		}
	}
}

func contentLength(h []byte) int {
	i := bytes.Index(bytes.ToLower(h), []byte("\r\ncontent-length:"))
	if i < 0 {
		return 0
	}
	v := h[i+len("\r\ncontent-length:"):]
	v = v[:bytes.IndexByte(v, '\r')]
	n, err := strconv.Atoi(string(bytes.TrimSpace(v)))
	if err != nil || n < 0 {
		return 0
	}
	return n
}
