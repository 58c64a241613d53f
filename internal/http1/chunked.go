package http1

import (
	"bytes"
	"errors"
	"strconv"
)

// ErrBodyTooLarge is returned by ChunkedDecoder.Decode when a chunk would
// take the decoded body over ChunkedLimits.MaxBody (answered with 413 for
// requests). It does not wrap ErrMalformed: the framing is fine.
var ErrBodyTooLarge = errors.New("body exceeds the size limit")

// ChunkedLimits bounds what a ChunkedDecoder accepts. Zero values are the
// documented defaults.
type ChunkedLimits struct {
	// MaxLine bounds a chunk-size line, extensions included, CRLF not
	// (0: 1024 bytes; net/http refuses 4096 and more).
	MaxLine int
	// MaxTrailerBytes bounds the trailer section: its field lines with
	// their CRLFs and the empty line that ends it (0: 4 KiB, what
	// net/http's readers take with their default 4 KiB buffer).
	MaxTrailerBytes int
	// MaxTrailerFields bounds the number of trailer fields (0: 64).
	MaxTrailerFields int
	// MaxBody bounds the decoded body (0: no bound). A chunk that would
	// go over it is refused with ErrBodyTooLarge before any of its data
	// is handed out.
	MaxBody int64
}

const (
	defaultMaxChunkLine    = 1024
	defaultMaxTrailerBytes = 4 << 10
	defaultMaxTrailers     = 64
	// maxChunkSizeDigits bounds the hex digits of a chunk size: 16 hold
	// any int64 (an overflow is refused on its own), and net/http
	// refuses a seventeenth.
	maxChunkSizeDigits = 16
	// maxFramingExcess bounds how far framing (size lines, extensions,
	// CRLFs) may outgrow the data it carries, as net/http's chunked
	// reader does: 16 bytes per chunk and twice its data are free, and
	// beyond that 16 KiB of excess are refused. A peer cannot make the
	// proxy parse megabytes of extensions for a few bytes of body.
	maxFramingExcess = 16 << 10
)

// Decoder states.
const (
	csSizeLine = iota // reading a chunk-size line
	csData            // inside chunk data
	csDataCR          // expecting the CR after chunk data
	csDataLF          // expecting the LF after chunk data
	csTrailer         // reading trailer field lines
	csDone            // the body ended with the empty line
	csFailed          // a previous call failed; the body is unusable
)

// ChunkedDecoder decodes a chunked message body (RFC 9112 7.1)
// incrementally: it is fed the bytes as they arrive, in slices of any
// size, and hands out the chunk data as sub-slices of what it was fed,
// without copying. It keeps only the part of a line that a slice ended
// in the middle of (bounded by MaxLine) and the trailer section (bounded
// by MaxTrailerBytes), so a caller may reuse its buffer after every call.
// It has no sockets and no goroutines: the event loops and the goroutine
// forwarders drive the same decoder.
//
// It refuses, with an error wrapping ErrMalformed: a chunk size that is
// not plain hex digits (no sign, no "0x", no whitespace), has more than 16
// digits or does not fit an int64; a chunk-size line or extension longer
// than MaxLine or not following the chunk-ext grammar; chunk data not
// followed by exactly CRLF; a bare CR or LF; a trailer section over its
// bounds, with obs-fold, a field that is not "token: value" with a
// printable value, or a framing or routing field (Content-Length,
// Transfer-Encoding, Trailer, Host); and framing that outgrows its data
// as net/http's reader would. Anything it accepts, net/http's chunked
// reader accepts with the same body (FuzzChunkedDecoder checks this).
//
// The zero value is ready to use with the default limits; Reset prepares
// it for another body.
type ChunkedDecoder struct {
	// Limits apply from the next Decode; set them before the first.
	Limits ChunkedLimits

	state    int
	remain   int64 // data bytes left in the current chunk
	total    int64 // data bytes decoded so far
	excess   int64 // framing overhead beyond the free allowance
	partial  []byte
	trailers []byte // the trailer field lines, each with its CRLF
	nfields  int
	err      error
}

