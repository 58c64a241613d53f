package balancer

import (
	"bytes"
	"errors"
	"fmt"
)

// This file is the strict HTTP/1.1 message-head parser of the forwarder
// (RFC 9112). It parses a complete head (request or status line, fields,
// and the empty line) held in one buffer, without copying: every slice it
// returns points into that buffer and is valid until the buffer is reused.
//
// It refuses, rather than guesses at: obs-fold (a field line starting with
// SP or HTAB), a bare CR or a bare LF as a line end, whitespace between a
// field name and its colon, control characters in values, both
// Content-Length and Transfer-Encoding, differing Content-Length values, a
// Content-Length that is a list or not a plain decimal, any
// Transfer-Encoding other than exactly "chunked", a missing or repeated Host
// in a request, request targets other than origin-form (and "*" for
// OPTIONS), and versions other than HTTP/1.0 and HTTP/1.1.

// ErrMalformed is wrapped by every error the parser returns for a message
// that does not follow RFC 9112 (answered with 400 for requests, 502 for
// responses).
var ErrMalformed = errors.New("malformed HTTP/1.1 message")

// errTooManyFields is returned when a head has more fields than allowed
// (answered with 431).
var errTooManyFields = errors.New("too many header fields")

// field is one header field line; name and value point into the head.
type field struct {
	name, value []byte
	// drop marks a field the forwarder must not pass on (hop-by-hop or
	// replaced by the proxy).
	drop bool
}

// head is a parsed request or response head. It is reused across messages
// on one connection; reset clears it without freeing its field slice.
type head struct {
	// Request line.
	method, target []byte
	// Status line.
	status int
	reason []byte

	minor  int // HTTP/1.minor
	fields []field

	host          []byte // the Host field value (requests)
	contentLength int64  // -1 when absent
	chunked       bool
	connClose     bool
	connKeepAlive bool
	connUpgrade   bool
	upgrade       []byte // Upgrade field value, nil when absent
	expect100     bool
	missMark      bool   // the miss header was present with value "1"
	xff           []byte // the first X-Forwarded-For value (requests)
}

func (h *head) reset() {
	fs := h.fields[:0]
	*h = head{fields: fs, contentLength: -1}
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// tokenChar reports whether c is a tchar (RFC 9110 5.6.2).
var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenTable[c] {
			return false
		}
	}
	return true
}

// asciiEqualFold compares b to the lower-case ASCII string s.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// nextLine returns the line at buf[pos:] (without CRLF) and the position
// after its CRLF. A bare CR or LF is an error.
func nextLine(buf []byte, pos int) (line []byte, next int, err error) {
	i := bytes.IndexByte(buf[pos:], '\n')
	if i < 0 {
		return nil, 0, malformed("unterminated line")
	}
	end := pos + i
	if end == pos || buf[end-1] != '\r' {
		return nil, 0, malformed("line ends in a bare LF")
	}
	line = buf[pos : end-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, 0, malformed("bare CR in line")
	}
	return line, end + 1, nil
}

// parseVersion parses "HTTP/1.0" or "HTTP/1.1".
func parseVersion(b []byte) (minor int, ok bool) {
	if len(b) != 8 || string(b[:7]) != "HTTP/1." {
		return 0, false
	}
	switch b[7] {
	case '0':
		return 0, true
	case '1':
		return 1, true
	}
	return 0, false
}

