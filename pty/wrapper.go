package pty

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
)

// Frame types of the wrapper protocol (see the package doc, "Wrapper
// protocol").
const (
	FrameInput  = 'i' // client → wrapper: bytes typed into the terminal
	FrameResize = 'w' // client → wrapper: rows, cols (uint16 each, big-endian)
	FrameSignal = 's' // client → wrapper: a signal name, e.g. "INT"
	FrameHangup = 'h' // client → wrapper: hang up (SIGHUP, then SIGKILL)
	FrameOutput = 'o' // wrapper → client: bytes the command wrote
	FrameError  = 'e' // wrapper → client: a refused frame, UTF-8 text
	FrameExit   = 'x' // wrapper → client: code (int32), then a signal name
)

// MaxFrame bounds a wrapper frame's payload; a longer length is a broken
// stream.
const MaxFrame = 1 << 20

// ErrFrame is wrapped by errors about a malformed wrapper stream.
var ErrFrame = errors.New("pty: malformed wrapper frame")

// writeFrame writes one frame: type, payload length (uint32 big-endian),
// payload.
func writeFrame(w io.Writer, typ byte, payload []byte) error {
	var h [5]byte
	h[0] = typ
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// readFrame reads one frame into buf (grown as needed) and returns its type
// and payload, which aliases buf.
func readFrame(r io.Reader, buf []byte) (byte, []byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, buf, fmt.Errorf("%w: truncated header", ErrFrame)
		}
		return 0, nil, buf, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > MaxFrame {
		return 0, nil, buf, fmt.Errorf("%w: type %q payload of %d bytes, over MaxFrame (%d)", ErrFrame, h[0], n, MaxFrame)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	p := buf[:n]
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, buf, fmt.Errorf("%w: type %q truncated payload (want %d bytes): %v", ErrFrame, h[0], n, err)
	}
	return h[0], p, buf, nil
}

func exitPayload(st ExitStatus) []byte {
	p := binary.BigEndian.AppendUint32(nil, uint32(int32(st.Code)))
	if st.Signal != 0 {
		p = append(p, SignalName(st.Signal)...)
	}
	return p
}

func parseSize(p []byte) (WindowSize, error) {
	if len(p) != 4 {
		return WindowSize{}, fmt.Errorf("%w: resize payload of %d bytes, want 4", ErrFrame, len(p))
	}
	ws := WindowSize{Rows: binary.BigEndian.Uint16(p), Cols: binary.BigEndian.Uint16(p[2:])}
	return ws, ws.Validate()
}

// ServeWrapper is the wrapper program's body: it starts cmd in a new
// terminal (cfg as for Start), reads client frames from in and writes the
// command's output and then its exit status as frames to out, and returns
// the exit status once the exit frame is written. A frame it refuses (a bad
// size, an unknown signal, an unknown type) is answered with an error frame
// and changes nothing. A broken stream on in (truncated, oversized) or EOF
// on in hangs the session up: the client is gone.
func ServeWrapper(ctx context.Context, cmd *exec.Cmd, cfg Config, in io.Reader, out io.Writer) (ExitStatus, error) {
	s, err := Start(cmd, cfg)
	if err != nil {
		return ExitStatus{}, err
	}
	defer s.Close(context.Background())
	var wmu sync.Mutex // frames from the input goroutine (errors) and the output pump
	bw := bufio.NewWriterSize(out, 64<<10)
	send := func(typ byte, p []byte, flush bool) error {
		wmu.Lock()
		defer wmu.Unlock()
		if err := writeFrame(bw, typ, p); err != nil {
			return err
		}
		if flush {
			return bw.Flush()
		}
		return nil
	}
	go func() {
		br := bufio.NewReaderSize(in, 64<<10)
		var buf []byte
		for {
			typ, p, nb, err := readFrame(br, buf)
			buf = nb
			if err != nil {
				// The client is gone (or talks nonsense): hang up.
				if !errors.Is(err, io.EOF) {
					_ = send(FrameError, []byte(err.Error()), true)
				}
				_ = s.Close(ctx)
				return
			}
			if ferr := wrapperInput(s, typ, p); ferr != nil {
				if errors.Is(ferr, ErrClosed) {
					return
				}
				if send(FrameError, []byte(ferr.Error()), true) != nil {
					return
				}
			}
		}
	}()
	stop := context.AfterFunc(ctx, func() { _ = s.Close(context.Background()) })
	defer stop()
	buf := make([]byte, 32<<10)
	var outErr error
	for {
		n, err := s.Read(buf)
		if n > 0 && outErr == nil {
			// Flush when the terminal has nothing more right now: a
			// keystroke's echo goes out at once, a flood in big writes.
			outErr = send(FrameOutput, buf[:n], n < len(buf))
		}
		if err != nil {
			break
		}
	}
	st, err := s.Wait(context.Background())
	if err != nil {
		return st, err
	}
	if outErr == nil {
		outErr = send(FrameExit, exitPayload(st), true)
	}
	if outErr != nil {
		return st, fmt.Errorf("pty: wrapper: write to client: %w", outErr)
	}
	return st, nil
}

