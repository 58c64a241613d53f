// Package benchbackend is a tiny, fast HTTP/1.1 server used as the common
// backend when benchmarking proxies against each other (the balancer
// against nginx and HAProxy). It answers every request with a fixed small
// body, keeps connections alive, and does as little work as it can so the
// proxies, not the backend, dominate the measurement. It understands only
// requests without a body or with a Content-Length or chunked body (which
// it skips; chunked without trailers) and is not a general server.
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
			if isChunked(buf[start:headEnd]) {
				var ok bool
				if skip, ok = chunkedLen(buf[headEnd:n]); !ok {
					break
				}
			}
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

func isChunked(h []byte) bool {
	return bytes.Contains(bytes.ToLower(h), []byte("\r\ntransfer-encoding: chunked\r\n"))
}

// chunkedLen returns the length of the chunked body at the start of b
// (its last chunk and the empty trailer included), or false when it is
// not all there yet (or is not one this toy reads: then the connection
// stalls until its client gives up, which the benchmark reports).
func chunkedLen(b []byte) (int, bool) {
	off := 0
	for {
		eol := bytes.Index(b[off:], []byte("\r\n"))
		if eol < 0 {
			return 0, false
		}
		line := b[off : off+eol]
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		size, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 16, 32)
		if err != nil {
			return 0, false
		}
		off += eol + 2
		if size == 0 {
			if len(b) < off+2 {
				return 0, false
			}
			return off + 2, true // no trailers
		}
		off += int(size) + 2
		if off > len(b) {
			return 0, false
		}
	}
}
