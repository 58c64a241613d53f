package http1

// hostTable maps the bytes a host name may hold to their lower-case form
// (0: not allowed). '_' is not in RFC 1123 names but is common in real
// ones; it cannot smuggle anything.
var hostTable = func() (t [256]byte) {
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c)
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = byte(c)
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = byte(c + 'a' - 'A')
	}
	t['-'] = '-'
	t['.'] = '.'
	t['_'] = '_'
	return t
}()

// NormalizeHost appends the routing form of a Host field value to dst:
// lower case, without the port (any valid one: sites are routed by name)
// and without a trailing dot. It reports false, with dst as it was, for
// a value that is not a host name of at most 253 bytes of letters,
// digits, '-', '_' and '.', an IPv4 address, or a bracketed IPv6 literal,
// or whose port is not 1 to 5 digits up to 65535 (an empty port is
// allowed, RFC 3986 3.2.3).
func NormalizeHost(dst, raw []byte) ([]byte, bool) {
	if len(raw) == 0 {
		return dst, false
	}
	if raw[0] == '[' {
		end := -1
		for i, c := range raw {
			if c == ']' {
				end = i
				break
			}
		}
		if end < 2 || !validPort(raw[end+1:]) {
			return dst, false
		}
		for _, c := range raw[1:end] {
			if !(c == ':' || c == '.' || '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return dst, false
			}
		}
		for _, c := range raw[:end+1] {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
		}
		return dst, true
	}
	for i, c := range raw {
		if c == ':' {
			if !validPort(raw[i:]) {
				return dst, false
			}
			raw = raw[:i]
			break
		}
	}
	if len(raw) > 0 && raw[len(raw)-1] == '.' {
		raw = raw[:len(raw)-1]
	}
	if len(raw) == 0 || len(raw) > 253 {
		return dst, false
	}
	start := len(dst)
	for _, c := range raw {
		l := hostTable[c]
		if l == 0 {
			return dst[:start], false
		}
		dst = append(dst, l)
	}
	return dst, true
}

// validPort checks an empty string or ":" followed by at most 5 digits
// up to 65535 (an empty port is allowed).
func validPort(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	if b[0] != ':' || len(b) > 6 {
		return false
	}
	n := 0
	for _, c := range b[1:] {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}
