package pty

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

const wrapperEnv = "PAASKIT_PTY_WRAPPER"

// wrapperMain is examples/ptywrap's body, run by a re-executed test binary.
func wrapperMain() int {
	args := os.Args[len(os.Args)-1]
	argv := strings.Split(args, "\x1f")
	st, err := ServeWrapper(context.Background(), exec.Command(argv[0], argv[1:]...), Config{KillAfter: 200 * time.Millisecond}, os.Stdin, os.Stdout)
	if err != nil {
		os.Stderr.WriteString("wrapper: " + err.Error() + "\n")
	}
	return st.Code
}

func wrapperCmd(argv ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$", strings.Join(argv, "\x1f"))
	cmd.Env = append(os.Environ(), wrapperEnv+"=1")
	cmd.Stderr = os.Stderr
	return cmd
}

func startWrapped(t *testing.T, argv ...string) *Wrapped {
	t.Helper()
	w, err := StartWrapper(wrapperCmd(argv...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.Hangup()
		io.Copy(io.Discard, w)
	})
	return w
}

func TestWrapperBash(t *testing.T) {
	w := startWrapped(t, "/bin/bash", "--norc", "--noprofile", "-i")
	w.Write([]byte("echo $((6*7))\n"))
	readUntil(t, w, "42\r\n")
	w.Write([]byte("exit 3\n"))
	io.Copy(io.Discard, w)
	if st := waitT(t, w); st.Code != 3 {
		t.Fatalf("status %v, want 3", st)
	}
}

func TestWrapperResizeAndSignal(t *testing.T) {
	w := startWrapped(t, "/bin/sh", "-c", "trap 'stty size; exit 9' INT; echo ready; while :; do sleep 0.05; done")
	readUntil(t, w, "ready")
	if err := w.Resize(WindowSize{Rows: 33, Cols: 111}); err != nil {
		t.Fatal(err)
	}
	if err := w.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	readUntil(t, w, "33 111")
	io.Copy(io.Discard, w)
	if st := waitT(t, w); st.Code != 9 {
		t.Fatalf("status %v, want 9", st)
	}
}

func TestWrapperTenMegabytes(t *testing.T) {
	w := startWrapped(t, "/bin/sh", "-c", "head -c 10000000 /dev/zero; printf END")
	b, err := io.ReadAll(w)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 10000003 || !bytes.HasSuffix(b, []byte("END")) {
		t.Fatalf("got %d bytes, want 10000003 ending END", len(b))
	}
	if st := waitT(t, w); st.Code != 0 {
		t.Fatal(st)
	}
}

func TestWrapperSignalledStatus(t *testing.T) {
	w := startWrapped(t, "/bin/sh", "-c", "echo ready; exec sleep 100")
	readUntil(t, w, "ready")
	w.Signal(syscall.SIGTERM)
	io.Copy(io.Discard, w)
	if st := waitT(t, w); st.Signal != syscall.SIGTERM || st.Code != 143 {
		t.Fatalf("status %v, want killed by TERM", st)
	}
}

// rawWrapper starts the wrapper with raw pipes, for frames Wrapped would
// never send.
func rawWrapper(t *testing.T, argv ...string) (io.WriteCloser, *bufio.Reader, *exec.Cmd) {
	cmd := wrapperCmd(argv...)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	return in, bufio.NewReader(out), cmd
}

func expectFrame(t *testing.T, r *bufio.Reader, typ byte, contains string) []byte {
	t.Helper()
	for {
		got, p, _, err := readFrame(r, nil)
		if err != nil {
			t.Fatalf("waiting for a %q frame with %q: %v", typ, contains, err)
		}
		if got == typ && strings.Contains(string(p), contains) {
			return p
		}
	}
}

func TestWrapperRefusesBadFrames(t *testing.T) {
	in, out, _ := rawWrapper(t, "cat")
	bad := []struct {
		typ     byte
		payload []byte
		want    string
	}{
		{FrameResize, []byte{0, 0, 0, 80}, "out of range"},
		{FrameResize, []byte{0xff, 0xff, 0xff, 0xff}, "out of range"},
		{FrameResize, []byte{0, 1}, "want 4"},
		{FrameSignal, []byte("NOPE"), "unknown signal"},
		{'?', nil, "unknown type"},
	}
	for _, b := range bad {
		writeFrame(in, b.typ, b.payload)
		expectFrame(t, out, FrameError, b.want)
	}
	// The session survived every refusal.
	writeFrame(in, FrameInput, []byte("still here\n"))
	expectFrame(t, out, FrameOutput, "still here")
	// An oversized length is a broken stream: refused, and the session is
	// hung up.
	var h [5]byte
	h[0] = FrameInput
	binary.BigEndian.PutUint32(h[1:], MaxFrame+1)
	in.Write(h[:])
	expectFrame(t, out, FrameError, "over MaxFrame")
	p := expectFrame(t, out, FrameExit, "")
	if sig := string(p[4:]); sig != "HUP" {
		t.Fatalf("exit frame %q, want killed by HUP", p)
	}
}

func TestWrapperClientGoneHangsUp(t *testing.T) {
	in, out, cmd := rawWrapper(t, "/bin/sh", "-c", "echo ready; exec sleep 100")
	expectFrame(t, out, FrameOutput, "ready")
	in.Close()
	expectFrame(t, out, FrameExit, "HUP")
	if err := cmd.Wait(); err == nil || cmd.ProcessState.ExitCode() != 129 {
		t.Fatalf("wrapper exit: %v, want 129", err)
	}
}

func TestWrappedInputAfterExit(t *testing.T) {
	w := startWrapped(t, "true")
	io.Copy(io.Discard, w)
	waitT(t, w)
	if _, err := w.Write([]byte("late")); !errors.Is(err, ErrExited) {
		t.Fatalf("write after exit: %v, want ErrExited", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{'i', 0, 0, 0, 2, 'h', 'i'})
	f.Add([]byte{'w', 0, 0, 0, 4, 0, 24, 0, 80})
	f.Add([]byte{'x', 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		var buf []byte
		for {
			typ, p, nb, err := readFrame(r, buf)
			buf = nb
			if err != nil {
				return
			}
			if len(p) > MaxFrame {
				t.Fatal("payload over MaxFrame")
			}
			if typ == FrameResize {
				parseSize(p)
			}
		}
	})
}
