package upload

import (
	"io"
	"os/exec"

	"github.com/creack/pty"
)

// startInPty starts cmd with its stdin, stdout and stderr on a new
// pseudo-terminal of rows x cols, as the session leader with the pty as
// its controlling terminal. It returns the master side and a function that
// resizes the terminal (the child gets SIGWINCH).
//
// This is the one place the SSH server touches ptys: it goes through
// github.com/creack/pty directly until paaskit's pty package has local
// sessions, and then only this function changes.
func startInPty(cmd *exec.Cmd, rows, cols uint16) (master io.ReadWriteCloser, resize func(rows, cols uint16) error, err error) {
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: rows, Cols: cols})
	if err != nil {
		return nil, nil, err
	}
	resize = func(rows, cols uint16) error {
		return pty.Setsize(f, &pty.Winsize{Rows: rows, Cols: cols})
	}
	return f, resize, nil
}