// parseRequestHead parses a request head (request line through the empty
// line) in buf into h. maxFields bounds the field count.
func parseRequestHead(buf []byte, h *head, maxFields int, missHeader string) error {
	h.reset()
	line, pos, err := nextLine(buf, 0)
	if err != nil {
		return err
	}
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return malformed("request line %q", line)
	}
	h.method = line[:sp1]
	if !isToken(h.method) {
		return malformed("method %q", h.method)
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return malformed("request line %q", line)
	}
	h.target = rest[:sp2]
	var ok bool
	if h.minor, ok = parseVersion(rest[sp2+1:]); !ok {
		return malformed("version %q", rest[sp2+1:])
	}
	for _, c := range h.target {
		if c <= ' ' || c >= 0x7f {
			return malformed("request target %q", h.target)
		}
	}
	switch {
	case h.target[0] == '/':
	case len(h.target) == 1 && h.target[0] == '*' && string(h.method) == "OPTIONS":
	default:
		return malformed("request target %q is not origin-form", h.target)
	}
	if string(h.method) == "CONNECT" {
		return malformed("CONNECT is not supported")
	}
	hosts := 0
	if err := parseFields(buf, pos, h, maxFields, missHeader, true, &hosts); err != nil {
		return err
	}
	if hosts > 1 {
		return malformed("%d Host fields", hosts)
	}
	if hosts == 0 && h.minor == 1 {
		return malformed("missing Host")
	}
	if h.chunked && h.minor == 0 {
		return malformed("Transfer-Encoding in an HTTP/1.0 request")
	}
	return nil
}

// parseResponseHead parses a response head in buf into h.
func parseResponseHead(buf []byte, h *head, maxFields int, missHeader string) error {
	h.reset()
	line, pos, err := nextLine(buf, 0)
	if err != nil {
		return err
	}
	if len(line) < 12 || line[8] != ' ' {
		return malformed("status line %q", line)
	}
	var ok bool
	if h.minor, ok = parseVersion(line[:8]); !ok {
		return malformed("status line %q", line)
	}
	st := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return malformed("status line %q", line)
		}
		st = st*10 + int(c-'0')
	}
	if st < 100 {
		return malformed("status %d", st)
	}
	h.status = st
	if len(line) > 12 {
		if line[12] != ' ' {
			return malformed("status line %q", line)
		}
		h.reason = line[13:]
		for _, c := range h.reason {
			if c < ' ' && c != '\t' || c == 0x7f {
				return malformed("control character in reason phrase")
			}
		}
	}
	var hosts int
	return parseFields(buf, pos, h, maxFields, missHeader, false, &hosts)
}

func parseFields(buf []byte, pos int, h *head, maxFields int, missHeader string, request bool, hosts *int) error {
	sawTE := false
	for {
		line, next, err := nextLine(buf, pos)
		if err != nil {
			return err
		}
		pos = next
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return malformed("obs-fold field line")
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return malformed("field line without a name")
		}
		name := line[:colon]
		if !isToken(name) {
			return malformed("field name %q", name)
		}
		value := line[colon+1:]
		for len(value) > 0 && (value[0] == ' ' || value[0] == '\t') {
			value = value[1:]
		}
		for len(value) > 0 && (value[len(value)-1] == ' ' || value[len(value)-1] == '\t') {
			value = value[:len(value)-1]
		}
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return malformed("control character in field %q", name)
			}
		}
		if len(h.fields) >= maxFields {
			return errTooManyFields
		}
		f := field{name: name, value: value}
		if err := h.interpret(&f, request, hosts, &sawTE, missHeader); err != nil {
			return err
		}
		h.fields = append(h.fields, f)
	}
	if pos != len(buf) {
		return malformed("data after the head")
	}
	if sawTE && h.contentLength >= 0 {
		return malformed("both Content-Length and Transfer-Encoding")
	}
	if h.connUpgrade && h.upgrade == nil {
		h.connUpgrade = false
	}
	// Drop the fields named by Connection (hop-by-hop by declaration).
	for i := range h.fields {
		if h.fields[i].drop {
			continue
		}
		if connectionNames(h.fields, h.fields[i].name) {
			h.fields[i].drop = true
		}
	}
	return nil
}

