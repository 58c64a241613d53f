package connproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/paaskit/paaskit/internal/http1"
)

// errHeadTooLarge is returned when a head does not end within the limit
// (answered with 431 for requests, 502 for responses).
var errHeadTooLarge = errors.New("message head too large")

// connReader is a small buffered reader over one connection that can hand
// out a whole message head as one slice. The buffer starts small and grows
// up to the head limit, so idle connections stay cheap.
type connReader struct {
	c        net.Conn
	buf      []byte
	r, w     int
	max      int           // head size limit
	deadline time.Duration // per-read deadline for body reads; 0 = none
	dl       time.Time     // the read deadline set on c; zero = none
	err      error         // a read error met outside fill, returned by its next call
	noFill   bool          // readHead returns errWouldBlock instead of reading
}

// errWouldBlock is readHead's answer under noFill when the head is not
// wholly buffered.
var errWouldBlock = errors.New("head not wholly buffered")

// setDeadline sets the connection's read deadline (zero = none).
func (cr *connReader) setDeadline(t time.Time) {
	cr.dl = t
	_ = cr.c.SetReadDeadline(t)
}

// lazyDeadline makes the read deadline about d from now: it is only moved
// when it is off by more than d/8, so a busy connection does not pay for
// a timer update on every message.
func (cr *connReader) lazyDeadline(now time.Time, d time.Duration) {
	want := now.Add(d)
	if cr.dl.IsZero() || cr.dl.After(want) || want.Sub(cr.dl) > d/8 {
		cr.setDeadline(want)
	}
}

const initialReadBuf = 4096

func newConnReader(c net.Conn, max int) *connReader {
	return &connReader{c: c, buf: make([]byte, initialReadBuf), max: max}
}

func (cr *connReader) buffered() int { return cr.w - cr.r }