// wrapperInput applies one client frame to s.
func wrapperInput(s *Session, typ byte, p []byte) error {
	switch typ {
	case FrameInput:
		_, err := s.Write(p)
		return err
	case FrameResize:
		ws, err := parseSize(p)
		if err != nil {
			return err
		}
		return s.Resize(ws)
	case FrameSignal:
		sig, err := ParseSignal(string(p))
		if err != nil {
			return err
		}
		return s.Signal(sig)
	case FrameHangup:
		return s.Close(context.Background())
	default:
		return fmt.Errorf("%w: unknown type %q", ErrFrame, typ)
	}
}

// Wrapped is a session behind the wrapper program, seen from its parent: a
// Terminal over the wrapper's stdin and stdout.
type Wrapped struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	wmu   sync.Mutex

	rbuf    []byte
	pending []byte // output payload not yet returned by Read
	exited  chan struct{}
	status  ExitStatus
	readErr error // set once Read has reached the end
	errs    chan string
}

// StartWrapper starts cmd, which must run the wrapper program (for
// example examples/ptywrap, possibly inside a runner sandbox), with pipes
// on its stdin and stdout; its stderr is left as set. The wrapper's
// refusals (FrameError) are delivered on Errors.
func StartWrapper(cmd *exec.Cmd) (*Wrapped, error) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("pty: start wrapper %s: %w", cmd.Path, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("pty: start wrapper %s: %w", cmd.Path, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("pty: start wrapper %s: %w", cmd.Path, err)
	}
	return &Wrapped{cmd: cmd, stdin: stdin, out: bufio.NewReaderSize(stdout, 64<<10),
		exited: make(chan struct{}), errs: make(chan string, 16)}, nil
}

// Errors delivers the text of frames the wrapper refused. It is buffered;
// refusals are dropped while it is full.
func (w *Wrapped) Errors() <-chan string { return w.errs }

// Read returns the command's output; io.EOF after the exit frame. Call it
// from one goroutine at a time; Wait needs Read to reach io.EOF.
func (w *Wrapped) Read(p []byte) (int, error) {
	for len(w.pending) == 0 {
		if w.readErr != nil {
			return 0, w.readErr
		}
		typ, payload, nb, err := readFrame(w.out, w.rbuf)
		w.rbuf = nb
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: the wrapper exited without an exit frame", ErrFrame)
			}
			w.readErr = err
			w.finish(ExitStatus{Code: -1})
			return 0, err
		}
		switch typ {
		case FrameOutput:
			w.pending = payload
		case FrameError:
			select {
			case w.errs <- string(payload):
			default:
			}
		case FrameExit:
			if len(payload) < 4 {
				w.readErr = fmt.Errorf("%w: exit payload of %d bytes", ErrFrame, len(payload))
				w.finish(ExitStatus{Code: -1})
				return 0, w.readErr
			}
			st := ExitStatus{Code: int(int32(binary.BigEndian.Uint32(payload)))}
			if len(payload) > 4 {
				if sig, err := ParseSignal(string(payload[4:])); err == nil {
					st.Signal = sig
				} else if n, err := strconv.Atoi(string(payload[4:])); err == nil {
					st.Signal = syscall.Signal(n)
				}
			}
			w.readErr = io.EOF
			w.finish(st)
		default:
			w.readErr = fmt.Errorf("%w: unknown type %q from the wrapper", ErrFrame, typ)
			w.finish(ExitStatus{Code: -1})
			return 0, w.readErr
		}
	}
	n := copy(p, w.pending)
	w.pending = w.pending[n:]
	return n, nil
}

func (w *Wrapped) finish(st ExitStatus) {
	select {
	case <-w.exited:
		return
	default:
	}
	w.status = st
	_ = w.stdin.Close()
	_ = w.cmd.Wait()
	close(w.exited)
}

func (w *Wrapped) send(typ byte, p []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	select {
	case <-w.exited:
		return ErrExited
	default:
	}
	if err := writeFrame(w.stdin, typ, p); err != nil {
		return fmt.Errorf("pty: write to wrapper: %w", err)
	}
	return nil
}

// Write types p into the wrapped terminal (in frames of at most MaxFrame).
func (w *Wrapped) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n := min(len(p)-done, MaxFrame)
		if err := w.send(FrameInput, p[done:done+n]); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// Resize sends a window size. The wrapper refuses a size outside 1 to
// MaxDimension; so does Resize, before sending.
func (w *Wrapped) Resize(size WindowSize) error {
	if err := size.Validate(); err != nil {
		return err
	}
	p := binary.BigEndian.AppendUint16(nil, size.Rows)
	return w.send(FrameResize, binary.BigEndian.AppendUint16(p, size.Cols))
}

// Signal asks the wrapper to send sig to the terminal's foreground job.
func (w *Wrapped) Signal(sig syscall.Signal) error {
	return w.send(FrameSignal, []byte(SignalName(sig)))
}

// Hangup asks the wrapper to hang the session up.
func (w *Wrapped) Hangup() error { return w.send(FrameHangup, nil) }

// Wait returns the exit status once Read has reached the exit frame.
func (w *Wrapped) Wait(ctx context.Context) (ExitStatus, error) {
	select {
	case <-w.exited:
		if w.readErr != nil && !errors.Is(w.readErr, io.EOF) {
			return w.status, w.readErr
		}
		return w.status, nil
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
}