// interpret records what the forwarder needs from one field and marks
// hop-by-hop fields to drop.
func (h *head) interpret(f *field, request bool, hosts *int, sawTE *bool, missHeader string) error {
	n := f.name
	switch len(n) {
	case 4:
		if request && asciiEqualFold(n, "host") {
			*hosts++
			if len(f.value) == 0 {
				return malformed("empty Host")
			}
			h.host = f.value
		}
	case 2:
		if asciiEqualFold(n, "te") {
			f.drop = true
		}
	case 6:
		if request && asciiEqualFold(n, "expect") {
			if !asciiEqualFold(f.value, "100-continue") {
				return malformed("Expect %q", f.value)
			}
			h.expect100 = true
			f.drop = true
		}
	case 7:
		if asciiEqualFold(n, "upgrade") {
			if h.upgrade != nil {
				return malformed("repeated Upgrade")
			}
			h.upgrade = f.value
			f.drop = true
		} else if asciiEqualFold(n, "trailer") {
			f.drop = true
		}
	case 10:
		if asciiEqualFold(n, "connection") {
			f.drop = true
			if err := h.connectionTokens(f.value); err != nil {
				return err
			}
		} else if asciiEqualFold(n, "keep-alive") {
			f.drop = true
		}
	case 14:
		if asciiEqualFold(n, "content-length") {
			v, ok := parseContentLength(f.value)
			if !ok {
				return malformed("Content-Length %q", f.value)
			}
			if h.contentLength >= 0 && h.contentLength != v {
				return malformed("differing Content-Length values")
			}
			h.contentLength = v
			f.drop = true
		}
	case 15:
		if request && h.xff == nil && asciiEqualFold(n, "x-forwarded-for") {
			h.xff = f.value
			f.drop = true
		}
	case 16:
		if asciiEqualFold(n, "proxy-connection") {
			f.drop = true
		} else if request && asciiEqualFold(n, "x-forwarded-host") {
			f.drop = true
		}
	case 17:
		if asciiEqualFold(n, "transfer-encoding") {
			if *sawTE {
				return malformed("repeated Transfer-Encoding")
			}
			*sawTE = true
			if !asciiEqualFold(f.value, "chunked") {
				return malformed("Transfer-Encoding %q", f.value)
			}
			h.chunked = true
			f.drop = true
		} else if request && asciiEqualFold(n, "x-forwarded-proto") {
			f.drop = true
		}
	case 19:
		if asciiEqualFold(n, "proxy-authorization") {
			f.drop = true
		}
	}
	// missHeader is lower case (Config.setDefaults).
	if missHeader != "" && len(n) == len(missHeader) && !request && asciiEqualFold(n, missHeader) {
		if string(f.value) == "1" {
			h.missMark = true
		}
	}
	return nil
}

func (h *head) connectionTokens(v []byte) error {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		tok = bytes.Trim(tok, " \t")
		if len(tok) == 0 {
			continue
		}
		if !isToken(tok) {
			return malformed("Connection token %q", tok)
		}
		switch {
		case asciiEqualFold(tok, "close"):
			h.connClose = true
		case asciiEqualFold(tok, "keep-alive"):
			h.connKeepAlive = true
		case asciiEqualFold(tok, "upgrade"):
			h.connUpgrade = true
		}
	}
	return nil
}

// connectionNames reports whether name is listed in a Connection field.
func connectionNames(fields []field, name []byte) bool {
	for i := range fields {
		f := &fields[i]
		if len(f.name) != 10 || !asciiEqualFold(f.name, "connection") {
			continue
		}
		v := f.value
		for len(v) > 0 {
			var tok []byte
			if j := bytes.IndexByte(v, ','); j >= 0 {
				tok, v = v[:j], v[j+1:]
			} else {
				tok, v = v, nil
			}
			tok = bytes.Trim(tok, " \t")
			if len(tok) == len(name) && bytes.EqualFold(tok, name) {
				return true
			}
		}
	}
	return false
}

// parseContentLength accepts a plain non-negative decimal of at most 18
// digits.
func parseContentLength(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseChunkSize parses a chunk-size line (hex size, optional extensions).
func parseChunkSize(line []byte) (int64, error) {
	end := len(line)
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		end = i
		for _, c := range line[i:] {
			if c < ' ' && c != '\t' || c == 0x7f {
				return 0, malformed("control character in chunk extension")
			}
		}
	}
	sz := line[:end]
	for len(sz) > 0 && (sz[len(sz)-1] == ' ' || sz[len(sz)-1] == '\t') {
		sz = sz[:len(sz)-1]
	}
	if len(sz) == 0 || len(sz) > 15 {
		return 0, malformed("chunk size %q", line)
	}
	var n int64
	for _, c := range sz {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, malformed("chunk size %q", line)
		}
		n = n<<4 | int64(d)
	}
	return n, nil
}