// fill reads more bytes from the connection into the buffer, compacting or
// growing it as needed. limit caps how large the buffer may grow.
func (cr *connReader) fill(limit int) error {
	if err := cr.err; err != nil {
		cr.err = nil
		return err
	}
	if cr.r > 0 && cr.w == len(cr.buf) || cr.r == cr.w {
		n := copy(cr.buf, cr.buf[cr.r:cr.w])
		cr.w = n
		cr.r = 0
	}
	if cr.w == len(cr.buf) {
		if len(cr.buf) >= limit {
			return errHeadTooLarge
		}
		nb := make([]byte, min(2*len(cr.buf), limit))
		copy(nb, cr.buf[cr.r:cr.w])
		cr.w -= cr.r
		cr.r = 0
		cr.buf = nb
	}
	n, err := cr.c.Read(cr.buf[cr.w:])
	cr.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// readHead returns the next message head, from its first byte through the
// empty line, as a slice valid until the next call on cr. started is
// called once when the head is not wholly in the buffer after its first
// byte has arrived (to switch from the idle to the header deadline).
func (cr *connReader) readHead(started func()) ([]byte, error) {
	scan := cr.r
	first := true
	for {
		// Scan complete lines from scan.
		for {
			i := indexLF(cr.buf[scan:cr.w])
			if i < 0 {
				break
			}
			lf := scan + i
			if lf == cr.r || cr.buf[lf-1] != '\r' {
				// Bare LF: hand what we have to the parser, which refuses it.
				h := cr.buf[cr.r : lf+1]
				cr.r = lf + 1
				return h, nil
			}
			lineStart := lf - 1
			if lineStart == cr.r {
				// An empty first line.
				h := cr.buf[cr.r : lf+1]
				cr.r = lf + 1
				return h, nil
			}
			if cr.buf[lineStart-1] == '\n' {
				if lf+1-cr.r > cr.max {
					return nil, errHeadTooLarge
				}
				h := cr.buf[cr.r : lf+1]
				cr.r = lf + 1
				return h, nil
			}
			scan = lf + 1
		}
		if cr.w-cr.r >= cr.max {
			return nil, errHeadTooLarge
		}
		if cr.w > cr.r && first && started != nil {
			first = false
			started()
		}
		if cr.noFill {
			return nil, errWouldBlock
		}
		off := scan - cr.r
		err := cr.fill(cr.max)
		scan = cr.r + off
		if err != nil {
			if err == io.EOF && cr.w > cr.r {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

func indexLF(b []byte) int {
	for i, c := range b {
		if c == '\n' {
			return i
		}
	}
	return -1
}

// setBodyDeadline is called before a body read from the connection: it
// applies the per-read body deadline, or clears a head deadline.
func (cr *connReader) setBodyDeadline() {
	if cr.deadline > 0 {
		cr.lazyDeadline(time.Now(), cr.deadline)
	} else if !cr.dl.IsZero() {
		cr.setDeadline(time.Time{})
	}
}

// Read reads body bytes: buffered ones first, then from the connection.
func (cr *connReader) Read(p []byte) (int, error) {
	if cr.r < cr.w {
		n := copy(p, cr.buf[cr.r:cr.w])
		cr.r += n
		return n, nil
	}
	cr.setBodyDeadline()
	return cr.c.Read(p)
}

// copyBuf is the pool of body copy buffers.
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// errLimit is returned by copyBody when a body exceeds its limit.
var errLimit = errors.New("body exceeds the size limit")

// copyN copies exactly n body bytes from src to dst, flushing dst whenever
// src has nothing buffered (so streamed bodies are not held back).
// readErr reports whether a failure was on the read side.
func copyN(dst *bufio.Writer, src *connReader, n int64) (written int64, readErr bool, err error) {
	if n == 0 {
		return 0, false, nil
	}
	// Fast path: the whole body is buffered already.
	if int64(src.buffered()) >= n {
		_, err = dst.Write(src.buf[src.r : src.r+int(n)])
		src.r += int(n)
		return n, false, err
	}
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	for written < n {
		want := int64(len(buf))
		if rem := n - written; rem < want {
			want = rem
		}
		m, rerr := src.Read(buf[:want])
		if m > 0 {
			if _, werr := dst.Write(buf[:m]); werr != nil {
				return written, false, werr
			}
			written += int64(m)
			if src.buffered() == 0 && written < n {
				if werr := dst.Flush(); werr != nil {
					return written, false, werr
				}
			}
		}
		if rerr != nil {
			if written == n {
				break
			}
			if rerr == io.EOF {
				rerr = io.ErrUnexpectedEOF
			}
			return written, true, rerr
		}
	}
	return written, false, nil
}

// copyUntilEOF copies src to dst until src ends (a response body framed by
// the connection's close).
func copyUntilEOF(dst *bufio.Writer, src *connReader) (readErr bool, err error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	for {
		m, rerr := src.Read(buf)
		if m > 0 {
			if _, werr := dst.Write(buf[:m]); werr != nil {
				return false, werr
			}
			if src.buffered() == 0 {
				if werr := dst.Flush(); werr != nil {
					return false, werr
				}
			}
		}
		if rerr == io.EOF {
			return false, nil
		}
		if rerr != nil {
			return true, rerr
		}
	}
}

// copyChunked decodes a chunked body from src with the shared strict
// codec (http1.ChunkedDecoder) and writes it to dst, either re-chunked
// (rechunk: one chunk per run of data, trailers passed on) or as plain
// bytes. limit (>0) bounds the decoded size (errLimit beyond it). dst is
// flushed whenever src has nothing buffered, so streams stream.
//
// trailers, if set, gets the trailer section (see
// http1.ChunkedDecoder.Trailers) when the body ended, instead of it
// being re-encoded.
func copyChunked(dst *bufio.Writer, src *connReader, rechunk bool, limit int64, trailers func([]byte)) (total int64, readErr bool, err error) {
	var d http1.ChunkedDecoder
	d.Limits.MaxBody = limit
	for {
		for src.buffered() > 0 && !d.Done() {
			n, data, err := d.Decode(src.buf[src.r:src.w])
			src.r += n
			if err != nil {
				if errors.Is(err, http1.ErrBodyTooLarge) {
					err = errLimit
				}
				return d.Total(), true, err
			}
			if len(data) == 0 {
				continue
			}
			if rechunk {
				_, _ = dst.Write(http1.AppendChunkHeader(dst.AvailableBuffer(), int64(len(data))))
			}
			if _, err := dst.Write(data); err != nil {
				return d.Total(), false, err
			}
			if rechunk {
				_, _ = dst.WriteString(http1.CRLF)
			}
		}
		if d.Done() {
			if trailers != nil && d.Trailers() != nil {
				trailers(d.Trailers())
			}
			if rechunk {
				_, err = dst.Write(http1.AppendLastChunk(dst.AvailableBuffer(), d.Trailers()))
			}
			return d.Total(), false, err
		}
		if err := dst.Flush(); err != nil {
			return d.Total(), false, err
		}
		if left := d.DataLeft(); left >= int64(len(src.buf)) {
			// Inside a chunk larger than the line buffer: read its data
			// in large reads straight from the connection (all of it is
			// data, none belongs to what follows the body).
			bp := copyBufPool.Get().(*[]byte)
			buf := (*bp)[:min(int64(len(*bp)), left)]
			m, rerr := src.Read(buf)
			if m > 0 {
				_, data, _ := d.Decode(buf[:m]) // only data: cannot fail
				if rechunk {
					_, _ = dst.Write(http1.AppendChunkHeader(dst.AvailableBuffer(), int64(len(data))))
				}
				_, werr := dst.Write(data)
				if rechunk && werr == nil {
					_, werr = dst.WriteString(http1.CRLF)
				}
				if werr != nil {
					copyBufPool.Put(bp)
					return d.Total(), false, werr
				}
			}
			copyBufPool.Put(bp)
			if rerr != nil && m == 0 {
				if rerr == io.EOF {
					rerr = io.ErrUnexpectedEOF
				}
				return d.Total(), true, rerr
			}
			continue
		}
		src.setBodyDeadline()
		// The decoder keeps what it needs of a split line: the buffer
		// is wholly consumed and is refilled from its start.
		if err := src.fill(len(src.buf)); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return d.Total(), true, err
		}
	}
}

func writeInt(w *bufio.Writer, n int64) {
	_, _ = w.Write(strconv.AppendInt(w.AvailableBuffer(), n, 10))
}
