package zmqloop

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"strconv"
	"unicode/utf8"
)

// This file is the envelope's JSON: a hand-written encoder and a strict,
// allocation-light parser for the payload object. encoding/json's reflection
// costs more than the HMAC on a small message; the parser is fuzzed against
// encoding/json (FuzzDecode) so both agree on every payload it accepts.

const maxJSONDepth = 64

// payload is the decoded payload object, with strings still pointing into
// the input.
type payload struct {
	typ, id, re []byte
	ts          int64
	body        []byte // raw JSON value, nil when absent
	hasErr      bool
	errCode     []byte
	errMsg      string
	seen        int // seenType, seenID, ... for the members present
}

type parseError struct {
	at  int
	msg string
}

func (e *parseError) Error() string { return e.msg + " at byte " + strconv.Itoa(e.at) }

func perr(at int, msg string) error { return &parseError{at: at, msg: msg} }

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// plainStringByte marks bytes that may appear unescaped inside a JSON
// string and need no further look.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const (
	swarOnes  = 0x0101010101010101
	swarHighs = 0x8080808080808080
)

// skipPlain returns the index of the first byte at or after i that is not
// a plainStringByte (or len(b)). It tests eight bytes at a time: a word
// with no '"', no '\\' and no byte below 0x20 is skipped whole (the
// classic "has a zero byte" test, exact for whether such a byte exists).
// In a word that has one, the lowest marked byte is the first such byte
// (a borrow can mark a byte only above a real one), so it is found
// without a byte-by-byte look; escapes every few dozen bytes (text with
// newlines) are common.
//
// A long rest (a large body, say base64 text) goes faster: the vectorised
// bytes.IndexByte finds the next '"' and the next '\\' before it, and
// only bytes below 0x20 are left to look for, one test per word.
func skipPlain(b []byte, i int) int {
	if len(b)-i >= 64 {
		end := len(b)
		if q := bytes.IndexByte(b[i:], '"'); q >= 0 {
			end = i + q
		}
		if bs := bytes.IndexByte(b[i:end], '\\'); bs >= 0 {
			end = i + bs
		}
		for ; i+8 <= end; i += 8 {
			v := binary.LittleEndian.Uint64(b[i:])
			if (v-swarOnes*0x20)&^v&swarHighs != 0 {
				break
			}
		}
		for i < end && b[i] >= 0x20 {
			i++
		}
		return i
	}
	for ; i+8 <= len(b); i += 8 {
		v := binary.LittleEndian.Uint64(b[i:])
		q := v ^ (swarOnes * '"')
		bs := v ^ (swarOnes * '\\')
		special := ((q - swarOnes) &^ q) | ((bs - swarOnes) &^ bs) | ((v - swarOnes*0x20) &^ v)
		if m := special & swarHighs; m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for i < len(b) && plainStringByte[b[i]] {
		i++
	}
	return i
}

// scanString scans a JSON string starting at b[i] == '"'. It returns the
// index after the closing quote and whether the string has escapes.
func scanString(b []byte, i int) (end int, escaped bool, err error) {
	if i >= len(b) || b[i] != '"' {
		return 0, false, perr(i, "want string")
	}
	i++
	for i < len(b) {
		// Skip the plain run first: most bytes need no attention.
		i = skipPlain(b, i)
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			return i + 1, escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(b) {
				return 0, false, perr(i, "unterminated escape")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return 0, false, perr(i, "short \\u escape")
				}
				for _, h := range b[i+2 : i+6] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return 0, false, perr(i, "bad \\u escape")
					}
				}
				i += 6
			default:
				return 0, false, perr(i, "bad escape")
			}
		case c < 0x20:
			return 0, false, perr(i, "control character in string")
		default:
			i++
		}
	}
	return 0, false, perr(i, "unterminated string")
}

// scanNumber scans a JSON number at b[i]; integer reports whether it has
// neither fraction nor exponent.
func scanNumber(b []byte, i int) (end int, integer bool, err error) {
	start := i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return 0, false, perr(start, "bad number")
	}
	integer = true
	if i < len(b) && b[i] == '.' {
		integer = false
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return 0, false, perr(start, "bad number fraction")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		integer = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return 0, false, perr(start, "bad number exponent")
		}
	}
	return i, integer, nil
}

