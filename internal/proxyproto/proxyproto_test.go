package proxyproto

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestParseV1(t *testing.T) {
	for _, tc := range []struct {
		in       string
		src, dst string
		local    bool
	}{
		{in: "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n", src: "192.0.2.7:56324", dst: "198.51.100.1:443"},
		{in: "PROXY TCP6 2001:db8::1 2001:db8::2 0 65535\r\n", src: "[2001:db8::1]:0", dst: "[2001:db8::2]:65535"},
		{in: "PROXY UNKNOWN\r\n", local: true},
		{in: "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", local: true},
	} {
		rest := "GET / HTTP/1.1\r\n\r\n"
		h, n, err := Parse([]byte(tc.in + rest))
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if n != len(tc.in) || h.Version != 1 || h.Local != tc.local {
			t.Fatalf("%q: got %+v, length %d", tc.in, h, n)
		}
		if !tc.local && (h.Src != ap(tc.src) || h.Dst != ap(tc.dst)) {
			t.Fatalf("%q: got %v -> %v", tc.in, h.Src, h.Dst)
		}
		// Every proper prefix is incomplete, never an error.
		for i := 0; i < len(tc.in); i++ {
			if _, _, err := Parse([]byte(tc.in[:i])); err != ErrIncomplete {
				t.Fatalf("%q cut at %d: %v, want ErrIncomplete", tc.in, i, err)
			}
		}
	}
}

func TestParseV1Malformed(t *testing.T) {
	for _, in := range []string{
		"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\n",    // bare LF
		"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",      // a field missing
		"PROXY TCP4 192.0.2.7  198.51.100.1 56324 443\r\n", // two spaces
		"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 \r\n", // trailing space
		"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",      // family mismatch
		"PROXY TCP6 192.0.2.7 2001:db8::2 1 2\r\n",
		"PROXY TCP6 ::ffff:192.0.2.7 2001:db8::2 1 2\r\n", // mapped v4 as v6
		"PROXY TCP4 192.0.2.07 198.51.100.1 1 2\r\n",      // leading zero octet
		"PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n",   // port range
		"PROXY TCP4 192.0.2.7 198.51.100.1 080 2\r\n",     // leading zero port
		"PROXY TCP4 192.0.2.7 198.51.100.1 +80 2\r\n",
		"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
		"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\r\n", // bare CR
		"PROXY TCP4 192.0.2.7\x00 198.51.100.1 1 2\r\n",
		"PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n", // zone
		"PROXY " + strings.Repeat("A", 120),       // too long without LF
		"PROXY TCP4 192.0.2.7 198.51.100.1 1 2" + strings.Repeat(" ", 80) + "\r\n",
		"GET / HTTP/1.1\r\n\r\n", // no signature
		"PROXYTCP4 1.2.3.4 1.2.3.4 1 2\r\n",
	} {
		_, _, err := Parse([]byte(in))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v, want ErrMalformed", in, err)
		}
	}
}

func TestParseV2(t *testing.T) {
	rest := []byte("GET / HTTP/1.1\r\n\r\n")
	tlv := []byte{0x04, 0x00, 0x03, 'a', 'b', 'c'} // a NOOP TLV
	for _, tc := range []struct {
		hdr   []byte
		src   string
		local bool
	}{
		{hdr: AppendV2(nil, ap("192.0.2.7:56324"), ap("198.51.100.1:443"), nil), src: "192.0.2.7:56324"},
		{hdr: AppendV2(nil, ap("192.0.2.7:56324"), ap("198.51.100.1:443"), tlv), src: "192.0.2.7:56324"},
		{hdr: AppendV2(nil, ap("[2001:db8::1]:7"), ap("[2001:db8::2]:8"), nil), src: "[2001:db8::1]:7"},
		{hdr: AppendV2Local(nil), local: true},
	} {
		h, n, err := Parse(append(append([]byte(nil), tc.hdr...), rest...))
		if err != nil {
			t.Fatalf("%x: %v", tc.hdr, err)
		}
		if n != len(tc.hdr) || h.Version != 2 || h.Local != tc.local {
			t.Fatalf("%x: got %+v, length %d", tc.hdr, h, n)
		}
		if !tc.local && h.Src != ap(tc.src) {
			t.Fatalf("%x: src %v", tc.hdr, h.Src)
		}
		for i := 0; i < len(tc.hdr); i++ {
			if _, _, err := Parse(tc.hdr[:i]); err != ErrIncomplete {
				t.Fatalf("%x cut at %d: %v, want ErrIncomplete", tc.hdr, i, err)
			}
		}
	}
}

