package pty

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	cpty "github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// Session defaults.
const (
	DefaultRows         = 24
	DefaultCols         = 80
	DefaultKillAfter    = 5 * time.Second
	DefaultDrainTimeout = time.Second
	// MaxDimension is the largest number of rows or columns a WindowSize
	// may have. Terminals of 65535 columns do not exist; a size that large
	// is a client bug (or an attempt to make the child allocate 4 GiB of
	// screen), so it is refused rather than passed on.
	MaxDimension = 4096
)

// Errors a session returns.
var (
	// ErrExited is returned by Write, Resize and Signal once the child has
	// exited: the input can no longer reach anyone.
	ErrExited = errors.New("pty: the child has exited")
	// ErrClosed is returned by a Session's methods after Close.
	ErrClosed = errors.New("pty: session closed")
	// ErrBadSize is wrapped by errors about a window size out of range.
	ErrBadSize = errors.New("pty: window size out of range")
)

// WindowSize is a terminal's size in character cells.
type WindowSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Validate reports whether both dimensions are between 1 and MaxDimension.
func (w WindowSize) Validate() error {
	if w.Rows < 1 || w.Cols < 1 || w.Rows > MaxDimension || w.Cols > MaxDimension {
		return fmt.Errorf("%w: %dx%d (rows x cols), want 1 to %d each", ErrBadSize, w.Rows, w.Cols, MaxDimension)
	}
	return nil
}

// ExitStatus is how a child ended.
type ExitStatus struct {
	// Code is the exit code, or 128 plus the signal number if a signal
	// killed the child (as a shell reports it).
	Code int `json:"code"`
	// Signal is the signal that killed the child, 0 if it exited.
	Signal syscall.Signal `json:"-"`
}

