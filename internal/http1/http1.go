package http1

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrMalformed is wrapped by every error the parser returns for a message
// that does not follow RFC 9112 (answered with 400 for requests, 502 for
// responses).
var ErrMalformed = errors.New("malformed HTTP/1.1 message")

// ErrTooManyFields is returned when a head has more fields than allowed
// (answered with 431).
var ErrTooManyFields = errors.New("too many header fields")

// Field is one header field line; Name and Value point into the head.
type Field struct {
	Name, Value []byte
	// Drop marks a field a forwarder must not pass on (hop-by-hop, or
	// replaced by the proxy: Host stays, X-Forwarded-* and framing fields
	// are dropped and rewritten).
	Drop bool
}

// Head is a parsed request or response head. It is reused across messages
// on one connection; parsing clears it without freeing its field slice.
// Every slice points into the buffer that was parsed.
type Head struct {
	// Request line.
	Method, Target []byte
	// Status line.
	Status int
	Reason []byte

	Minor  int // HTTP/1.Minor
	Fields []Field

	Host          []byte // the Host field value (requests); nil when absent
	ContentLength int64  // -1 when absent
	Chunked       bool   // Transfer-Encoding: chunked
	ConnClose     bool   // Connection: close
	ConnKeepAlive bool   // Connection: keep-alive
	ConnUpgrade   bool   // Connection: upgrade with an Upgrade field
	Upgrade       []byte // Upgrade field value, nil when absent
	Expect100     bool   // Expect: 100-continue (requests)
	MissMark      bool   // the miss header was present with value "1" (responses)
	XFF           []byte // the first X-Forwarded-For value (requests)
}

func (h *Head) reset() {
	fs := h.Fields[:0]
	*h = Head{Fields: fs, ContentLength: -1}
}

// Malformed returns an error wrapping ErrMalformed with the formatted
// detail.
func Malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// tokenTable reports whether c is a tchar (RFC 9110 5.6.2).
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

// IsToken reports whether b is a non-empty token (RFC 9110 5.6.2).
func IsToken(b []byte) bool {
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
		return nil, 0, Malformed("unterminated line")
	}
	end := pos + i
	if end == pos || buf[end-1] != '\r' {
		return nil, 0, Malformed("line ends in a bare LF")
	}
	line = buf[pos : end-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, 0, Malformed("bare CR in line")
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

// ParseRequestHead parses a request head (request line through the empty
// line) in buf into h. maxFields bounds the field count.
func ParseRequestHead(buf []byte, h *Head, maxFields int, missHeader string) error {
	h.reset()
	line, pos, err := nextLine(buf, 0)
	if err != nil {
		return err
	}
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return Malformed("request line %q", line)
	}
	h.Method = line[:sp1]
	if !IsToken(h.Method) {
		return Malformed("method %q", h.Method)
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return Malformed("request line %q", line)
	}
	h.Target = rest[:sp2]
	var ok bool
	if h.Minor, ok = parseVersion(rest[sp2+1:]); !ok {
		return Malformed("version %q", rest[sp2+1:])
	}
	for _, c := range h.Target {
		if c <= ' ' || c >= 0x7f {
			return Malformed("request target %q", h.Target)
		}
	}
	switch {
	case h.Target[0] == '/':
	case len(h.Target) == 1 && h.Target[0] == '*' && string(h.Method) == "OPTIONS":
	default:
		return Malformed("request target %q is not origin-form", h.Target)
	}
	if string(h.Method) == "CONNECT" {
		return Malformed("CONNECT is not supported")
	}
	hosts := 0
	if err := parseFields(buf, pos, h, maxFields, missHeader, true, &hosts); err != nil {
		return err
	}
	if hosts > 1 {
		return Malformed("%d Host fields", hosts)
	}
	if hosts == 0 && h.Minor == 1 {
		return Malformed("missing Host")
	}
	if h.Chunked && h.Minor == 0 {
		return Malformed("Transfer-Encoding in an HTTP/1.0 request")
	}
	return nil
}

// ParseResponseHead parses a response head in buf into h.
func ParseResponseHead(buf []byte, h *Head, maxFields int, missHeader string) error {
	h.reset()
	line, pos, err := nextLine(buf, 0)
	if err != nil {
		return err
	}
	if len(line) < 12 || line[8] != ' ' {
		return Malformed("status line %q", line)
	}
	var ok bool
	if h.Minor, ok = parseVersion(line[:8]); !ok {
		return Malformed("status line %q", line)
	}
	st := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return Malformed("status line %q", line)
		}
		st = st*10 + int(c-'0')
	}
	if st < 100 {
		return Malformed("status %d", st)
	}
	h.Status = st
	if len(line) > 12 {
		if line[12] != ' ' {
			return Malformed("status line %q", line)
		}
		h.Reason = line[13:]
		for _, c := range h.Reason {
			if c < ' ' && c != '\t' || c == 0x7f {
				return Malformed("control character in reason phrase")
			}
		}
	}
	var hosts int
	return parseFields(buf, pos, h, maxFields, missHeader, false, &hosts)
}

