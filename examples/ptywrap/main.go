// Command ptywrap runs a command in a pseudo-terminal and speaks the pty
// package's wrapper protocol on its stdin and stdout: input, window sizes,
// signals and hang-up in; output and the exit status out (see the pty
// package doc, "Wrapper protocol"). Its own exit code is the command's.
// pty.StartWrapper is its client.
//
//	ptywrap [-rows N] [-cols N] -- command [args...]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"

	"github.com/paaskit/paaskit/pty"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("ptywrap", flag.ContinueOnError)
	rows := fs.Uint("rows", pty.DefaultRows, "initial rows")
	cols := fs.Uint("cols", pty.DefaultCols, "initial columns")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 || *rows > pty.MaxDimension || *cols > pty.MaxDimension {
		fmt.Fprintf(os.Stderr, "usage: ptywrap [-rows 1..%d] [-cols 1..%d] -- command [args...]\n", pty.MaxDimension, pty.MaxDimension)
		return 2
	}
	cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...)
	st, err := pty.ServeWrapper(context.Background(), cmd,
		pty.Config{Size: pty.WindowSize{Rows: uint16(*rows), Cols: uint16(*cols)}}, os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ptywrap:", err)
		if st.Code == 0 {
			return 1
		}
	}
	return st.Code
}
