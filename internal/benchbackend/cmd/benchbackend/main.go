// Command benchbackend runs the benchmark backend on -addr until killed.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"

	"github.com/paaskit/paaskit/internal/benchbackend"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchbackend:", err)
		os.Exit(1)
	}
	if err := benchbackend.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "benchbackend:", err)
		os.Exit(1)
	}
}
