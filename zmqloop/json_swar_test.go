package zmqloop

import (
	"math/rand/v2"
	"testing"
)

// TestSkipPlain checks the eight-bytes-at-a-time scan against the byte
// table on every position of random strings rich in the bytes it looks
// for and in bytes at or above 0x80.
func TestSkipPlain(t *testing.T) {
	ref := func(b []byte, i int) int {
		for i < len(b) && plainStringByte[b[i]] {
			i++
		}
		return i
	}
	alphabet := []byte{'a', 'Z', ' ', '"', '\\', 0x00, 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xa2, 0xdc, 0xff}
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 7000; n++ {
		// Short strings, and long ones (the IndexByte path) whose
		// special bytes are rare.
		size, rare := r.IntN(40), 4
		if n >= 5000 {
			size, rare = 64+r.IntN(300), 64
		}
		b := make([]byte, size)
		for k := range b {
			if r.IntN(rare) == 0 {
				b[k] = alphabet[r.IntN(len(alphabet))]
			} else {
				b[k] = byte(0x20 + r.IntN(0xe0))
			}
		}
		for i := 0; i <= len(b); i++ {
			if got, want := skipPlain(b, i), ref(b, i); got != want {
				t.Fatalf("skipPlain(%q, %d) = %d, want %d", b, i, got, want)
			}
		}
	}
}
