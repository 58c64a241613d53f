package http1_test

import (
	"fmt"

	"github.com/paaskit/paaskit/internal/http1"
)

// A chunked body arriving in two reads, split mid-line, decoded and
// re-encoded as a forwarder passes it on.
func ExampleChunkedDecoder() {
	reads := [][]byte{[]byte("5;ext=1\r\nhel"), []byte("lo\r\n0\r\nX-Sum: 5\r\n\r\nNEXT")}
	var d http1.ChunkedDecoder
	var out []byte
	for _, buf := range reads {
		for len(buf) > 0 && !d.Done() {
			n, data, err := d.Decode(buf)
			if err != nil {
				fmt.Println("refused:", err)
				return
			}
			out = http1.AppendChunk(out, data)
			buf = buf[n:]
		}
		if d.Done() {
			fmt.Printf("left for the next message: %q\n", buf)
		}
	}
	out = http1.AppendLastChunk(out, d.Trailers())
	fmt.Printf("%d bytes of data, re-encoded %q\n", d.Total(), out)

	var bad http1.ChunkedDecoder
	_, _, err := bad.Decode([]byte("+5\r\nhello\r\n"))
	fmt.Println(err)
	// Output:
	// left for the next message: "NEXT"
	// 5 bytes of data, re-encoded "3\r\nhel\r\n2\r\nlo\r\n0\r\nX-Sum: 5\r\n\r\n"
	// malformed HTTP/1.1 message: chunk size "+5"
}

func ExampleNormalizeHost() {
	for _, h := range []string{"Blog.Example.COM.:8080", "[::1]:443", "bad host"} {
		norm, ok := http1.NormalizeHost(nil, []byte(h))
		fmt.Printf("%q %v\n", norm, ok)
	}
	// Output:
	// "blog.example.com" true
	// "[::1]" true
	// "" false
}