// Reset prepares d for a new body, keeping its Limits and its buffers.
func (d *ChunkedDecoder) Reset() {
	lim := d.Limits
	p, t := d.partial[:0], d.trailers[:0]
	*d = ChunkedDecoder{Limits: lim, partial: p, trailers: t}
}

// Done reports whether the whole body, trailer section included, has
// been decoded. Bytes fed after that are not part of the body: Decode
// consumes none of them.
func (d *ChunkedDecoder) Done() bool { return d.state == csDone }

// Total returns the number of data bytes decoded so far.
func (d *ChunkedDecoder) Total() int64 { return d.total }

// DataLeft returns how many bytes of the current chunk's data are still
// to come, 0 outside chunk data. None of them is framing, so a caller
// may read up to that many bytes straight into a buffer of its own (a
// large one, bypassing a small line buffer) and feed them to Decode.
func (d *ChunkedDecoder) DataLeft() int64 {
	if d.state != csData {
		return 0
	}
	return d.remain
}

// Trailers returns the trailer section decoded (once Done): its field
// lines, each with its CRLF, as received, or nil when there was none.
// It is valid until Reset.
func (d *ChunkedDecoder) Trailers() []byte {
	if len(d.trailers) == 0 {
		return nil
	}
	return d.trailers
}

// Decode consumes framing and data from src. It returns n, how many bytes
// of src it consumed, and data, the chunk data among them: data is
// src[n-len(data):n], possibly empty. It stops after one run of data, at
// the end of src, or when the body is Done, so a caller loops while bytes
// are left and the body is not Done, writing each data run on. An error
// is final: every later call returns it.
func (d *ChunkedDecoder) Decode(src []byte) (n int, data []byte, err error) {
	if d.err != nil {
		return 0, nil, d.err
	}
	for n < len(src) {
		switch d.state {
		case csSizeLine, csTrailer:
			line, used, complete, err := d.takeLine(src[n:])
			n += used
			if err != nil {
				return n, nil, d.fail(err)
			}
			if !complete {
				return n, nil, nil
			}
			if d.state == csSizeLine {
				err = d.sizeLine(line)
			} else {
				err = d.trailerLine(line)
			}
			d.partial = d.partial[:0]
			if err != nil {
				return n, nil, d.fail(err)
			}
			if d.state == csDone {
				return n, nil, nil
			}
		case csData:
			k := len(src) - n
			if int64(k) > d.remain {
				k = int(d.remain)
			}
			data = src[n : n+k]
			n += k
			d.remain -= int64(k)
			d.total += int64(k)
			if d.remain == 0 {
				d.state = csDataCR
			}
			return n, data, nil
		case csDataCR:
			if src[n] != '\r' {
				return n, nil, d.fail(Malformed("chunk data not followed by CRLF"))
			}
			n++
			d.state = csDataLF
		case csDataLF:
			if src[n] != '\n' {
				return n, nil, d.fail(Malformed("chunk data not followed by CRLF"))
			}
			n++
			d.state = csSizeLine
		case csDone:
			return n, nil, nil
		}
	}
	return n, nil, nil
}

func (d *ChunkedDecoder) fail(err error) error {
	d.err = err
	d.state = csFailed
	return err
}

func (d *ChunkedDecoder) maxLine() int {
	if d.state == csTrailer {
		// A trailer line is bounded by the section's bound.
		return d.maxTrailerBytes()
	}
	if d.Limits.MaxLine > 0 {
		return min(d.Limits.MaxLine, 4095)
	}
	return defaultMaxChunkLine
}

func (d *ChunkedDecoder) maxTrailerBytes() int {
	if d.Limits.MaxTrailerBytes > 0 {
		return d.Limits.MaxTrailerBytes
	}
	return defaultMaxTrailerBytes
}