// String describes the status as a shell would.
func (e ExitStatus) String() string {
	if e.Signal != 0 {
		return fmt.Sprintf("killed by %s (%d)", SignalName(e.Signal), e.Code)
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// Config configures a local session. Zero values are the documented
// defaults.
type Config struct {
	// Size is the initial window size. Zero means DefaultRows x
	// DefaultCols; otherwise it must pass WindowSize.Validate.
	Size WindowSize
	// KeepAlive, if set, is called once before the child starts and the
	// release func it returns is called once after the child has exited
	// (runner.Runner.Attach fits: it keeps the app from being reaped while
	// a command runs). An error from it refuses the start. It is called on
	// the goroutine that calls Start; release runs on the session's wait
	// goroutine and must not block.
	KeepAlive func() (release func(), err error)
	// KillAfter is how long Close waits after SIGHUP before it kills the
	// child's process group with SIGKILL. Default DefaultKillAfter (5s).
	KillAfter time.Duration
	// DrainTimeout bounds how long Read keeps waiting for output after the
	// child has exited while something else (a background process it left)
	// still holds the terminal open; after it, Read returns what is
	// buffered and then io.EOF. When the child was the terminal's last
	// user, Read reaches io.EOF as soon as the output is drained, without
	// waiting. Default DefaultDrainTimeout (1s).
	DrainTimeout time.Duration
}

// Session is a command running in a new pseudo-terminal: the terminal is
// its controlling terminal and its stdin, stdout and stderr, and it leads a
// session of its own, so Ctrl-C typed into it is SIGINT to its foreground
// job and a hang-up is SIGHUP, exactly as in a terminal emulator.
//
// Read and Write may be called from different goroutines; Read from one
// goroutine at a time, Write from one at a time. Resize, Signal, Wait and
// Close are safe from any goroutine.
type Session struct {
	cfg    Config
	cmd    *exec.Cmd
	master *os.File
	rc     syscall.RawConn
	tty    string
	pid    int

	done    chan struct{} // closed once the child has been reaped
	status  ExitStatus
	waitErr error

	draining atomic.Bool   // the drain timeout passed: reads no longer wait
	finished chan struct{} // closed at EOF or Close: the drain timer is moot
	finOnce  sync.Once
	closed   atomic.Bool
	closeMu  sync.Mutex
	readMu   sync.Mutex
	more     oneRead
	fillOp   fillRead
}

// Start starts cmd in a new pseudo-terminal of cfg.Size. It sets cmd's
// Stdin, Stdout and Stderr to the terminal (replacing what was there) and
// sets Setsid, Setctty and Ctty in cmd.SysProcAttr, keeping whatever else
// is in it (credentials, namespaces from runner.Command) except Setpgid and
// Foreground, which a new session excludes (a session leader cannot change
// its process group). cmd must not have been started.
func Start(cmd *exec.Cmd, cfg Config) (*Session, error) {
	if cmd == nil || cmd.Path == "" {
		return nil, fmt.Errorf("pty: start: no command")
	}
	if cmd.Process != nil {
		return nil, fmt.Errorf("pty: start %s: already started", cmd.Path)
	}
	if cfg.Size == (WindowSize{}) {
		cfg.Size = WindowSize{Rows: DefaultRows, Cols: DefaultCols}
	}
	if err := cfg.Size.Validate(); err != nil {
		return nil, fmt.Errorf("pty: start %s: %w", cmd.Path, err)
	}
	if cfg.KillAfter < 0 || cfg.DrainTimeout < 0 {
		return nil, fmt.Errorf("pty: start %s: negative KillAfter %v or DrainTimeout %v", cmd.Path, cfg.KillAfter, cfg.DrainTimeout)
	}
	if cfg.KillAfter == 0 {
		cfg.KillAfter = DefaultKillAfter
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	master, tty, err := cpty.Open()
	if err != nil {
		return nil, fmt.Errorf("pty: start %s: open a pseudo-terminal: %w", cmd.Path, err)
	}
	// creack/pty's ioctls call Fd, which leaves the master in blocking
	// mode. Put it back in Go's netpoller (non-blocking), so a Read
	// parks its goroutine rather than a thread, Close wakes it and read
	// deadlines work; never call Fd on it again.
	master, err = pollable(master)
	if err != nil {
		tty.Close()
		return nil, fmt.Errorf("pty: start %s: %w", cmd.Path, err)
	}
	rc, err := master.SyscallConn()
	if err != nil {
		master.Close()
		tty.Close()
		return nil, fmt.Errorf("pty: start %s: %w", cmd.Path, err)
	}
	s := &Session{cfg: cfg, cmd: cmd, master: master, rc: rc, tty: tty.Name(), done: make(chan struct{}), finished: make(chan struct{})}
	s.more.fn = s.more.read
	s.fillOp.fn = s.fillOp.read
	if err := s.setSize(cfg.Size); err != nil {
		master.Close()
		tty.Close()
		return nil, fmt.Errorf("pty: start %s: %w", cmd.Path, err)
	}
	var release func()
	if cfg.KeepAlive != nil {
		if release, err = cfg.KeepAlive(); err != nil {
			master.Close()
			tty.Close()
			return nil, fmt.Errorf("pty: start %s: keep-alive: %w", cmd.Path, err)
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0 // the child's fd 0, the terminal
	cmd.SysProcAttr.Setpgid = false
	cmd.SysProcAttr.Foreground = false
	err = cmd.Start()
	// The child has its own copy; ours would keep the terminal open after
	// the child exits, and the master would never report EIO.
	tty.Close()
	if err != nil {
		master.Close()
		if release != nil {
			release()
		}
		return nil, fmt.Errorf("pty: start %s: %w", cmd.Path, err)
	}
	s.pid = cmd.Process.Pid
	go s.wait(release)
	return s, nil
}

// wait reaps the child, records its status and starts the drain timer.
func (s *Session) wait(release func()) {
	err := s.cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		err = nil
	}
	if ps := s.cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			s.status = ExitStatus{Code: 128 + int(ws.Signal()), Signal: ws.Signal()}
		} else {
			s.status = ExitStatus{Code: ps.ExitCode()}
		}
	}
	s.waitErr = err
	if release != nil {
		release()
	}
	close(s.done)
	// Normally the master reports EIO as soon as the child's output is
	// drained. If a process the child left behind holds the terminal, wake
	// the reader after DrainTimeout so it returns what is buffered and EOF.
	t := time.NewTimer(s.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.finished:
		return
	}
	s.draining.Store(true)
	_ = s.master.SetReadDeadline(time.Now())
}

// pollable returns f's file as a non-blocking *os.File registered with
// the netpoller, closing f.
func pollable(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	name := f.Name()
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set %s non-blocking: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

func (s *Session) finish() { s.finOnce.Do(func() { close(s.finished) }) }

// Pid returns the child's process id (its process group and session id
// too).
func (s *Session) Pid() int { return s.pid }

// TTY returns the name of the terminal's device, e.g. /dev/pts/3.
func (s *Session) TTY() string { return s.tty }

// Read reads the child's output. It returns io.EOF once the child has
// exited and everything it wrote has been read: the EIO a Linux master
// returns when the last user of the terminal is gone marks the end, after
// the kernel has flushed the tail. After Close it returns ErrClosed.
func (s *Session) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.readMu.Lock()
	defer s.readMu.Unlock()
	for {
		if s.closed.Load() {
			return 0, ErrClosed
		}
		if s.draining.Load() {
			return s.readNow(p)
		}
		n, err := s.fill(p)
		if n > 0 {
			return n, nil
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, syscall.EIO):
			s.finish()
			return 0, io.EOF
		case errors.Is(err, os.ErrDeadlineExceeded) && s.draining.Load():
			_ = s.master.SetReadDeadline(time.Time{})
			continue
		case errors.Is(err, os.ErrClosed):
			return 0, ErrClosed
		default:
			return 0, fmt.Errorf("pty: read output of %s: %w", s.cmd.Path, err)
		}
	}
}

// fill reads into p as much as the terminal delivers without waiting in
// between: the master hands out at most its line discipline's 4 KiB
// buffer per read(2), and the kernel refills it while we copy, so one
// trip through the netpoller (a park and a wake, two context switches)
// is spent per buffer the caller gives rather than per 4 KiB. It waits
// (in the netpoller) only while nothing at all has been read. An error
// after some bytes is left for the next call: the master repeats EIO.
func (s *Session) fill(p []byte) (int, error) {
	f := &s.fillOp
	f.p, f.n, f.err = p, 0, nil
	err := s.rc.Read(f.fn)
	n, rerr := f.n, f.err
	f.p = nil
	if n > 0 {
		return n, nil
	}
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, &os.PathError{Op: "read", Path: s.master.Name(), Err: rerr}
	}
	return 0, nil
}

