package pty

import (
	"math/rand/v2"
	"testing"
)

// TestPlainRun checks the eight-bytes-at-a-time scan against a byte-by-byte
// one on every position of random strings rich in the bytes it stops at.
func TestPlainRun(t *testing.T) {
	ref := func(b []byte) int {
		for i, c := range b {
			if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
				return i
			}
		}
		return len(b)
	}
	alphabet := []byte{'a', 'Z', ' ', '"', '\\', 0x00, 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xa2, 0xdc, 0xff, '\n'}
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 5000; n++ {
		b := make([]byte, r.IntN(40))
		for k := range b {
			if r.IntN(6) == 0 {
				b[k] = alphabet[r.IntN(len(alphabet))]
			} else {
				b[k] = byte(0x20 + r.IntN(0x5f))
			}
		}
		for i := 0; i <= len(b); i++ {
			if got, want := plainRun(b[i:]), ref(b[i:]); got != want {
				t.Fatalf("plainRun(%q) = %d, want %d", b[i:], got, want)
			}
		}
	}
}
