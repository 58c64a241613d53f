package stats

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// A hand-written decoder for the TypeBatch body: encoding/json's
// reflection was a third of the collector's CPU per point. It decodes
// what encoding/json would decode into wireBatch, but stricter: member
// names match exactly (encoding/json also matches them case-insensitively),
// a member of the wrong JSON type is an error, and so is a string that is
// not valid UTF-8 (encoding/json would replace the bytes). FuzzDecodeBatch
// checks that it never panics and agrees with encoding/json on whatever
// both accept.

type jsonParser struct {
	b   []byte
	i   int
	str []byte // scratch for unescaped strings
}

var errJSON = errors.New("malformed JSON")

func (p *jsonParser) fail(what string) error {
	return fmt.Errorf("%w: %s at byte %d", errJSON, what, p.i)
}

func (p *jsonParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) peek() byte {
	p.ws()
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *jsonParser) expect(c byte) error {
	if p.peek() != c {
		return p.fail("expected " + strconv.QuoteRune(rune(c)))
	}
	p.i++
	return nil
}

// stringBytes parses a string; the result aliases the input when it has
// no escapes, else p.str (valid until the next call).
func (p *jsonParser) stringBytes() ([]byte, error) {
	if p.peek() != '"' {
		return nil, p.fail("expected a string")
	}
	p.i++
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		if c == '"' {
			s := p.b[start:p.i]
			p.i++
			if !utf8.Valid(s) {
				return nil, p.fail("string is not UTF-8")
			}
			return s, nil
		}
		if c == '\\' {
			return p.escaped(start)
		}
		if c < 0x20 {
			return nil, p.fail("control character in string")
		}
		p.i++
	}
	return nil, p.fail("unterminated string")
}

func (p *jsonParser) escaped(start int) ([]byte, error) {
	out := append(p.str[:0], p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			p.str = out
			if !utf8.Valid(out) {
				return nil, p.fail("string is not UTF-8")
			}
			return out, nil
		case c < 0x20:
			return nil, p.fail("control character in string")
		case c != '\\':
			out = append(out, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.b) {
			return nil, p.fail("unterminated escape")
		}
		e := p.b[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return nil, p.fail("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if p.i+1 < len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
					save := p.i
					p.i += 2
					var ok2 bool
					if r2, ok2 = p.hex4(); !ok2 {
						return nil, p.fail("bad \\u escape")
					}
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						out = utf8.AppendRune(out, d)
						continue
					}
					p.i = save
				}
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, p.fail("bad escape")
		}
	}
	return nil, p.fail("unterminated string")
}

func (p *jsonParser) hex4() (rune, bool) {
	if p.i+4 > len(p.b) {
		return 0, false
	}
	var r rune
	for _, c := range p.b[p.i : p.i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	p.i += 4
	return r, true
}

// number returns the bytes of a JSON number.
func (p *jsonParser) number() ([]byte, error) {
	p.ws()
	start := p.i
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return nil, p.fail("expected a number")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return nil, p.fail("bad fraction")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return nil, p.fail("bad exponent")
		}
	}
	return p.b[start:p.i], nil
}

func (p *jsonParser) literal(lit string) bool {
	p.ws()
	if len(p.b)-p.i >= len(lit) && string(p.b[p.i:p.i+len(lit)]) == lit {
		p.i += len(lit)
		return true
	}
	return false
}

// isNull consumes a null.
func (p *jsonParser) isNull() bool { return p.peek() == 'n' && p.literal("null") }

func (p *jsonParser) uint64v() (uint64, error) {
	n, err := p.number()
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(string(n), 10, 64)
	if err != nil {
		return 0, p.fail("expected an unsigned integer")
	}
	return v, nil
}

func (p *jsonParser) int64v() (int64, error) {
	n, err := p.number()
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil {
		return 0, p.fail("expected an integer")
	}
	return v, nil
}

func (p *jsonParser) skip(depth int) error {
	if depth > 64 {
		return p.fail("nested too deep")
	}
	switch c := p.peek(); {
	case c == '"':
		_, err := p.stringBytes()
		return err
	case c == '{' || c == '[':
		close := byte('}')
		if c == '[' {
			close = ']'
		}
		p.i++
		if p.peek() == close {
			p.i++
			return nil
		}
		for {
			if c == '{' {
				if _, err := p.stringBytes(); err != nil {
					return err
				}
				if err := p.expect(':'); err != nil {
					return err
				}
			}
			if err := p.skip(depth + 1); err != nil {
				return err
			}
			switch p.peek() {
			case ',':
				p.i++
			case close:
				p.i++
				return nil
			default:
				return p.fail("expected , or end")
			}
		}
	case c == 't':
		if p.literal("true") {
			return nil
		}
	case c == 'f':
		if p.literal("false") {
			return nil
		}
	case c == 'n':
		if p.literal("null") {
			return nil
		}
	default:
		_, err := p.number()
		return err
	}
	return p.fail("bad literal")
}

