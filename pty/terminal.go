package pty

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Terminal is a command running in a terminal, wherever the terminal is:
// a local Session, a Wrapped session behind the wrapper program, or a
// RemoteSession over zmqloop. Read returns its output and io.EOF after the
// last byte; Write types into it.
type Terminal interface {
	io.ReadWriter
	Resize(size WindowSize) error
	Signal(sig syscall.Signal) error
	Wait(ctx context.Context) (ExitStatus, error)
}

// Attach connects the caller's terminal to t until t's command exits, and
// returns its exit status: keystrokes read from in are written to t,
// output read from t is written to out, and if in is a terminal it is put
// in raw mode (restored on return, on panic and on SIGTERM; see MakeRaw)
// and its window size is sent to t now and on every SIGWINCH.
//
// The goroutine reading in may stay blocked in its read after Attach
// returns (a terminal read cannot be interrupted); it ends at the next
// keystroke or at EOF and writes nothing more. A command-line client
// returns from main, so this costs nothing.
func Attach(ctx context.Context, in *os.File, out io.Writer, t Terminal) (ExitStatus, error) {
	if IsTerminal(in) {
		raw, err := MakeRaw(in)
		if err != nil {
			return ExitStatus{}, err
		}
		defer raw.Restore()
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		if size, err := TerminalSize(in); err == nil {
			_ = t.Resize(size)
		}
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-winch:
					if size, err := TerminalSize(in); err == nil {
						_ = t.Resize(size)
					}
				case <-stop:
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := in.Read(buf)
			if ctx.Err() != nil {
				return
			}
			if n > 0 {
				if _, werr := t.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	copyErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, t)
		copyErr <- err
	}()
	select {
	case err := <-copyErr:
		if err != nil && !errors.Is(err, ErrClosed) {
			return ExitStatus{}, fmt.Errorf("pty: attach: output: %w", err)
		}
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
	return t.Wait(ctx)
}
