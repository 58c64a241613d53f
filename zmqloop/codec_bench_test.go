package zmqloop

import (
	"testing"
)

// BenchmarkSeal is one sealInto of a 100-byte body (sender side CPU).
func BenchmarkSeal(b *testing.B) {
	c := newTestCodec(b, nil)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		m := Message{Type: "stat", Body: benchBody}
		_, _, _, bufp, err := c.sealInto(&m)
		if err != nil {
			b.Fatal(err)
		}
		c.release(bufp)
	}
}

// BenchmarkOpen is one openAt and replay check of a 100-byte body
// (receiver side CPU).
func BenchmarkOpen(b *testing.B) {
	c := newTestCodec(b, nil)
	w, err := NewReplayWindow(ReplayConfig{})
	if err != nil {
		b.Fatal(err)
	}
	msgs := make([][][]byte, 4096)
	for i := range msgs {
		f, err := c.Seal(Message{Type: "stat", Body: benchBody})
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = f
	}
	now := c.now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var m Message
		if err := c.openAt(msgs[i%len(msgs)], &m, now); err != nil {
			b.Fatal(err)
		}
		if i < len(msgs) {
			if err := w.admitAt(&m, now); err != nil {
				b.Fatal(err)
			}
		}
	}
}
