package pty

import (
	"encoding/base64"
	"encoding/binary"
	"math/bits"
	"strconv"
)

// The encoder of the pty.output bodies servers sent before data frames
// ("t" text or "d" base64 in the body; see outputcodec.go). The client
// still reads them, so the tests write them with this.

// appendOutput appends the pty.output body for data at offset off:
// {"s":session,"a":attach,"o":off,"t":text} when data as text is no longer
// than as base64, else {"s":...,"a":...,"o":off,"d":base64}.
func appendOutput(b []byte, session, attach string, off int64, data []byte) []byte {
	b = append(b, `{"s":"`...)
	b = append(b, session...)
	b = append(b, `","a":"`...)
	b = append(b, attach...)
	b = append(b, `","o":`...)
	b = strconv.AppendInt(b, off, 10)
	head := len(b)
	b = append(b, `,"t":"`...)
	if t, ok := appendText(b, data, len(b)+base64.StdEncoding.EncodedLen(len(data))); ok {
		return append(t, `"}`...)
	}
	b = append(b[:head], `,"d":"`...)
	b = base64.StdEncoding.AppendEncode(b, data)
	return append(b, `"}`...)
}

const hexDigits = "0123456789abcdef"

// appendText appends data to b as the contents of a JSON string in which
// each code point U+0000 to U+00FF is one byte: printable ASCII as itself,
// '"' and '\\' and the common control characters as two-character
// escapes, other control characters as \u00XX, and bytes 0x80 to 0xFF as
// the UTF-8 of U+0080 to U+00FF. It gives up, returning false, as soon as
// the result would pass limit bytes.
func appendText(b, data []byte, limit int) ([]byte, bool) {
	if cap(b) < limit+8 {
		b = append(make([]byte, 0, limit+8), b...)
	}
	// Write into out[:limit+8] directly: eight plain bytes at a time with
	// one store, and at most 6 bytes for one that is not, so checking j
	// against limit before each step never writes past the slice.
	out := b[:limit+8]
	j, i := len(b), 0
	for i < len(data) {
		if j > limit {
			return b, false
		}
		if i+8 <= len(data) {
			// Store all eight; keep the plain ones before the first
			// special byte (the rest are written again after it).
			w := binary.LittleEndian.Uint64(data[i:])
			binary.LittleEndian.PutUint64(out[j:], w)
			m := special(w)
			if m == 0 {
				i, j = i+8, j+8
				continue
			}
			k := bits.TrailingZeros64(m) >> 3
			i, j = i+k, j+k
		}
		c := data[i]
		i++
		switch {
		case c >= 0x20 && c < 0x80 && c != '"' && c != '\\':
			out[j] = c
			j++
			continue
		case c >= 0x80: // U+0080..U+00FF in UTF-8
			out[j], out[j+1] = 0xC0|c>>6, 0x80|c&0x3F
			j += 2
			continue
		case c == '"' || c == '\\':
		case c == '\n':
			c = 'n'
		case c == '\r':
			c = 'r'
		case c == '\t':
			c = 't'
		case c == '\b':
			c = 'b'
		case c == '\f':
			c = 'f'
		default:
			if j+6 > limit+8 {
				return b, false
			}
			copy(out[j:], []byte{'\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15]})
			j += 6
			continue
		}
		out[j], out[j+1] = '\\', c
		j += 2
	}
	if j > limit {
		return b, false
	}
	return out[:j], true
}
