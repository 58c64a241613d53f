// Command balancerd is paaskit's reference load balancer: it routes each
// HTTP request by its Host header through a routing table to a backend
// node (by consistent hash), and reloads the table from a file whenever
// the file changes or the daemon gets SIGHUP. Run it with --help for its
// flags and the table format.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func usage(fs *flag.FlagSet) func() {
	return func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: balancerd --table FILE [flags]\n       balancerd --nexus SPEC [--table FILE] [flags]\n\n")
		fmt.Fprintf(w, "balancerd routes HTTP requests by Host to backend nodes by consistent hash.\n")
		fmt.Fprintf(w, "It reloads FILE when it changes (checked by inotify and every --poll) and\n")
		fmt.Fprintf(w, "on SIGHUP; an empty or malformed file keeps the old table and logs why.\n")
		fmt.Fprintf(w, "With --nexus the nodes are the runner nodes announced to nexus (a node\n")
		fmt.Fprintf(w, "leaves after nexus's grace period; only its sites move), and FILE, if\n")
		fmt.Fprintf(w, "given, holds only the sites and any static nodes.\n")
		fmt.Fprintf(w, "SIGTERM or SIGINT stop it after requests in flight finish.\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(w, "\nTable file format:\n\n%s", indent(tableFormat()))
	}
}
