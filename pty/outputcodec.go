package pty

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
)

// The pty.output body, written and read without encoding/json. The output
// bytes travel raw in the message's data frame (zmqloop's Message.Data):
// no escaping, no base64, nothing for either side to scan. Servers before
// data frames put them in the body instead, as a "t" string (ISO 8859-1
// code points, one per byte) or "d" base64; the client still reads those.
// See the package doc, "Session protocol".

// appendOutputHead appends the pty.output body for output at offset off
// whose bytes go raw in the message's data frame:
// {"s":session,"a":attach,"o":off}.
func appendOutputHead(b []byte, session, attach string, off int64) []byte {
	b = append(b, `{"s":"`...)
	b = append(b, session...)
	b = append(b, `","a":"`...)
	b = append(b, attach...)
	b = append(b, `","o":`...)
	b = strconv.AppendInt(b, off, 10)
	return append(b, '}')
}

// Eight-byte masks for the SWAR tests below.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// special returns w with the high bit set in the lowest byte (and maybe
// some higher ones) that does not stand for itself in a JSON string: a
// byte below 0x20, '"', '\\', or 0x80 and above. It is zero when all eight
// bytes of w stand for themselves.
func special(w uint64) uint64 {
	// Each term marks the bytes below 0x20, equal to '"' (xor zero) or
	// to '\\': a borrow can mark a wrong byte, but only above a right one,
	// so the lowest mark is always right. w's own high bits are the bytes
	// >= 0x80.
	q, bs := w^'"'*ones, w^'\\'*ones
	below := (w - 0x20*ones) & ^w
	quote := (q - ones) & ^q
	slash := (bs - ones) & ^bs
	return (below | quote | slash | w) & highs
}