// fillRead is fill's read callback and its state, made once per session
// (guarded by readMu).
type fillRead struct {
	p   []byte
	n   int
	err error
	fn  func(fd uintptr) bool // f.read, bound once
}

func (f *fillRead) read(fd uintptr) bool {
	for f.n < len(f.p) {
		k, err := unix.Read(int(fd), f.p[f.n:])
		if k > 0 {
			f.n += k
			continue
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return f.n > 0 // nothing yet: let the netpoller wait
		case err == nil:
			return true // 0 bytes: the end
		default:
			if f.n == 0 {
				f.err = err
			}
			return true
		}
	}
	return true
}

// readMore reads what the terminal holds right now into p, without
// waiting: 0 if nothing is there. A reader that has just been handed a
// piece of output uses it to gather the pieces the kernel delivers in
// 4 KiB steps into one, instead of waking its consumers for each.
func (s *Session) readMore(p []byte) int {
	if s.closed.Load() || len(p) == 0 {
		return 0
	}
	s.readMu.Lock()
	defer s.readMu.Unlock()
	s.more.p = p
	err := s.rc.Read(s.more.fn)
	n := s.more.n
	s.more.p = nil
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// oneRead is readMore's read callback and its arguments, made once per
// session: a closure made per call would be one allocation per piece of
// output. Guarded by readMu.
type oneRead struct {
	p  []byte
	n  int
	fn func(fd uintptr) bool // o.read, bound once
}

func (o *oneRead) read(fd uintptr) bool {
	o.n, _ = unix.Read(int(fd), o.p)
	return true
}

// readNow reads what is buffered without waiting: the drain timeout has
// passed, so an empty terminal is the end of the output.
func (s *Session) readNow(p []byte) (int, error) {
	var n int
	var rerr error
	err := s.rc.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), p)
		return true
	})
	if err != nil {
		if errors.Is(err, os.ErrClosed) {
			return 0, ErrClosed
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			_ = s.master.SetReadDeadline(time.Time{})
			return s.readNow(p)
		}
		return 0, err
	}
	if n > 0 {
		return n, nil
	}
	if rerr == nil || errors.Is(rerr, unix.EAGAIN) || errors.Is(rerr, unix.EIO) {
		s.finish()
		return 0, io.EOF
	}
	return 0, fmt.Errorf("pty: read output of %s: %w", s.cmd.Path, rerr)
}

