package runner

import (
	"bufio"
	"net"
	"time"
)

// srcReader is the reader under an instance connection's bufio.Reader
// on ServeHTTP's path.
type srcReader struct {
	c net.Conn
	// timeout (0: none) bounds every wait for bytes: the read deadline
	// is kept at between timeout/2 and timeout from now, moved only
	// when less than half is left, so a busy connection pays for a
	// clock read, not a timer update, per read.
	timeout  time.Duration
	deadline time.Time
}

// touch moves the read deadline forward when less than half is left.
func (s *srcReader) touch() error {
	if s.timeout <= 0 {
		return nil
	}
	if now := time.Now(); s.deadline.Sub(now) < s.timeout/2 {
		s.deadline = now.Add(s.timeout)
		return s.c.SetReadDeadline(s.deadline)
	}
	return nil
}

func (s *srcReader) Read(p []byte) (int, error) {
	if err := s.touch(); err != nil {
		return 0, err
	}
	return s.c.Read(p)
}

// backendConn is one keep-alive connection to an instance, on
// ServeHTTP's path (Serve's are internal/connproxy's).
type backendConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func newBackendConn(c net.Conn, timeout time.Duration) *backendConn {
	src := &srcReader{c: c, timeout: timeout}
	return &backendConn{c: c, br: bufio.NewReaderSize(src, 16<<10), bw: bufio.NewWriterSize(c, 8<<10)}
}