// takeLine takes the rest of a CRLF-terminated line from src: the line
// (without CRLF; in src when it began there, else in d.partial), how many
// bytes of src it used, and whether the line is complete.
func (d *ChunkedDecoder) takeLine(src []byte) (line []byte, used int, complete bool, err error) {
	limit := d.maxLine()
	if d.state == csTrailer {
		// What is left of the section for this line, its CRLF and
		// the empty line's; the empty line itself always fits.
		limit = max(0, limit-len(d.trailers)-4)
	}
	i := bytes.IndexByte(src, '\n')
	if i < 0 {
		if len(d.partial)+len(src) > limit+1 { // +1: a CR may end it
			return nil, len(src), false, d.tooLong()
		}
		d.partial = append(d.partial, src...)
		return nil, len(src), false, nil
	}
	if len(d.partial) == 0 {
		line = src[:i]
	} else {
		d.partial = append(d.partial, src[:i]...)
		line = d.partial
	}
	if len(line) == 0 || line[len(line)-1] != '\r' {
		return nil, i + 1, false, Malformed("chunked line ends in a bare LF")
	}
	line = line[:len(line)-1]
	if len(line) > limit {
		return nil, i + 1, false, d.tooLong()
	}
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, i + 1, false, Malformed("bare CR in a chunked line")
	}
	return line, i + 1, true, nil
}

func (d *ChunkedDecoder) tooLong() error {
	if d.state == csTrailer {
		return Malformed("trailer section longer than %d bytes", d.maxTrailerBytes())
	}
	return Malformed("chunk-size line longer than %d bytes", d.maxLine())
}

// sizeLine handles a complete chunk-size line.
func (d *ChunkedDecoder) sizeLine(line []byte) error {
	size, err := ParseChunkSize(line)
	if err != nil {
		return err
	}
	if max := d.Limits.MaxBody; max > 0 && size > max-d.total {
		return ErrBodyTooLarge
	}
	// The framing allowance, as net/http's reader counts it.
	d.excess += int64(len(line)) + 2
	if size < maxFramingExcess {
		d.excess -= 16 + 2*size
	} else {
		d.excess = 0
	}
	d.excess = max(d.excess, 0)
	if d.excess > maxFramingExcess {
		return Malformed("chunked framing outgrows its data")
	}
	if size == 0 {
		d.state = csTrailer
		return nil
	}
	d.remain = size
	d.state = csData
	return nil
}

// trailerLine handles a complete trailer line (the empty one ends the
// body).
func (d *ChunkedDecoder) trailerLine(line []byte) error {
	if len(line) == 0 {
		d.state = csDone
		return nil
	}
	d.nfields++
	maxFields := d.Limits.MaxTrailerFields
	if maxFields <= 0 {
		maxFields = defaultMaxTrailers
	}
	if d.nfields > maxFields {
		return Malformed("more than %d trailer fields", maxFields)
	}
	if err := checkTrailerField(line); err != nil {
		return err
	}
	d.trailers = append(d.trailers, line...)
	d.trailers = append(d.trailers, '\r', '\n')
	return nil
}

// checkTrailerField checks one trailer field line: "token: value" with
// no control character but HTAB in the value, no obs-fold, and no field
// that frames or routes the message (a recipient that merged it into the
// head would be misled).
func checkTrailerField(line []byte) error {
	if line[0] == ' ' || line[0] == '\t' {
		return Malformed("obs-fold in the trailer section")
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !IsToken(line[:colon]) {
		return Malformed("trailer field %q", Printable(string(line)))
	}
	for _, c := range line[colon+1:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return Malformed("control character in trailer field %q", line[:colon])
		}
	}
	name := line[:colon]
	for _, f := range [...]string{"content-length", "transfer-encoding", "trailer", "host"} {
		if asciiEqualFold(name, f) {
			return Malformed("%s in the trailer section", f)
		}
	}
	return nil
}

// ParseChunkSize parses a chunk-size line without its CRLF: 1 to 16 hex
// digits whose value fits an int64, then nothing or chunk extensions
// (";" name ["=" value], with optional whitespace around ";" and "=" but
// not between the size and the first ";"). Everything else wraps
// ErrMalformed.
func ParseChunkSize(line []byte) (int64, error) {
	end := bytes.IndexByte(line, ';')
	if end < 0 {
		end = len(line)
	}
	digits := line[:end]
	if len(digits) == 0 || len(digits) > maxChunkSizeDigits {
		return 0, Malformed("chunk size %q", Printable(string(line)))
	}
	var n uint64
	for _, c := range digits {
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'a' <= c && c <= 'f':
			v = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, Malformed("chunk size %q", Printable(string(line)))
		}
		n = n<<4 | uint64(v)
	}
	if n > 1<<63-1 {
		return 0, Malformed("chunk size %q overflows", Printable(string(digits)))
	}
	if err := checkChunkExt(line[end:]); err != nil {
		return 0, err
	}
	return int64(n), nil
}

