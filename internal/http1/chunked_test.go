package http1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// decodeAll feeds data to a fresh decoder in pieces of step bytes (0:
// all at once) and returns the decoded body, the trailers and how many
// bytes of data the body took.
func decodeAll(data []byte, step int, lim ChunkedLimits) (body, trailers []byte, used int, err error) {
	d := ChunkedDecoder{Limits: lim}
	for used < len(data) && !d.Done() {
		end := len(data)
		if step > 0 {
			end = min(used+step, len(data))
		}
		piece := data[used:end]
		for len(piece) > 0 && !d.Done() {
			n, run, err := d.Decode(piece)
			if err != nil {
				return body, nil, used, err
			}
			require_(n > 0 || d.Done(), "Decode made no progress on %q", piece)
			if n > 0 && len(run) > 0 && !bytes.Equal(run, piece[n-len(run):n]) {
				panic("data is not the end of what was consumed")
			}
			body = append(body, run...)
			piece = piece[n:]
			used += n
		}
		if d.Done() {
			break
		}
	}
	if !d.Done() {
		return body, nil, used, io.ErrUnexpectedEOF
	}
	if d.Total() != int64(len(body)) {
		panic("Total disagrees with the data handed out")
	}
	return body, append([]byte(nil), d.Trailers()...), used, nil
}

func require_(ok bool, format string, args ...any) {
	if !ok {
		panic(errors.New(Printable(fmt.Sprintf(format, args...))))
	}
}

func TestChunkedDecoderAccepts(t *testing.T) {
	for _, tc := range []struct {
		in, body, trailers string
	}{
		{"5\r\nhello\r\n0\r\n\r\n", "hello", ""},
		{"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT", "hello world", ""},
		{"A\r\n0123456789\r\n0\r\n\r\n", "0123456789", ""},
		{"000a\r\n0123456789\r\n000\r\n\r\n", "0123456789", ""},
		{"3;x=y\r\nabc\r\n0\r\nX-Sum: 1\r\nX-B:\t2\r\n\r\n", "abc", "X-Sum: 1\r\nX-B:\t2\r\n"},
		{"3; a = \"q \\\" s\" ;b;c=d\r\nabc\r\n0;last\r\n\r\n", "abc", ""},
		{"7fffffffffffffff\r\nab", "ab", ""}, // a huge chunk, cut short: see below
	} {
		for _, step := range []int{0, 1, 2, 3, 7} {
			body, trailers, used, err := decodeAll([]byte(tc.in), step, ChunkedLimits{})
			if strings.HasPrefix(tc.in, "7fff") {
				require.ErrorIs(t, err, io.ErrUnexpectedEOF)
				require.Equal(t, tc.body, string(body))
				continue
			}
			require.NoError(t, err, "%q step %d", tc.in, step)
			require.Equal(t, tc.body, string(body), "%q step %d", tc.in, step)
			require.Equal(t, tc.trailers, string(trailers), "%q step %d", tc.in, step)
			require.Equal(t, len(tc.in)-len(strings.TrimPrefix(tc.in[strings.Index(tc.in, "\r\n\r\n"):], "\r\n\r\n")), used,
				"%q step %d: what follows the body is not consumed", tc.in, step)
		}
	}
}