// skipValue scans any JSON value at b[i] and returns the index after it.
func skipValue(b []byte, i, depth int) (int, error) {
	if depth > maxJSONDepth {
		return 0, perr(i, "nesting too deep")
	}
	if i >= len(b) {
		return 0, perr(i, "want value")
	}
	switch c := b[i]; {
	case c == '"':
		end, _, err := scanString(b, i)
		return end, err
	case c == '{':
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == '}' {
			return i + 1, nil
		}
		for {
			end, _, err := scanString(b, i)
			if err != nil {
				return 0, err
			}
			i = skipWS(b, end)
			if i >= len(b) || b[i] != ':' {
				return 0, perr(i, "want ':'")
			}
			i, err = skipValue(b, skipWS(b, i+1), depth+1)
			if err != nil {
				return 0, err
			}
			i = skipWS(b, i)
			if i < len(b) && b[i] == ',' {
				i = skipWS(b, i+1)
				continue
			}
			if i < len(b) && b[i] == '}' {
				return i + 1, nil
			}
			return 0, perr(i, "want ',' or '}'")
		}
	case c == '[':
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1, nil
		}
		for {
			var err error
			i, err = skipValue(b, i, depth+1)
			if err != nil {
				return 0, err
			}
			i = skipWS(b, i)
			if i < len(b) && b[i] == ',' {
				i = skipWS(b, i+1)
				continue
			}
			if i < len(b) && b[i] == ']' {
				return i + 1, nil
			}
			return 0, perr(i, "want ',' or ']'")
		}
	case c == '-' || c >= '0' && c <= '9':
		end, _, err := scanNumber(b, i)
		return end, err
	case c == 't':
		return literal(b, i, "true")
	case c == 'f':
		return literal(b, i, "false")
	case c == 'n':
		return literal(b, i, "null")
	default:
		return 0, perr(i, "want value")
	}
}

func literal(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, perr(i, "bad literal")
	}
	return i + len(lit), nil
}

// validJSON reports whether b is exactly one JSON value (with optional
// surrounding whitespace).
func validJSON(b []byte) bool {
	i, err := skipValue(b, skipWS(b, 0), 0)
	return err == nil && skipWS(b, i) == len(b)
}

// stringValue returns the decoded content of the JSON string b[start:end]
// (quotes included).
func stringValue(b []byte, start, end int, escaped bool) (string, error) {
	if !escaped && utf8.Valid(b[start+1:end-1]) {
		return string(b[start+1 : end-1]), nil
	}
	var s string
	if err := json.Unmarshal(b[start:end], &s); err != nil {
		return "", err
	}
	return s, nil
}

// tokenValue returns the content of a string that must be a token (no
// escapes, token alphabet).
func tokenValue(b []byte, start, end int, escaped bool, field string) ([]byte, error) {
	v := b[start+1 : end-1]
	if escaped || !validToken(v) {
		return nil, perr(start, field+": want 1 to 128 bytes of [A-Za-z0-9._:/-] without escapes")
	}
	return v, nil
}

const (
	seenType = 1 << iota
	seenID
	seenTS
	seenRe
	seenBody
	seenError
)

// parsePayload parses the envelope payload object into p.
func parsePayload(b []byte, p *payload) error {
	if err := parsePayloadFields(b, p); err != nil {
		return err
	}
	switch {
	case p.seen&seenType == 0:
		return perr(0, "missing type")
	case p.seen&seenID == 0:
		return perr(0, "missing id")
	case p.seen&seenTS == 0:
		return perr(0, "missing ts")
	}
	return nil
}

// parsePayloadFields parses a payload-shaped object that is all of b into
// p and records in p.seen which members it had, without requiring any.
func parsePayloadFields(b []byte, p *payload) error {
	i, err := parseObjectAt(b, skipWS(b, 0), p)
	if err != nil {
		return err
	}
	if skipWS(b, i) != len(b) {
		return perr(i, "trailing data after payload")
	}
	return nil
}

// parseObjectAt parses the payload-shaped object at b[i] into p (p.seen
// says which members it had) and returns the index after it.
func parseObjectAt(b []byte, i int, p *payload) (int, error) {
	if i >= len(b) || b[i] != '{' {
		return 0, perr(i, "payload: want object")
	}
	i = skipWS(b, i+1)
	seen := 0
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			kEnd, kEsc, err := scanString(b, i)
			if err != nil {
				return 0, err
			}
			key := b[i+1 : kEnd-1]
			if kEsc {
				s, err := stringValue(b, i, kEnd, true)
				if err != nil {
					return 0, perr(i, "bad key")
				}
				key = []byte(s)
			}
			i = skipWS(b, kEnd)
			if i >= len(b) || b[i] != ':' {
				return 0, perr(i, "want ':'")
			}
			i = skipWS(b, i+1)
			bit := 0
			switch string(key) {
			case "type":
				bit = seenType
			case "id":
				bit = seenID
			case "ts":
				bit = seenTS
			case "re":
				bit = seenRe
			case "body":
				bit = seenBody
			case "error":
				bit = seenError
			}
			if bit != 0 && seen&bit != 0 {
				return 0, perr(i, "duplicate key "+strconv.Quote(string(key)))
			}
			seen |= bit
			switch bit {
			case seenType, seenID, seenRe:
				end, esc, err := scanString(b, i)
				if err != nil {
					return 0, err
				}
				v, err := tokenValue(b, i, end, esc, string(key))
				if err != nil {
					return 0, err
				}
				switch bit {
				case seenType:
					p.typ = v
				case seenID:
					p.id = v
				default:
					p.re = v
				}
				i = end
			case seenTS:
				end, integer, err := scanNumber(b, i)
				if err != nil {
					return 0, err
				}
				if !integer || b[i] == '-' {
					return 0, perr(i, "ts: want a non-negative integer (Unix milliseconds)")
				}
				ts, err := strconv.ParseInt(string(b[i:end]), 10, 64)
				if err != nil {
					return 0, perr(i, "ts: out of range")
				}
				p.ts = ts
				i = end
			case seenBody:
				end, err := skipValue(b, i, 1)
				if err != nil {
					return 0, err
				}
				p.body = b[i:end]
				i = end
			case seenError:
				end, err := parseErrorObject(b, i, p)
				if err != nil {
					return 0, err
				}
				i = end
			default:
				end, err := skipValue(b, i, 1)
				if err != nil {
					return 0, err
				}
				i = end
			}
			i = skipWS(b, i)
			if i < len(b) && b[i] == ',' {
				i = skipWS(b, i+1)
				continue
			}
			if i < len(b) && b[i] == '}' {
				i++
				break
			}
			return 0, perr(i, "want ',' or '}'")
		}
	}
	p.seen = seen
	return i, nil
}