// Write types p into the terminal. It returns ErrExited once the child has
// exited (nothing is written then), ErrClosed after Close. It blocks while
// the terminal's input buffer is full (the child is not reading).
func (s *Session) Write(p []byte) (int, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	if s.Exited() {
		return 0, ErrExited
	}
	n, err := s.master.Write(p)
	if err != nil {
		if errors.Is(err, os.ErrClosed) {
			return n, ErrClosed
		}
		if errors.Is(err, syscall.EIO) || s.Exited() {
			return n, ErrExited
		}
		return n, fmt.Errorf("pty: write input of %s: %w", s.cmd.Path, err)
	}
	return n, nil
}

// Resize sets the window size; the foreground job gets SIGWINCH.
func (s *Session) Resize(size WindowSize) error {
	if err := size.Validate(); err != nil {
		return fmt.Errorf("pty: resize %s: %w", s.tty, err)
	}
	if s.closed.Load() {
		return ErrClosed
	}
	if s.Exited() {
		return ErrExited
	}
	if err := s.setSize(size); err != nil {
		return fmt.Errorf("pty: resize %s to %dx%d: %w", s.tty, size.Rows, size.Cols, err)
	}
	return nil
}

func (s *Session) setSize(size WindowSize) error {
	var ierr error
	err := s.rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Rows, Col: size.Cols})
	})
	if err != nil {
		return err
	}
	return ierr
}

// Size returns the terminal's current window size.
func (s *Session) Size() (WindowSize, error) {
	var ws *unix.Winsize
	var ierr error
	err := s.rc.Control(func(fd uintptr) { ws, ierr = unix.IoctlGetWinsize(int(fd), unix.TIOCGWINSZ) })
	if err == nil {
		err = ierr
	}
	if err != nil {
		return WindowSize{}, fmt.Errorf("pty: size of %s: %w", s.tty, err)
	}
	return WindowSize{Rows: ws.Row, Cols: ws.Col}, nil
}

// Signal sends sig to the terminal's foreground process group (the job
// the user is running, as the terminal's own Ctrl-C would), or to the
// child's process group if the foreground group cannot be read.
func (s *Session) Signal(sig syscall.Signal) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if s.Exited() {
		return ErrExited
	}
	pgrp := s.pid
	var fg int
	var ierr error
	if err := s.rc.Control(func(fd uintptr) { fg, ierr = unix.IoctlGetInt(int(fd), unix.TIOCGPGRP) }); err == nil && ierr == nil && fg > 0 {
		pgrp = fg
	}
	if err := syscall.Kill(-pgrp, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return ErrExited
		}
		return fmt.Errorf("pty: signal %s to process group %d: %w", SignalName(sig), pgrp, err)
	}
	return nil
}

// Exited reports whether the child has exited.
func (s *Session) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Done is closed when the child has exited.
func (s *Session) Done() <-chan struct{} { return s.done }

// Wait waits for the child to exit and returns its status; the error is
// ctx's if ctx ends first, or why the child could not be waited for.
// Output may still be unread when Wait returns: read to io.EOF for all of
// it.
func (s *Session) Wait(ctx context.Context) (ExitStatus, error) {
	select {
	case <-s.done:
		return s.status, s.waitErr
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
}

// Close hangs up: the child's process group gets SIGHUP, then SIGKILL if
// it has not exited after KillAfter or when ctx ends, whichever is first.
// Close waits for the child to be reaped and releases the terminal; unread
// output is discarded. It is safe to call more than once and after the
// child has exited.
func (s *Session) Close(ctx context.Context) error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed.Load() {
		return nil
	}
	if !s.Exited() {
		_ = syscall.Kill(-s.pid, syscall.SIGHUP)
		_ = syscall.Kill(-s.pid, syscall.SIGCONT) // a stopped job must run to see the hang-up
		t := time.NewTimer(s.cfg.KillAfter)
		select {
		case <-s.done:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if !s.Exited() {
			_ = syscall.Kill(-s.pid, syscall.SIGKILL)
			<-s.done
		}
	}
	s.closed.Store(true)
	s.finish()
	// The group may outlive its leader (a job that ignored SIGHUP); it
	// loses its terminal now and gets SIGHUP from the kernel.
	return s.master.Close()
}
