package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// MaxV1Len is the longest version 1 header, CRLF included (the
// specification's bound).
const MaxV1Len = 107

// MaxLen is the longest header Parse accepts: a version 2 header with
// up to 2 KiB of addresses and TLVs. The specification allows 64 KiB;
// no load balancer we know of sends more than a few hundred bytes, and
// the bound is what a trusted but broken source can make the proxy
// buffer.
const MaxLen = 16 + 2048

var (
	v1Sig = []byte("PROXY ")
	v2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// ErrIncomplete is returned by Parse when b is a proper prefix of a
// header that may still be valid: read more and call it again.
var ErrIncomplete = errors.New("proxyproto: header incomplete")

// ErrMalformed is wrapped by every error Parse returns for bytes that
// are not a valid header (test with errors.Is).
var ErrMalformed = errors.New("proxyproto: malformed header")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Header is a parsed PROXY header.
type Header struct {
	// Version is 1 or 2.
	Version int
	// Local is set when the header carries no client address: a
	// version 2 LOCAL command (the balancer's own health check), an
	// UNSPEC or AF_UNIX family, or version 1 "UNKNOWN". The
	// connection's own peer address stands then.
	Local bool
	// Src and Dst are the client's and the address it connected to
	// (zero when Local).
	Src, Dst netip.AddrPort
}

// Sniff reports whether b, the first bytes of a connection, begins a
// PROXY header (isHeader), or is too short to tell yet (undecided). An
// HTTP request never starts like either version: "PROXY" is no method
// HTTP defines, and a request line cannot start with CR LF CR LF.
func Sniff(b []byte) (isHeader, undecided bool) {
	for _, sig := range [][]byte{v1Sig, v2Sig} {
		n := min(len(b), len(sig))
		if n > 0 && bytes.Equal(b[:n], sig[:n]) {
			if n == len(sig) {
				return true, false
			}
			undecided = true
		}
	}
	return false, undecided
}

// Parse parses the header at the start of b and returns it with its
// length in bytes (what follows is the client's stream). It returns
// ErrIncomplete while b may still grow into a valid header (never past
// MaxLen bytes), and an error wrapping ErrMalformed for anything else,
// including bytes that are no PROXY header at all.
func Parse(b []byte) (Header, int, error) {
	if isHeader, undecided := Sniff(b); !isHeader {
		if undecided || len(b) == 0 {
			return Header{}, 0, ErrIncomplete
		}
		return Header{}, 0, malformed("no PROXY protocol signature")
	}
	if b[0] == 'P' {
		return parseV1(b)
	}
	return parseV2(b)
}

func parseV1(b []byte) (Header, int, error) {
	end := bytes.IndexByte(b, '\n')
	if end < 0 {
		if len(b) >= MaxV1Len {
			return Header{}, 0, malformed("version 1 line longer than %d bytes", MaxV1Len)
		}
		if i := bytes.IndexByte(b, '\r'); i >= 0 && i != len(b)-1 {
			return Header{}, 0, malformed("bare CR in version 1 line")
		}
		return Header{}, 0, ErrIncomplete
	}
	if end+1 > MaxV1Len {
		return Header{}, 0, malformed("version 1 line longer than %d bytes", MaxV1Len)
	}
	if end == 0 || b[end-1] != '\r' {
		return Header{}, 0, malformed("version 1 line not ended by CRLF")
	}
	line := b[len(v1Sig) : end-1]
	for _, c := range line {
		if c < 0x20 || c > 0x7e {
			return Header{}, 0, malformed("control or non-ASCII byte in version 1 line")
		}
	}
	parts := bytes.Split(line, []byte(" "))
	h := Header{Version: 1}
	switch string(parts[0]) {
	case "UNKNOWN":
		// The sender could not tell; the rest of the line is to be
		// ignored, by the specification.
		h.Local = true
		return h, end + 1, nil
	case "TCP4", "TCP6":
	default:
		return Header{}, 0, malformed("version 1 protocol %q", clip(parts[0]))
	}
	if len(parts) != 5 {
		return Header{}, 0, malformed("version 1 line has %d fields, want 5", len(parts))
	}
	v6 := parts[0][3] == '6'
	src, err := v1Addr(parts[1], v6)
	if err != nil {
		return Header{}, 0, err
	}
	dst, err := v1Addr(parts[2], v6)
	if err != nil {
		return Header{}, 0, err
	}
	sp, err := v1Port(parts[3])
	if err != nil {
		return Header{}, 0, err
	}
	dp, err := v1Port(parts[4])
	if err != nil {
		return Header{}, 0, err
	}
	h.Src = netip.AddrPortFrom(src, sp)
	h.Dst = netip.AddrPortFrom(dst, dp)
	return h, end + 1, nil
}

func v1Addr(b []byte, v6 bool) (netip.Addr, error) {
	a, err := netip.ParseAddr(string(b))
	if err != nil {
		return netip.Addr{}, malformed("version 1 address %q", clip(b))
	}
	if a.Zone() != "" || v6 != a.Is6() || a.Is4In6() {
		return netip.Addr{}, malformed("version 1 address %q does not match its protocol", clip(b))
	}
	return a, nil
}

func v1Port(b []byte) (uint16, error) {
	if len(b) == 0 || len(b) > 5 || len(b) > 1 && b[0] == '0' {
		return 0, malformed("version 1 port %q", clip(b))
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, malformed("version 1 port %q", clip(b))
		}
	}
	n, err := strconv.Atoi(string(b))
	if err != nil || n > 65535 {
		return 0, malformed("version 1 port %q", clip(b))
	}
	return uint16(n), nil
}