func TestChunkedDecoderRefuses(t *testing.T) {
	long := strings.Repeat("a", 2000)
	for _, in := range []string{
		"+5\r\nhello\r\n0\r\n\r\n",                // sign
		"-5\r\nhello\r\n0\r\n\r\n",                // sign
		"0x5\r\nhello\r\n0\r\n\r\n",               // 0x
		" 5\r\nhello\r\n0\r\n\r\n",                // leading space
		"5 \r\nhello\r\n0\r\n\r\n",                // trailing space
		"5 ;a\r\nhello\r\n0\r\n\r\n",              // space before the extension
		"5\t\r\nhello\r\n0\r\n\r\n",               // tab
		"\r\nhello\r\n0\r\n\r\n",                  // empty size
		"5_0\r\nhello\r\n0\r\n\r\n",               // underscore (ParseInt's base prefix rules)
		"00000000000000005\r\nhello\r\n0\r\n\r\n", // 17 digits
		"8000000000000000\r\n",                    // overflows int64
		"ffffffffffffffff\r\n",                    // overflows int64
		"5\r\nhelloXY0\r\n\r\n",                   // no CRLF after the data
		"5\r\nhello\n0\r\n\r\n",                   // LF only after the data
		"5\r\nhello\rX0\r\n\r\n",                  // CR then garbage
		"5\nhello\r\n0\r\n\r\n",                   // bare LF ending the size line
		"5\r\r\nhello\r\n0\r\n\r\n",               // bare CR in the size line
		"5;\r\nhello\r\n0\r\n\r\n",                // empty extension
		"5;a=\r\nhello\r\n0\r\n\r\n",              // empty extension value
		"5;a=\"x\r\nhello\r\n0\r\n\r\n",           // unterminated quoted string
		"5;a=b c\r\nhello\r\n0\r\n\r\n",           // two values
		"5;a\x01\r\nhello\r\n0\r\n\r\n",           // control character
		"5;" + long + "\r\nhello\r\n0\r\n\r\n",    // extension over MaxLine
		"0\r\n X: folded\r\n\r\n",                 // obs-fold in the trailer
		"0\r\nNo-Colon\r\n\r\n",                   // not a field
		"0\r\nBad Name: v\r\n\r\n",                // not a token
		"0\r\nX: a\x00b\r\n\r\n",                  // control character in a value
		"0\r\nContent-Length: 5\r\n\r\n",          // framing in the trailer
		"0\r\nTransfer-Encoding: chunked\r\n\r\n",
		"0\r\nHost: other.example\r\n\r\n",
		"0\r\nX: " + strings.Repeat("v", 4090) + "\r\n\r\n", // a section of 4097 bytes: over MaxTrailerBytes
		"0\r\n" + strings.Repeat("X: v\r\n", 65) + "\r\n",   // over MaxTrailerFields
		"0\r\nX: v\n\r\n",                                   // bare LF in the trailer
		strings.Repeat("1;"+strings.Repeat("e", 900)+"\r\nx\r\n", 30) + "0\r\n\r\n", // framing outgrows the data
	} {
		for _, step := range []int{0, 1, 5} {
			_, _, _, err := decodeAll([]byte(in), step, ChunkedLimits{})
			require.ErrorIs(t, err, ErrMalformed, "%q step %d", Printable(in), step)
		}
	}
}

func TestChunkedDecoderErrorIsFinal(t *testing.T) {
	var d ChunkedDecoder
	_, _, err := d.Decode([]byte("zz\r\n"))
	require.ErrorIs(t, err, ErrMalformed)
	n, data, err2 := d.Decode([]byte("5\r\nhello\r\n0\r\n\r\n"))
	require.Equal(t, err, err2)
	require.Zero(t, n)
	require.Nil(t, data)
	d.Reset()
	body, _, _, err := decodeAll([]byte("5\r\nhello\r\n0\r\n\r\n"), 0, ChunkedLimits{})
	require.NoError(t, err)
	require.Equal(t, "hello", string(body))
}