func parseFields(buf []byte, pos int, h *Head, maxFields int, missHeader string, request bool, hosts *int) error {
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
			return Malformed("obs-fold field line")
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return Malformed("field line without a name")
		}
		name := line[:colon]
		if !IsToken(name) {
			return Malformed("field name %q", name)
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
				return Malformed("control character in field %q", name)
			}
		}
		if len(h.Fields) >= maxFields {
			return ErrTooManyFields
		}
		f := Field{Name: name, Value: value}
		if err := h.interpret(&f, request, hosts, &sawTE, missHeader); err != nil {
			return err
		}
		h.Fields = append(h.Fields, f)
	}
	if pos != len(buf) {
		return Malformed("data after the head")
	}
	if sawTE && h.ContentLength >= 0 {
		return Malformed("both Content-Length and Transfer-Encoding")
	}
	if h.ConnUpgrade && h.Upgrade == nil {
		h.ConnUpgrade = false
	}
	// Drop the fields named by Connection (hop-by-hop by declaration).
	for i := range h.Fields {
		if h.Fields[i].Drop {
			continue
		}
		if connectionNames(h.Fields, h.Fields[i].Name) {
			h.Fields[i].Drop = true
		}
	}
	return nil
}

// interpret records what the forwarder needs from one field and marks
// hop-by-hop fields to drop.
func (h *Head) interpret(f *Field, request bool, hosts *int, sawTE *bool, missHeader string) error {
	n := f.Name
	switch len(n) {
	case 4:
		if request && asciiEqualFold(n, "host") {
			*hosts++
			if len(f.Value) == 0 {
				return Malformed("empty Host")
			}
			h.Host = f.Value
		}
	case 2:
		if asciiEqualFold(n, "te") {
			f.Drop = true
		}
	case 6:
		if request && asciiEqualFold(n, "expect") {
			if !asciiEqualFold(f.Value, "100-continue") {
				return Malformed("Expect %q", f.Value)
			}
			h.Expect100 = true
			f.Drop = true
		}
	case 7:
		if asciiEqualFold(n, "upgrade") {
			if h.Upgrade != nil {
				return Malformed("repeated Upgrade")
			}
			h.Upgrade = f.Value
			f.Drop = true
		} else if asciiEqualFold(n, "trailer") {
			f.Drop = true
		}
	case 10:
		if asciiEqualFold(n, "connection") {
			f.Drop = true
			if err := h.connectionTokens(f.Value); err != nil {
				return err
			}
		} else if asciiEqualFold(n, "keep-alive") {
			f.Drop = true
		}
	case 14:
		if asciiEqualFold(n, "content-length") {
			v, ok := parseContentLength(f.Value)
			if !ok {
				return Malformed("Content-Length %q", f.Value)
			}
			if h.ContentLength >= 0 && h.ContentLength != v {
				return Malformed("differing Content-Length values")
			}
			h.ContentLength = v
			f.Drop = true
		}
	case 15:
		if request && h.XFF == nil && asciiEqualFold(n, "x-forwarded-for") {
			h.XFF = f.Value
			f.Drop = true
		}
	case 16:
		if asciiEqualFold(n, "proxy-connection") {
			f.Drop = true
		} else if request && asciiEqualFold(n, "x-forwarded-host") {
			f.Drop = true
		}
	case 17:
		if asciiEqualFold(n, "transfer-encoding") {
			if *sawTE {
				return Malformed("repeated Transfer-Encoding")
			}
			*sawTE = true
			if !asciiEqualFold(f.Value, "chunked") {
				return Malformed("Transfer-Encoding %q", f.Value)
			}
			h.Chunked = true
			f.Drop = true
		} else if request && asciiEqualFold(n, "x-forwarded-proto") {
			f.Drop = true
		}
	case 19:
		if asciiEqualFold(n, "proxy-authorization") {
			f.Drop = true
		}
	}
	// missHeader is lower case (Config.setDefaults).
	if missHeader != "" && len(n) == len(missHeader) && !request && asciiEqualFold(n, missHeader) {
		if string(f.Value) == "1" {
			h.MissMark = true
		}
	}
	return nil
}

func (h *Head) connectionTokens(v []byte) error {
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
		if !IsToken(tok) {
			return Malformed("Connection token %q", tok)
		}
		switch {
		case asciiEqualFold(tok, "close"):
			h.ConnClose = true
		case asciiEqualFold(tok, "keep-alive"):
			h.ConnKeepAlive = true
		case asciiEqualFold(tok, "upgrade"):
			h.ConnUpgrade = true
		}
	}
	return nil
}

// connectionNames reports whether name is listed in a Connection field.
func connectionNames(fields []Field, name []byte) bool {
	for i := range fields {
		f := &fields[i]
		if len(f.Name) != 10 || !asciiEqualFold(f.Name, "connection") {
			continue
		}
		v := f.Value
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

// HeadEnd returns the length of the message head at the start of buf,
// through its empty line, or -1 when buf does not hold a whole head yet.
// A line that ends in a bare LF ends the head early, so that the parser
// sees it and refuses it rather than the caller waiting for more.
func HeadEnd(buf []byte) int {
	scan := 0
	for {
		i := bytes.IndexByte(buf[scan:], '\n')
		if i < 0 {
			return -1
		}
		lf := scan + i
		if lf == 0 || buf[lf-1] != '\r' || lf == 1 || buf[lf-2] == '\n' {
			return lf + 1
		}
		scan = lf + 1
	}
}

// AppendFields appends each field of fields that is not marked Drop as a
// "Name: value\r\n" line to dst, in order, and returns the extended
// slice. Forwarders use it to pass a parsed head on.
func AppendFields(dst []byte, fields []Field) []byte {
	for i := range fields {
		f := &fields[i]
		if f.Drop {
			continue
		}
		dst = append(dst, f.Name...)
		dst = append(dst, ": "...)
		dst = append(dst, f.Value...)
		dst = append(dst, "\r\n"...)
	}
	return dst
}

// Printable returns s with control and non-ASCII bytes replaced by '?' and
// cut to 200 bytes, so that a parse error can be quoted in a plain-text
// 400 answer without echoing a client's raw bytes back.
func Printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c >= 0x7f {
			b[i] = '?'
		}
	}
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}
