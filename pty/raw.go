package pty

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Raw is a terminal put in raw mode by MakeRaw: keystrokes reach the
// program one by one, unechoed and untranslated (Ctrl-C is a byte, not a
// signal), and output is written as is. Restore puts the terminal back.
type Raw struct {
	fd       int
	saved    unix.Termios
	once     sync.Once
	err      error
	sigs     chan os.Signal
	stopSigs chan struct{}
	sigDone  chan struct{}
}

// rawFlags are the termios flags MakeRaw clears, the ones ep.io cleared
// (after tty.setraw): input translation and flow control, output
// processing, and echo, signals and line editing.
const (
	rawIflag = unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXANY | unix.IXOFF
	rawOflag = unix.OPOST
	rawLflag = unix.ECHO | unix.ISIG | unix.ICANON | unix.ECHOE | unix.ECHOK | unix.ECHONL | unix.IEXTEN
)

// MakeRaw puts the terminal f in raw mode (clearing ISTRIP, INLCR, IGNCR,
// ICRNL, IXON, IXANY and IXOFF; OPOST; ECHO, ISIG, ICANON, ECHOE, ECHOK,
// ECHONL and IEXTEN; reads return after one byte) and returns a Raw whose
// Restore puts back the settings it found. Until Restore, SIGTERM, SIGHUP,
// SIGINT and SIGQUIT sent to the process restore the terminal first and
// are then re-raised with their default action, so a killed client never
// leaves the user's shell in raw mode. Callers restore on return and on
// panic with defer r.Restore().
func MakeRaw(f *os.File) (*Raw, error) {
	fd := int(f.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("pty: raw mode for %s: not a terminal: %w", f.Name(), err)
	}
	r := &Raw{fd: fd, saved: *t}
	raw := *t
	raw.Iflag &^= rawIflag
	raw.Oflag &^= rawOflag
	raw.Lflag &^= rawLflag
	raw.Cc[unix.VMIN] = 1
	raw.Cc[unix.VTIME] = 0
	r.sigs = make(chan os.Signal, 1)
	r.stopSigs = make(chan struct{})
	r.sigDone = make(chan struct{})
	signal.Notify(r.sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT)
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		signal.Stop(r.sigs)
		return nil, fmt.Errorf("pty: raw mode for %s: %w", f.Name(), err)
	}
	go r.watchSignals()
	return r, nil
}

// watchSignals restores the terminal on a fatal signal and re-raises it.
func (r *Raw) watchSignals() {
	defer close(r.sigDone)
	select {
	case sig := <-r.sigs:
		_ = r.restore()
		signal.Stop(r.sigs)
		s := sig.(syscall.Signal)
		signal.Reset(s)
		_ = syscall.Kill(os.Getpid(), s)
	case <-r.stopSigs:
	}
}

// Restore puts the terminal's settings back as MakeRaw found them. It is
// safe to call more than once; later calls return the first one's result.
func (r *Raw) Restore() error {
	err := r.restore()
	select {
	case <-r.stopSigs:
	default:
		signal.Stop(r.sigs)
		close(r.stopSigs)
	}
	<-r.sigDone
	return err
}

func (r *Raw) restore() error {
	r.once.Do(func() {
		// TCSETSW would wait for output to drain, which a hung peer may
		// never let happen; TCSETS restores at once.
		r.err = unix.IoctlSetTermios(r.fd, unix.TCSETS, &r.saved)
		if r.err != nil {
			r.err = fmt.Errorf("pty: restore terminal settings: %w", r.err)
		}
	})
	return r.err
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// TerminalSize returns the window size of the terminal f.
func TerminalSize(f *os.File) (WindowSize, error) {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return WindowSize{}, fmt.Errorf("pty: window size of %s: %w", f.Name(), err)
	}
	if ws.Row == 0 || ws.Col == 0 {
		return WindowSize{}, fmt.Errorf("pty: window size of %s: %w: %dx%d", f.Name(), ErrBadSize, ws.Row, ws.Col)
	}
	return WindowSize{Rows: ws.Row, Cols: ws.Col}, nil
}
