package pty

import (
	"bytes"
	"encoding/base64"
	"testing"
)

func lines(n int) []byte {
	b := bytes.Repeat([]byte(string(bytes.Repeat([]byte{'x'}, 79))+"\n"), n/80+1)
	return b[:n]
}

func BenchmarkStreamEncoding(b *testing.B) {
	data := lines(64 << 10)
	buf := make([]byte, 0, 100<<10)
	b.Run("text", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			buf = appendOutput(buf[:0], "s", "a", 1, data)
		}
	})
	b.Run("base64", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			buf = base64.StdEncoding.AppendEncode(buf[:0], data)
		}
	})
	body := appendOutput(nil, "s", "a", 1, data)
	b.Run("textdecode", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			h, _ := parseOutputHead(body, nil)
			buf, _ = h.decode(buf[:0])
		}
	})
}
