package connproxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// eofConn is a net.Conn with nothing more to read, for feeding buffered
// bytes to a connReader in fuzz tests.
type eofConn struct{}

func (eofConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (eofConn) Write(p []byte) (int, error)      { return len(p), nil }
func (eofConn) Close() error                     { return nil }
func (eofConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (eofConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (eofConn) SetDeadline(time.Time) error      { return nil }
func (eofConn) SetReadDeadline(time.Time) error  { return nil }
func (eofConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzChunkedBody checks copyChunked, the forwarder's adapter of
// http1.ChunkedDecoder to its connection reader (the codec itself is
// fuzzed in internal/http1): what it re-encodes (rechunk on, as the proxy
// passes a chunked body on) decodes with net/http's reader to exactly the
// bytes it decoded (rechunk off); and whatever it accepts, net/http
// accepts too, with the same body.
func FuzzChunkedBody(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("3;x=y\r\nabc\r\n0\r\nTrailer: v\r\n\r\n"))
	f.Add([]byte("zz\r\n"))
	f.Add([]byte("A\r\n0123456789\r\n1\r\n\x00\r\n00\r\n\r\nGET / HTTP/1.1\r\n"))
	f.Add([]byte("5 ;a=\"b c\"\r\nhello\r\n0\r\nX-A: 1\r\nX-B:\t2\r\n\r\n"))
	decode := func(t *testing.T, data []byte, rechunk bool) ([]byte, int64, error) {
		src := &connReader{c: eofConn{}, buf: append(append([]byte(nil), data...), make([]byte, 16)...), w: len(data), max: 1 << 16}
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		total, _, err := copyChunked(w, src, rechunk, 1<<20, nil)
		if err != nil {
			return nil, 0, err
		}
		require.NoError(t, w.Flush())
		return out.Bytes(), total, nil
	}
	netHTTP := func(chunked []byte) ([]byte, error) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + string(chunked))))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(req.Body)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		body, total, err := decode(t, data, false)
		if err != nil {
			return
		}
		require.Equal(t, int64(len(body)), total, "copyChunked's count of %q", data)
		out, total2, err := decode(t, data, true)
		require.NoError(t, err, "copyChunked refused %q when re-encoding it", data)
		require.Equal(t, total, total2)
		got, err := netHTTP(out)
		require.NoError(t, err, "re-encoded %q from %q", out, data)
		require.Equal(t, string(body), string(got), "re-encoded %q from %q decodes to other bytes", out, data)

		want, err := netHTTP(data)
		require.NoError(t, err, "copyChunked accepted %q, net/http refuses it", data)
		require.Equal(t, string(want), string(body), "decoded body of %q: copyChunked vs net/http", data)
	})
}

// copyChunked reads the data of a chunk larger than its line buffer
// straight from the connection, and what follows the body (a pipelined
// request) stays in the buffer; both with and without re-chunking, over
// a real socket pair fed in odd-sized writes.
func TestCopyChunkedLargeChunks(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 10000) // 160,000 bytes
	body := "3\r\nabc\r\n" + strconv.FormatInt(int64(len(big)), 16) + ";x=1\r\n" + big + "\r\n5\r\nhello\r\n0\r\nX-Sum: 3\r\n\r\n"
	for _, rechunk := range []bool{false, true} {
		a, b := net.Pipe()
		go func() {
			msg := body + "NEXT"
			for len(msg) > 0 {
				n := min(len(msg), 7777)
				if _, err := a.Write([]byte(msg[:n])); err != nil {
					return
				}
				msg = msg[n:]
			}
		}()
		src := newConnReader(b, 4096)
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		total, _, err := copyChunked(w, src, rechunk, 0, nil)
		require.NoError(t, err)
		require.NoError(t, w.Flush())
		require.EqualValues(t, 3+len(big)+5, total)
		want := "abc" + big + "hello"
		if rechunk {
			req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + out.String())))
			require.NoError(t, err)
			got, err := io.ReadAll(req.Body)
			require.NoError(t, err)
			require.Equal(t, want, string(got))
			require.Equal(t, "3", req.Trailer.Get("X-Sum"))
		} else {
			require.Equal(t, want, out.String())
		}
		for src.buffered() < 4 {
			require.NoError(t, src.fill(len(src.buf)))
		}
		require.Equal(t, "NEXT", string(src.buf[src.r:src.w]), "what follows the body is left for the next message")
		_ = a.Close()
		_ = b.Close()
	}
}