// plainRun returns how many leading bytes of p stand for themselves in a
// JSON string (see special).
func plainRun(p []byte) int {
	i := 0
	for ; i+8 <= len(p); i += 8 {
		if m := special(binary.LittleEndian.Uint64(p[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for ; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			return i
		}
	}
	return i
}

var errBadText = errors.New(`pty: bad "t" output text: not a JSON string of code points U+0000 to U+00FF`)

// appendTextDecode decodes the contents of a "t" string (without its
// quotes) onto dst. It refuses anything appendText cannot have written as
// a JSON string of code points up to U+00FF.
func appendTextDecode(dst, s []byte) ([]byte, error) {
	for len(s) > 0 {
		n := plainRun(s)
		dst = append(dst, s[:n]...)
		s = s[n:]
		if len(s) == 0 {
			break
		}
		switch c := s[0]; {
		case c == '\\':
			if len(s) < 2 {
				return dst, errBadText
			}
			switch s[1] {
			case '"', '\\', '/':
				dst = append(dst, s[1])
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'u':
				if len(s) < 6 {
					return dst, errBadText
				}
				v, err := strconv.ParseUint(string(s[2:6]), 16, 16)
				if err != nil || v > 0xFF {
					return dst, errBadText
				}
				dst = append(dst, byte(v))
				s = s[4:]
			default:
				return dst, errBadText
			}
			s = s[2:]
		case c == 0xC2 || c == 0xC3:
			if len(s) < 2 || s[1]&0xC0 != 0x80 {
				return dst, errBadText
			}
			dst = append(dst, c<<6|s[1]&0x3F)
			s = s[2:]
		default: // a raw control character, a '"' or another UTF-8 sequence
			return dst, errBadText
		}
	}
	return dst, nil
}

// outputHead is a pty.output body with its data still encoded.
type outputHead struct {
	S, A string
	O    int64
	enc  byte   // 't': Data is "t" string contents; 'd': base64; 0: decoded
	Data []byte // aliases the body unless enc is 0
}

// decode appends the output data onto dst.
func (h *outputHead) decode(dst []byte) ([]byte, error) {
	switch h.enc {
	case 't':
		return appendTextDecode(dst, h.Data)
	case 'd':
		return base64.StdEncoding.AppendDecode(dst, h.Data)
	}
	return append(dst, h.Data...), nil
}

// parseOutputHead reads a pty.output message: body and data frame (nil if
// none). The forms servers write (appendOutputHead's, and the older "t"
// and "d" ones) are taken apart directly, any data in the body left
// encoded (encoding/json's scan of an 87 KiB string would cost more than
// everything else a byte goes through); any other JSON object goes
// through encoding/json. Output in both the data frame and the body is
// refused. h.Data aliases body or data.
func parseOutputHead(b, data []byte) (outputHead, error) {
	if h, ok := parseCanonical(b); ok {
		if len(data) > 0 {
			if h.enc != 0 {
				return outputHead{}, errBoth
			}
			h.Data = data
		}
		return h, nil
	}
	var m struct {
		S, A string
		O    int64
		D    []byte
		T    *string
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return outputHead{}, err
	}
	if len(data) > 0 {
		if m.D != nil || m.T != nil {
			return outputHead{}, errBoth
		}
		return outputHead{S: m.S, A: m.A, O: m.O, Data: data}, nil
	}
	h := outputHead{S: m.S, A: m.A, O: m.O, Data: m.D}
	if m.T != nil {
		if m.D != nil {
			return outputHead{}, errors.New(`pty: output message has both "d" and "t"`)
		}
		h.Data = make([]byte, 0, len(*m.T))
		for _, r := range *m.T {
			// encoding/json turns invalid UTF-8 into U+FFFD: refused too.
			if r > 0xFF {
				return outputHead{}, errBadText
			}
			h.Data = append(h.Data, byte(r))
		}
	}
	return h, nil
}

var errBoth = errors.New(`pty: output message has data both in its data frame and in its body ("d" or "t")`)

// parseCanonical parses exactly {"s":"S","a":"A","o":N} or
// {"s":"S","a":"A","o":N,"d"|"t":"DATA"} with no whitespace; ok is false
// for anything else (which may still be valid, for parseOutputHead's
// general path). The first form has enc 0 and no Data.
func parseCanonical(b []byte) (outputHead, bool) {
	rest, ok := bytes.CutPrefix(b, []byte(`{"s":"`))
	if !ok {
		return outputHead{}, false
	}
	var s, a, o []byte
	if s, rest, ok = bytes.Cut(rest, []byte(`","a":"`)); !ok || plainRun(s) != len(s) {
		return outputHead{}, false
	}
	if a, rest, ok = bytes.Cut(rest, []byte(`","o":`)); !ok || plainRun(a) != len(a) {
		return outputHead{}, false
	}
	if o, ok := bytes.CutSuffix(rest, []byte{'}'}); ok && bytes.IndexByte(o, ',') < 0 {
		off, ok := parseOffset(o)
		return outputHead{S: string(s), A: string(a), O: off}, ok
	}
	i := bytes.IndexByte(rest, ',')
	if i < 0 || len(rest) < i+7 || rest[i+1] != '"' || (rest[i+2] != 'd' && rest[i+2] != 't') || string(rest[i+3:i+6]) != `":"` {
		return outputHead{}, false
	}
	o, text := rest[:i], rest[i+2] == 't'
	data := rest[i+6:]
	if len(data) < 2 || string(data[len(data)-2:]) != `"}` {
		return outputHead{}, false
	}
	data = data[:len(data)-2]
	// The data ends at the closing quote: no unescaped '"' inside (in
	// base64, none at all), or this is some other object.
	if text && !textClosed(data) || !text && bytes.IndexByte(data, '"') >= 0 {
		return outputHead{}, false
	}
	off, ok := parseOffset(o)
	if !ok {
		return outputHead{}, false
	}
	h := outputHead{S: string(s), A: string(a), O: off, enc: 'd', Data: data}
	if text {
		h.enc = 't'
	}
	return h, true
}

// parseOffset parses a JSON integer as the canonical forms write it: no
// sign other than '-', no leading zero.
func parseOffset(o []byte) (int64, bool) {
	off, err := strconv.ParseInt(string(o), 10, 64)
	if err != nil || (len(o) > 1 && o[0] == '0') || (len(o) > 0 && o[0] == '+') {
		return 0, false
	}
	return off, true
}

// textClosed reports whether every '"' in s is escaped, so s is all one
// JSON string's contents.
func textClosed(s []byte) bool {
	for {
		i := bytes.IndexByte(s, '"')
		if i < 0 {
			return true
		}
		// Escaped if an odd number of backslashes precede it.
		k := 0
		for j := i - 1; j >= 0 && s[j] == '\\'; j-- {
			k++
		}
		if k%2 == 0 {
			return false
		}
		s = s[i+1:]
	}
}

// parseOutput decodes a whole pty.output message (tests use it; the client
// decodes into its own buffer).
func parseOutput(b, data []byte) (outputMsg, error) {
	h, err := parseOutputHead(b, data)
	if err != nil {
		return outputMsg{}, err
	}
	d, err := h.decode(nil)
	if err != nil {
		return outputMsg{}, fmt.Errorf("pty: output data: %w", err)
	}
	return outputMsg{S: h.S, A: h.A, O: h.O, D: d}, nil
}