// Version 2 fields.
const (
	v2CmdLocal = 0x0
	v2CmdProxy = 0x1

	famUnspec = 0x0
	famInet   = 0x1
	famInet6  = 0x2
	famUnix   = 0x3

	protoUnspec = 0x0
	protoStream = 0x1
)

func parseV2(b []byte) (Header, int, error) {
	if len(b) < 16 {
		return Header{}, 0, ErrIncomplete
	}
	if b[12]>>4 != 2 {
		return Header{}, 0, malformed("version 2 header with version nibble %d", b[12]>>4)
	}
	cmd := b[12] & 0xf
	if cmd != v2CmdLocal && cmd != v2CmdProxy {
		return Header{}, 0, malformed("version 2 command %d", cmd)
	}
	fam, proto := b[13]>>4, b[13]&0xf
	n := int(binary.BigEndian.Uint16(b[14:16]))
	total := 16 + n
	if total > MaxLen {
		return Header{}, 0, malformed("version 2 header of %d bytes is over the %d-byte limit", total, MaxLen)
	}
	if len(b) < total {
		return Header{}, 0, ErrIncomplete
	}
	body := b[16:total]
	h := Header{Version: 2}
	var alen int
	switch fam {
	case famUnspec:
		h.Local = true
	case famInet:
		alen = 12
	case famInet6:
		alen = 36
	case famUnix:
		alen = 216
		h.Local = true
	default:
		return Header{}, 0, malformed("version 2 address family %d", fam)
	}
	if proto != protoStream && !(proto == protoUnspec && (fam == famUnspec || cmd == v2CmdLocal)) {
		return Header{}, 0, malformed("version 2 transport %d is not a stream", proto)
	}
	if len(body) < alen {
		return Header{}, 0, malformed("version 2 addresses need %d bytes, header has %d", alen, len(body))
	}
	switch fam {
	case famInet:
		h.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[0:4])), binary.BigEndian.Uint16(body[8:10]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[4:8])), binary.BigEndian.Uint16(body[10:12]))
	case famInet6:
		// A mapped IPv4 address is the IPv4 client it names (so that
		// per-address limits see one client, not two).
		h.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[0:16])).Unmap(), binary.BigEndian.Uint16(body[32:34]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[16:32])).Unmap(), binary.BigEndian.Uint16(body[34:36]))
	}
	// TLVs must tile the rest exactly: a header whose length does not
	// add up is broken, whatever its sender meant.
	for t := body[alen:]; len(t) > 0; {
		if len(t) < 3 {
			return Header{}, 0, malformed("version 2 TLV truncated")
		}
		l := int(binary.BigEndian.Uint16(t[1:3]))
		if len(t) < 3+l {
			return Header{}, 0, malformed("version 2 TLV of type %#x overruns the header", t[0])
		}
		t = t[3+l:]
	}
	if cmd == v2CmdLocal {
		h.Local = true
		h.Src, h.Dst = netip.AddrPort{}, netip.AddrPort{}
	}
	return h, total, nil
}

// AppendV1 appends a version 1 header for src and dst (both IPv4 or
// both IPv6) to b; for tests and for a proxy that passes the client on.
func AppendV1(b []byte, src, dst netip.AddrPort) []byte {
	proto := "TCP4"
	if src.Addr().Is6() {
		proto = "TCP6"
	}
	b = append(b, v1Sig...)
	b = append(b, proto...)
	b = append(b, ' ')
	b = src.Addr().AppendTo(b)
	b = append(b, ' ')
	b = dst.Addr().AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(src.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(dst.Port()), 10)
	return append(b, "\r\n"...)
}

// AppendV2 appends a version 2 PROXY header (TCP over IPv4 or IPv6) for
// src and dst, with tlvs (already encoded) after the addresses. The
// family is src's; dst must be of the same.
func AppendV2(b []byte, src, dst netip.AddrPort, tlvs []byte) []byte {
	b = append(b, v2Sig...)
	b = append(b, 0x20|v2CmdProxy)
	var addrs []byte
	if src.Addr().Is4() && dst.Addr().Is4() {
		b = append(b, famInet<<4|protoStream)
		s, d := src.Addr().As4(), dst.Addr().As4()
		addrs = append(append(addrs, s[:]...), d[:]...)
	} else {
		b = append(b, famInet6<<4|protoStream)
		s, d := src.Addr().As16(), dst.Addr().As16()
		addrs = append(append(addrs, s[:]...), d[:]...)
	}
	addrs = binary.BigEndian.AppendUint16(addrs, src.Port())
	addrs = binary.BigEndian.AppendUint16(addrs, dst.Port())
	b = binary.BigEndian.AppendUint16(b, uint16(len(addrs)+len(tlvs)))
	b = append(b, addrs...)
	return append(b, tlvs...)
}

// AppendV2Local appends a version 2 LOCAL header (no addresses), which a
// load balancer sends on its own connections such as health checks.
func AppendV2Local(b []byte) []byte {
	b = append(b, v2Sig...)
	return append(b, 0x20|v2CmdLocal, famUnspec<<4|protoUnspec, 0, 0)
}

func clip(b []byte) string {
	if len(b) > 48 {
		b = b[:48]
	}
	return string(b)
}