// object calls member for each member of an object.
func (p *jsonParser) object(member func(key []byte) error) error {
	if err := p.expect('{'); err != nil {
		return err
	}
	if p.peek() == '}' {
		p.i++
		return nil
	}
	for {
		k, err := p.stringBytes()
		if err != nil {
			return err
		}
		// key may alias p.str, which the value's parse reuses: member
		// must look at key before it parses the value.
		key := k
		if err := p.expect(':'); err != nil {
			return err
		}
		if err := member(key); err != nil {
			return err
		}
		switch p.peek() {
		case ',':
			p.i++
		case '}':
			p.i++
			return nil
		default:
			return p.fail("expected , or }")
		}
	}
}

// parseWireBatch parses body into wb, reusing the arrays of wb's Records
// and Frames; a member absent from body is left zero (nil), so that the
// caller sees which format the body has.
func parseWireBatch(body []byte, wb *wireBatch) error {
	recs, frames := wb.Records[:0], wb.Frames[:0]
	*wb = wireBatch{}
	p := &jsonParser{b: body}
	err := p.object(func(key []byte) error {
		switch string(key) {
		case "emitter":
			if p.isNull() {
				return nil
			}
			s, err := p.stringBytes()
			wb.Emitter = string(s)
			return err
		case "from":
			if p.isNull() {
				return nil
			}
			v, err := p.uint64v()
			wb.From = v
			return err
		case "records":
			if p.isNull() {
				wb.Records = nil
				return nil
			}
			if wb.Records == nil {
				wb.Records = recs
			}
			return p.records(wb)
		case "frames":
			if p.isNull() {
				wb.Frames = nil
				return nil
			}
			if wb.Frames == nil {
				wb.Frames = frames
			}
			return p.base64(&wb.Frames)
		}
		return p.skip(0)
	})
	if err != nil {
		return err
	}
	if p.peek() != 0 || p.i != len(p.b) {
		return p.fail("data after the object")
	}
	return nil
}

// base64 parses a string of standard base64 (as encoding/json decodes a
// []byte) into *dst, reusing its array. The usual string, with no escape
// or line break, is decoded where it lies: one pass to find its end (the
// base64 decoder refuses any other byte a JSON string may not hold).
func (p *jsonParser) base64(dst *[]byte) error {
	if p.peek() != '"' {
		return p.fail("expected a string")
	}
	start := p.i + 1
	end := bytes.IndexByte(p.b[start:], '"')
	if end < 0 {
		return p.fail("unterminated string")
	}
	s := p.b[start : start+end]
	if bytes.IndexByte(s, '\\') >= 0 || bytes.IndexByte(s, '\n') >= 0 || bytes.IndexByte(s, '\r') >= 0 {
		// Escapes (or raw line breaks, which JSON refuses and base64
		// skips): the general path.
		u, err := p.stringBytes()
		if err != nil {
			return err
		}
		s = u
	} else {
		p.i = start + end + 1
	}
	out, err := base64.StdEncoding.AppendDecode((*dst)[:0], s)
	if err != nil {
		return p.fail("bad base64")
	}
	if out == nil {
		out = []byte{}
	}
	*dst = out
	return nil
}

func (p *jsonParser) records(wb *wireBatch) error {
	if err := p.expect('['); err != nil {
		return err
	}
	wb.Records = wb.Records[:0]
	if wb.Records == nil {
		wb.Records = []wireRecord{} // present, if empty
	}
	if p.peek() == ']' {
		p.i++
		return nil
	}
	var prevApp, prevStream, prevName, prevKind string
	for {
		wb.Records = append(wb.Records, wireRecord{})
		w := &wb.Records[len(wb.Records)-1]
		err := p.object(func(key []byte) error {
			if p.isNull() {
				return nil
			}
			var err error
			var s []byte
			switch string(key) {
			case "seq":
				w.Seq, err = p.uint64v()
			case "kind":
				s, err = p.stringBytes()
				w.Kind = intern(&prevKind, s)
			case "ts":
				var v int64
				v, err = p.int64v()
				w.TS = &v
			case "app":
				s, err = p.stringBytes()
				w.App = intern(&prevApp, s)
			case "instance":
				w.Instance, err = p.int64v()
			case "stream":
				s, err = p.stringBytes()
				w.Stream = intern(&prevStream, s)
			case "name":
				s, err = p.stringBytes()
				w.Name = intern(&prevName, s)
			case "value":
				var n []byte
				if n, err = p.number(); err == nil {
					if w.Value, err = strconv.ParseFloat(string(n), 64); err != nil || math.IsInf(w.Value, 0) {
						err = p.fail("value out of range")
					}
				}
			case "text":
				s, err = p.stringBytes()
				t := string(s)
				w.Text = &t
			case "text64":
				if s, err = p.stringBytes(); err == nil {
					w.Text64, err = base64.StdEncoding.AppendDecode(make([]byte, 0, len(s)*3/4), s)
					if w.Text64 == nil {
						w.Text64 = []byte{}
					}
				}
			case "truncated":
				switch {
				case p.literal("true"):
					w.Truncated = true
				case p.literal("false"):
					w.Truncated = false
				default:
					err = p.fail("expected a boolean")
				}
			default:
				err = p.skip(0)
			}
			return err
		})
		if err != nil {
			return err
		}
		switch p.peek() {
		case ',':
			p.i++
		case ']':
			p.i++
			return nil
		default:
			return p.fail("expected , or ]")
		}
	}
}
