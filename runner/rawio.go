package runner

import (
	"github.com/paaskit/paaskit/internal/http1"

	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// The front's sockets are read in two modes. Normally through the
// net.Conn, which waits in the runtime's poller when nothing is there. On
// the warm path, from inside a syscall.RawConn read callback: the
// goroutine already sits in the poller wait, the callback is called only
// when the socket is readable, so a read there does not first fail with
// EAGAIN (one wasted system call per request and side otherwise), and the
// request to the app is written after the wait began, so its answer
// cannot arrive unseen.

// errAgain is what srcReader returns inside a callback when the socket has
// nothing more: the callback returns false and the poller waits.
var errAgain = errors.New("socket would block")

// srcReader is the reader under a connection's bufio.Reader.
type srcReader struct {
	c net.Conn
	// pre is read first: bytes read from c by someone else (an event
	// loop that handed the connection over).
	pre []byte
	// fd is the socket while inside a RawConn callback, -1 otherwise.
	// Inside, the net.Conn must not be read: its read lock is held by
	// the wait, and a Read would wait for it forever.
	fd int
	// full reports that the last direct read filled the space it was
	// given: more may be waiting, and the poller, which reports edges,
	// would not say so again.
	full bool
	// timeout (0: none) bounds every wait for bytes: the read deadline
	// is kept at between timeout/2 and timeout from now, moved only
	// when less than half is left, so a busy connection pays for a
	// clock read, not a timer update, per read.
	timeout  time.Duration
	deadline time.Time
}

func newSrcReader(c net.Conn, timeout time.Duration) *srcReader {
	return &srcReader{c: c, fd: -1, timeout: timeout}
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
	if len(s.pre) > 0 {
		n := copy(p, s.pre)
		s.pre = s.pre[n:]
		return n, nil
	}
	if s.fd < 0 {
		if err := s.touch(); err != nil {
			return 0, err
		}
		return s.c.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := syscall.Read(s.fd, p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			s.full = false
			return 0, errAgain
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		case n == 0:
			return 0, io.EOF
		}
		s.full = n == len(p)
		return n, nil
	}
}

// rawConnOf returns c's RawConn, or nil when c is not a plain socket.
func rawConnOf(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// backendConn is one keep-alive connection to an instance.
type backendConn struct {
	c   net.Conn
	src *srcReader
	br  *bufio.Reader
	bw  *bufio.Writer
	// resp is the last response head, reused.
	resp http1.Head
	// raw and step implement sendAndWait; raw is nil when c is not a
	// plain socket.
	raw     syscall.RawConn
	step    func(fd uintptr) bool
	sent    bool
	stepErr error
	// sendFailed reports that the last sendAndWait failed writing the
	// request: the app got none of it, or only a part it cannot answer.
	sendFailed bool
}

func newBackendConn(c net.Conn, timeout time.Duration) *backendConn {
	src := newSrcReader(c, timeout)
	bc := &backendConn{c: c, src: src, br: bufio.NewReaderSize(src, 16<<10), bw: bufio.NewWriterSize(c, 8<<10)}
	if bc.raw = rawConnOf(c); bc.raw != nil {
		bc.step = bc.rawStep
	}
	return bc
}

// sendAndWait writes what bc.bw holds and waits until the first bytes of
// the answer are in bc.br, in one poller wait when it can. The error is
// the send's, or the read's (a deadline as os.ErrDeadlineExceeded).
func (bc *backendConn) sendAndWait() error {
	bc.sendFailed = false
	if bc.raw == nil || bc.br.Buffered() > 0 {
		if err := bc.bw.Flush(); err != nil {
			bc.sendFailed = true
			return err
		}
		_, err := bc.br.Peek(1)
		return err
	}
	if err := bc.src.touch(); err != nil {
		return err
	}
	bc.sent, bc.stepErr = false, nil
	err := bc.raw.Read(bc.step)
	if !bc.sent {
		// The poller refused before the first step (the connection
		// was closed): nothing was sent.
		if err == nil {
			err = net.ErrClosed
		}
		return err
	}
	if bc.stepErr != nil {
		return bc.stepErr
	}
	return err
}

// rawStep is sendAndWait's callback: the first call sends, later ones
// (the socket is readable) read.
func (bc *backendConn) rawStep(fd uintptr) bool {
	if !bc.sent {
		bc.sent = true
		if err := bc.bw.Flush(); err != nil {
			bc.stepErr = err
			bc.sendFailed = true
			return true
		}
		return false
	}
	bc.src.fd = int(fd)
	_, err := bc.br.Peek(1)
	bc.src.fd = -1
	if err == errAgain {
		return false
	}
	bc.stepErr = err
	return true
}

// shutdownConn makes every read and write on c fail at once without
// waiting for a poller callback that may be running on it (Close would
// wait for that to return); the owner of c closes it afterwards.
func shutdownConn(c net.Conn) {
	type halfCloser interface {
		CloseRead() error
		CloseWrite() error
	}
	hc, ok := c.(halfCloser)
	if !ok || rawConnOf(c) == nil {
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Unix(1, 0))
	_ = hc.CloseRead()
	_ = hc.CloseWrite()
}