func TestParseV2Malformed(t *testing.T) {
	good := AppendV2(nil, ap("192.0.2.7:1"), ap("198.51.100.1:2"), nil)
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	setLen := func(b []byte, n int) []byte { binary.BigEndian.PutUint16(b[14:16], uint16(n)); return b }
	for name, in := range map[string][]byte{
		"version 1 nibble": mod(func(b []byte) []byte { b[12] = 0x11; return b }),
		"command 2":        mod(func(b []byte) []byte { b[12] = 0x22; return b }),
		"family 4":         mod(func(b []byte) []byte { b[13] = 0x41; return b }),
		"datagram":         mod(func(b []byte) []byte { b[13] = 0x12; return b }),
		"short addresses":  mod(func(b []byte) []byte { return setLen(b[:16+8], 8) }),
		"inet6 in 12":      mod(func(b []byte) []byte { b[13] = 0x21; return b }),
		"TLV truncated":    mod(func(b []byte) []byte { return setLen(append(b, 0x04, 0x00), 14) }),
		"TLV overruns":     mod(func(b []byte) []byte { return setLen(append(b, 0x04, 0x00, 0x09, 'x'), 16) }),
		"over the limit":   mod(func(b []byte) []byte { return setLen(b, MaxLen) }),
	} {
		_, _, err := Parse(in)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestSniff(t *testing.T) {
	for _, tc := range []struct {
		in                  string
		isHeader, undecided bool
	}{
		{"", false, false},
		{"P", false, true},
		{"PROXY", false, true},
		{"PROXY ", true, false},
		{"POST / HTTP/1.1\r\n", false, false},
		{"\r\n\r\n", false, true},
		{string(v2Sig), true, false},
		{"\r\n\r\n\x00\r\nQUIX", false, false},
		{"GET /", false, false},
	} {
		is, und := Sniff([]byte(tc.in))
		if is != tc.isHeader || und != tc.undecided {
			t.Errorf("Sniff(%q) = %v, %v; want %v, %v", tc.in, is, und, tc.isHeader, tc.undecided)
		}
	}
}

// FuzzParse checks that Parse never panics, never claims more bytes
// than it was given or than MaxLen, agrees with itself on a longer
// input, and that what it accepts re-encodes to a header it parses the
// same way.
func FuzzParse(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(AppendV2(nil, ap("192.0.2.7:1"), ap("198.51.100.1:2"), []byte{4, 0, 1, 'x'}))
	f.Add(AppendV2(nil, ap("[2001:db8::1]:1"), ap("[2001:db8::2]:2"), nil))
	f.Add(AppendV2Local(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := Parse(b)
		if err != nil {
			if err != ErrIncomplete && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error of another kind: %v", err)
			}
			if err == ErrIncomplete && len(b) > MaxLen {
				t.Fatalf("incomplete after %d bytes", len(b))
			}
			return
		}
		if n <= 0 || n > len(b) || n > MaxLen {
			t.Fatalf("length %d of %d bytes", n, len(b))
		}
		h2, n2, err := Parse(append(append([]byte(nil), b[:n]...), "tail"...))
		if err != nil || n2 != n || h2 != h {
			t.Fatalf("the header alone parses differently: %+v %d %v", h2, n2, err)
		}
		if h.Local || h.Src.Addr().Is4() != h.Dst.Addr().Is4() {
			return // no single-family re-encoding
		}
		for _, enc := range [][]byte{AppendV1(nil, h.Src, h.Dst), AppendV2(nil, h.Src, h.Dst, nil)} {
			h3, n3, err := Parse(enc)
			if err != nil || n3 != len(enc) || h3.Src != h.Src || h3.Dst != h.Dst {
				t.Fatalf("re-encoded %q: %+v %d %v", enc, h3, n3, err)
			}
		}
	})
}
