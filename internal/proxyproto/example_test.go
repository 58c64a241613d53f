package proxyproto_test

import (
	"fmt"

	"github.com/paaskit/paaskit/internal/proxyproto"
)

// A reader that has the first bytes of a connection from a trusted load
// balancer parses the header, and what follows it is the client's.
func ExampleParse() {
	in := []byte("PROXY TCP4 203.0.113.9 198.51.100.1 4711 443\r\nGET / HTTP/1.1\r\n")
	h, n, err := proxyproto.Parse(in)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(h.Version, h.Src, h.Dst)
	fmt.Printf("%q\n", in[n:])

	_, _, err = proxyproto.Parse(in[:20])
	fmt.Println(err == proxyproto.ErrIncomplete)
	// Output:
	// 1 203.0.113.9:4711 198.51.100.1:443
	// "GET / HTTP/1.1\r\n"
	// true
}

// From an untrusted source, Sniff tells a PROXY header from a request.
func ExampleSniff() {
	for _, first := range []string{"GET / HTTP/1.1\r\n", "PROXY TCP4 ", "PRO"} {
		isHeader, undecided := proxyproto.Sniff([]byte(first))
		fmt.Println(isHeader, undecided)
	}
	// Output:
	// false false
	// true false
	// false true
}