// checkChunkExt checks chunk extensions (RFC 9112 7.1.1):
//
//	chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
//
// ext is empty or starts with ";".
func checkChunkExt(ext []byte) error {
	bad := func() error { return Malformed("chunk extension %q", Printable(string(ext))) }
	i := 0
	skipBWS := func() {
		for i < len(ext) && (ext[i] == ' ' || ext[i] == '\t') {
			i++
		}
	}
	token := func() bool {
		start := i
		for i < len(ext) && tokenTable[ext[i]] {
			i++
		}
		return i > start
	}
	for i < len(ext) {
		if ext[i] != ';' {
			return bad()
		}
		i++
		skipBWS()
		if !token() {
			return bad()
		}
		skipBWS()
		if i == len(ext) || ext[i] == ';' {
			continue
		}
		if ext[i] != '=' {
			return bad()
		}
		i++
		skipBWS()
		if i < len(ext) && ext[i] == '"' {
			i++
			closed := false
			for i < len(ext) {
				c := ext[i]
				switch {
				case c == '"':
					closed = true
				case c == '\\':
					i++
					if i == len(ext) || !quotedPairByte(ext[i]) {
						return bad()
					}
				case !qdtextByte(c):
					return bad()
				}
				i++
				if closed {
					break
				}
			}
			if !closed {
				return bad()
			}
		} else if !token() {
			return bad()
		}
		skipBWS()
	}
	return nil
}

func qdtextByte(c byte) bool {
	return c == '\t' || c == ' ' || c == 0x21 || 0x23 <= c && c <= 0x5b || 0x5d <= c && c <= 0x7e || c >= 0x80
}

func quotedPairByte(c byte) bool {
	return c == '\t' || c == ' ' || 0x21 <= c && c <= 0x7e || c >= 0x80
}

// CRLF ends a chunk's data.
const CRLF = "\r\n"

// AppendChunkHeader appends the chunk-size line for n data bytes (n > 0)
// to dst; the caller appends the data and CRLF. A forwarder that writes
// the data from its own buffer uses it to avoid a copy.
func AppendChunkHeader(dst []byte, n int64) []byte {
	dst = strconv.AppendInt(dst, n, 16)
	return append(dst, CRLF...)
}

// AppendChunk appends data as one chunk to dst; empty data appends
// nothing (an empty chunk would end the body).
func AppendChunk(dst, data []byte) []byte {
	if len(data) == 0 {
		return dst
	}
	dst = AppendChunkHeader(dst, int64(len(data)))
	dst = append(dst, data...)
	return append(dst, CRLF...)
}

// AppendLastChunk appends the end of a chunked body to dst: the last
// chunk, the trailer field lines (as ChunkedDecoder.Trailers returns
// them, each with its CRLF; nil for none) and the empty line.
func AppendLastChunk(dst, trailers []byte) []byte {
	dst = append(dst, "0\r\n"...)
	dst = append(dst, trailers...)
	return append(dst, CRLF...)
}

// CheckChunkedPrefix reports the error a ChunkedDecoder would return on
// buf, the first bytes of a chunked body (nil when they are a valid
// beginning or a whole body). A forwarder checks what arrived with a
// response head before it writes the head on: a body already broken
// there is answered with 502 instead of a response cut short.
func CheckChunkedPrefix(buf []byte, lim ChunkedLimits) error {
	d := ChunkedDecoder{Limits: lim}
	for len(buf) > 0 && !d.Done() {
		n, _, err := d.Decode(buf)
		if err != nil {
			return err
		}
		buf = buf[n:]
	}
	return nil
}