func parseErrorObject(b []byte, i int, p *payload) (int, error) {
	if i >= len(b) || b[i] != '{' {
		return 0, perr(i, "error: want object")
	}
	p.hasErr = true
	i = skipWS(b, i+1)
	var haveCode, haveMsg bool
	if i < len(b) && b[i] == '}' {
		return 0, perr(i, "error: missing code")
	}
	for {
		kEnd, kEsc, err := scanString(b, i)
		if err != nil {
			return 0, err
		}
		key, err := stringValue(b, i, kEnd, kEsc)
		if err != nil {
			return 0, perr(i, "bad key")
		}
		i = skipWS(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return 0, perr(i, "want ':'")
		}
		i = skipWS(b, i+1)
		switch key {
		case "code":
			if haveCode {
				return 0, perr(i, `duplicate key "code"`)
			}
			haveCode = true
			end, esc, err := scanString(b, i)
			if err != nil {
				return 0, err
			}
			if p.errCode, err = tokenValue(b, i, end, esc, "error.code"); err != nil {
				return 0, err
			}
			i = end
		case "message":
			if haveMsg {
				return 0, perr(i, `duplicate key "message"`)
			}
			haveMsg = true
			end, esc, err := scanString(b, i)
			if err != nil {
				return 0, err
			}
			if p.errMsg, err = stringValue(b, i, end, esc); err != nil {
				return 0, perr(i, "error.message: bad string")
			}
			i = end
		default:
			end, err := skipValue(b, i, 2)
			if err != nil {
				return 0, err
			}
			i = end
		}
		i = skipWS(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			if !haveCode {
				return 0, perr(i, "error: missing code")
			}
			return i + 1, nil
		}
		return 0, perr(i, "want ',' or '}'")
	}
}

// appendJSONString appends s as a JSON string literal. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// batchItem is one decoded item of a batch body, pointing into the input.
type batchItem struct {
	typ, id []byte
	ts      int64
	hasTS   bool
	body    []byte // raw JSON value, nil when absent
}

// parseBatch parses a BatchType message's body: a non-empty JSON array of
// item objects with "type" and "id" (tokens), optionally "ts" and "body";
// other members are ignored, "re" and "error" are refused, and so is an
// item whose type is BatchType (no nesting). Items are appended to items.
func parseBatch(b []byte, items []batchItem) ([]batchItem, error) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return items, perr(i, "batch body: want a JSON array of items")
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return items, perr(i, "batch body: empty array")
	}
	for n := 0; ; n++ {
		start := i
		if i >= len(b) || b[i] != '{' {
			return items, perr(i, "batch item "+strconv.Itoa(n)+": want object")
		}
		var p payload
		end, err := parseObjectAt(b, i, &p)
		if err != nil {
			return items, perr(start, "batch item "+strconv.Itoa(n)+": "+err.Error())
		}
		switch {
		case p.seen&seenType == 0:
			return items, perr(start, "batch item "+strconv.Itoa(n)+": missing type")
		case p.seen&seenID == 0:
			return items, perr(start, "batch item "+strconv.Itoa(n)+": missing id")
		case p.seen&(seenRe|seenError) != 0:
			return items, perr(start, "batch item "+strconv.Itoa(n)+": \"re\" and \"error\" are not allowed in a batch item")
		case string(p.typ) == BatchType:
			return items, perr(start, "batch item "+strconv.Itoa(n)+": a batch nested in a batch")
		}
		items = append(items, batchItem{typ: p.typ, id: p.id, ts: p.ts, hasTS: p.seen&seenTS != 0, body: p.body})
		i = skipWS(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == ']' {
			i++
			break
		}
		return items, perr(i, "batch body: want ',' or ']'")
	}
	if skipWS(b, i) != len(b) {
		return items, perr(i, "batch body: trailing data after array")
	}
	return items, nil
}