func TestChunkedDecoderLimits(t *testing.T) {
	in := []byte("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
	_, _, _, err := decodeAll(in, 0, ChunkedLimits{MaxBody: 11})
	require.NoError(t, err)
	body, _, _, err := decodeAll(in, 0, ChunkedLimits{MaxBody: 10})
	require.ErrorIs(t, err, ErrBodyTooLarge)
	require.NotErrorIs(t, err, ErrMalformed)
	require.Equal(t, "hello", string(body), "the chunk over the limit is refused before its data")

	_, _, _, err = decodeAll([]byte("5;abcdefg\r\nhello\r\n0\r\n\r\n"), 1, ChunkedLimits{MaxLine: 8})
	require.ErrorIs(t, err, ErrMalformed)
	_, _, _, err = decodeAll([]byte("5;abcdef\r\nhello\r\n0\r\n\r\n"), 1, ChunkedLimits{MaxLine: 8})
	require.NoError(t, err)

	tr := "0\r\nA: 1\r\nB: 2\r\n\r\n" // a section of 14 bytes
	_, got, _, err := decodeAll([]byte(tr), 1, ChunkedLimits{MaxTrailerBytes: 14})
	require.NoError(t, err)
	require.Equal(t, "A: 1\r\nB: 2\r\n", string(got))
	_, _, _, err = decodeAll([]byte(tr), 1, ChunkedLimits{MaxTrailerBytes: 13})
	require.ErrorIs(t, err, ErrMalformed)
	_, _, _, err = decodeAll([]byte(tr), 0, ChunkedLimits{MaxTrailerFields: 1})
	require.ErrorIs(t, err, ErrMalformed)
}

func TestChunkedDecoderDataLeft(t *testing.T) {
	var d ChunkedDecoder
	require.Zero(t, d.DataLeft())
	n, data, err := d.Decode([]byte("a\r\n0123"))
	require.NoError(t, err)
	require.Equal(t, 7, n)
	require.Equal(t, "0123", string(data))
	require.EqualValues(t, 6, d.DataLeft(), "six bytes of data, no framing, still to come")
	_, data, err = d.Decode([]byte("456789\r\n"))
	require.NoError(t, err)
	require.Equal(t, "456789", string(data))
	require.Zero(t, d.DataLeft(), "the CRLF after the data is framing")
}

// The default trailer bound is net/http's: a section of 4096 bytes (the
// empty line included) is read by both, one byte more by neither.
func TestChunkedDecoderTrailerBoundIsNetHTTPs(t *testing.T) {
	for _, n := range []int{4089, 4090} { // "X: " + n + CRLF + CRLF = n+7
		in := "0\r\nX: " + strings.Repeat("v", n) + "\r\n\r\n"
		_, _, _, err := decodeAll([]byte(in), 0, ChunkedLimits{})
		req, rerr := http.ReadRequest(bufio.NewReader(strings.NewReader("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + in)))
		require.NoError(t, rerr)
		_, rerr = io.ReadAll(req.Body)
		require.Equal(t, err == nil, rerr == nil, "section of %d bytes: decoder %v, net/http %v", n+7, err, rerr)
		require.Equal(t, n == 4090, err != nil, "section of %d bytes: %v", n+7, err)
	}
}

func TestChunkEncoding(t *testing.T) {
	var out []byte
	out = AppendChunk(out, []byte("hello"))
	out = AppendChunk(out, nil)
	out = AppendChunk(out, bytes.Repeat([]byte("x"), 26))
	out = AppendLastChunk(out, []byte("X-Sum: 1\r\n"))
	require.Equal(t, "5\r\nhello\r\n1a\r\n"+strings.Repeat("x", 26)+"\r\n0\r\nX-Sum: 1\r\n\r\n", string(out))
	body, tr, _, err := decodeAll(out, 3, ChunkedLimits{})
	require.NoError(t, err)
	require.Equal(t, "hello"+strings.Repeat("x", 26), string(body))
	require.Equal(t, "X-Sum: 1\r\n", string(tr))
}

func TestNormalizeHost(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM":            "example.com",
		"example.com.":           "example.com",
		"example.com:8080":       "example.com",
		"example.com.:80":        "example.com",
		"example.com:":           "example.com",
		"10.0.0.1:443":           "10.0.0.1",
		"[::1]:8080":             "[::1]",
		"[FE80::1]":              "[fe80::1]",
		"a_b-c.example":          "a_b-c.example",
		"":                       "!",
		".":                      "!",
		"example.com:99999":      "!",
		"example.com:123456":     "!",
		"example.com:8a":         "!",
		"exa mple.com":           "!",
		"example.com/x":          "!",
		"user@example.com":       "!",
		"[::1":                   "!",
		"[]":                     "!",
		"[::1]x":                 "!",
		"[zz::1]":                "!",
		"a\x00b":                 "!",
		strings.Repeat("a", 254): "!",
	} {
		got, ok := NormalizeHost([]byte("keep"), []byte(in))
		if want == "!" {
			require.False(t, ok, "%q", in)
			require.Equal(t, "keep", string(got), "%q: dst is left as it was", in)
			continue
		}
		require.True(t, ok, "%q", in)
		require.Equal(t, "keep"+want, string(got), "%q", in)
	}
}

// netHTTPChunked decodes data with net/http's chunked reader, then reads
// the trailer section with net/textproto as net/http's body reader does,
// and returns the body.
func netHTTPChunked(data []byte) (body []byte, trailer textproto.MIMEHeader, err error) {
	br := bufio.NewReader(bytes.NewReader(data))
	body, err = io.ReadAll(httputil.NewChunkedReader(br))
	if err != nil {
		return nil, nil, err
	}
	trailer, err = textproto.NewReader(br).ReadMIMEHeader()
	return body, trailer, err
}

// checkChunked holds the decoder to its properties on one input: fed in
// any pieces, it decodes the same; what it re-encodes decodes to the same
// body and trailers; and whatever it accepts, net/http accepts with the
// same body (and net/textproto the same trailer fields).
func checkChunked(t *testing.T, data []byte) {
	body, trailers, used, err := decodeAll(data, 0, ChunkedLimits{})
	for _, step := range []int{1, 2, 13} {
		b2, tr2, used2, err2 := decodeAll(data, step, ChunkedLimits{})
		if (err == nil) != (err2 == nil) {
			t.Fatalf("%q: whole %v, in pieces of %d %v", data, err, step, err2)
		}
		if err == nil {
			require.Equal(t, string(body), string(b2), "%q in pieces of %d", data, step)
			require.Equal(t, string(trailers), string(tr2))
			require.Equal(t, used, used2)
		}
	}
	if err != nil {
		return
	}
	// Re-encode as a forwarder does (one chunk per data run), then decode.
	var out []byte
	d := ChunkedDecoder{}
	src := data[:used]
	for len(src) > 0 {
		n, run, err := d.Decode(src[:min(len(src), 7)])
		require.NoError(t, err)
		out = AppendChunk(out, run)
		src = src[n:]
	}
	require.True(t, d.Done())
	out = AppendLastChunk(out, d.Trailers())
	b3, tr3, used3, err := decodeAll(out, 0, ChunkedLimits{})
	require.NoError(t, err, "re-encoded %q from %q", out, data)
	require.Equal(t, string(body), string(b3))
	require.Equal(t, string(trailers), string(tr3))
	require.Equal(t, len(out), used3)

	want, hdr, err := netHTTPChunked(data[:used])
	require.NoError(t, err, "accepted %q, net/http refuses it", data)
	require.Equal(t, string(want), string(body), "body of %q", data)
	var fields int
	for _, vv := range hdr {
		fields += len(vv)
	}
	require.Equal(t, bytes.Count(trailers, []byte("\r\n")), fields, "trailer fields of %q: %v", data, hdr)
	got, _, err := netHTTPChunked(out)
	require.NoError(t, err)
	require.Equal(t, string(body), string(got))
}

var chunkedSeeds = []string{
	"5\r\nhello\r\n0\r\n\r\n",
	"3;x=y\r\nabc\r\n0\r\nTrailer-X: v\r\n\r\n",
	"zz\r\n",
	"A\r\n0123456789\r\n1\r\n\x00\r\n00\r\n\r\nGET / HTTP/1.1\r\n",
	"5;a=\"b c\"\r\nhello\r\n0\r\nX-A: 1\r\nX-B:\t2\r\n\r\n",
	"+5\r\nhello\r\n0\r\n\r\n",
	"5\r\nhelloXX0\r\n\r\n",
	"1;a;b=c\r\nx\r\n0;z\r\n\r\n",
}

// FuzzChunkedDecoder: see checkChunked. Request and response bodies are
// framed alike; FuzzChunkedMessage covers them inside whole messages.
func FuzzChunkedDecoder(f *testing.F) {
	for _, s := range chunkedSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkChunked(t, data) })
}

// FuzzChunkedMessage parses a whole chunked request or response (head
// with ParseRequestHead or ParseResponseHead, body with ChunkedDecoder)
// and checks what it accepts against net/http's request or response
// reader on the same bytes: same body, same trailer field count.
func FuzzChunkedMessage(f *testing.F) {
	for _, s := range chunkedSeeds {
		f.Add(false, []byte(s))
		f.Add(true, []byte(s))
	}
	f.Fuzz(func(t *testing.T, response bool, body []byte) {
		head := "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
		if response {
			head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		}
		msg := append([]byte(head), body...)
		var h Head
		var err error
		if response {
			err = ParseResponseHead(msg[:len(head)], &h, 100, "")
		} else {
			err = ParseRequestHead(msg[:len(head)], &h, 100, "")
		}
		require.NoError(t, err)
		require.True(t, h.Chunked)
		got, trailers, _, err := decodeAll(msg[len(head):], 3, ChunkedLimits{})
		if err != nil {
			return
		}
		br := bufio.NewReader(bytes.NewReader(msg))
		var rc io.ReadCloser
		var trailer func() http.Header
		if response {
			resp, err := http.ReadResponse(br, nil)
			require.NoError(t, err)
			rc, trailer = resp.Body, func() http.Header { return resp.Trailer }
		} else {
			req, err := http.ReadRequest(br)
			require.NoError(t, err)
			rc, trailer = req.Body, func() http.Header { return req.Trailer }
		}
		want, err := io.ReadAll(rc)
		require.NoError(t, err, "accepted %q, net/http refuses it", msg)
		require.Equal(t, string(want), string(got))
		var fields int
		for _, vv := range trailer() {
			fields += len(vv)
		}
		require.Equal(t, bytes.Count(trailers, []byte("\r\n")), fields, "%q", msg)
	})
}

// chunkedBenchBody is a 1 MiB body in 16 KiB chunks with extensions on
// some, as an app's streamed response looks.
func chunkedBenchBody() []byte {
	var b []byte
	data := bytes.Repeat([]byte("0123456789abcdef"), 1024)
	for i := 0; i < 64; i++ {
		if i%4 == 0 {
			b = append(b, "4000;n=1\r\n"...)
			b = append(b, data...)
			b = append(b, "\r\n"...)
			continue
		}
		b = AppendChunk(b, data)
	}
	return AppendLastChunk(b, []byte("X-Sum: 1\r\n"))
}

// BenchmarkChunkedDecoder decodes the body fed in 16 KiB reads (the
// forwarders' buffer size) and copies each run of data out, as a
// forwarder writes it on; BenchmarkNetHTTPChunkedReader is its peer,
// net/http's chunked reader (and trailer reader) on the same bytes,
// reading into a 16 KiB buffer, for a ratio in one run.
func BenchmarkChunkedDecoder(b *testing.B) {
	body := chunkedBenchBody()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	var d ChunkedDecoder
	out := make([]byte, 16<<10)
	for b.Loop() {
		d.Reset()
		for off := 0; off < len(body) && !d.Done(); {
			end := min(off+16<<10, len(body))
			piece := body[off:end]
			for len(piece) > 0 && !d.Done() {
				n, data, err := d.Decode(piece)
				if err != nil {
					b.Fatal(err)
				}
				copy(out, data)
				piece = piece[n:]
				off += n
			}
		}
	}
}

func BenchmarkNetHTTPChunkedReader(b *testing.B) {
	body := chunkedBenchBody()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	buf := make([]byte, 16<<10)
	r := bytes.NewReader(body)
	br := bufio.NewReaderSize(r, 16<<10)
	for b.Loop() {
		r.Reset(body)
		br.Reset(r)
		cr := httputil.NewChunkedReader(br)
		for {
			_, err := cr.Read(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if _, err := textproto.NewReader(br).ReadMIMEHeader(); err != nil {
			b.Fatal(err)
		}
	}
}
