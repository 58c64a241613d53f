package pty

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	cpty "github.com/creack/pty"
	"golang.org/x/sys/unix"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAttachFromATerminal plays the user: a real terminal pair stands for
// the caller's terminal; Attach must put it in raw mode, pass its size on,
// carry keystrokes both ways and restore it.
func TestAttachFromATerminal(t *testing.T) {
	user, callerTTY, err := cpty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer user.Close()
	defer callerTTY.Close()
	if err := cpty.Setsize(user, &cpty.Winsize{Rows: 33, Cols: 99}); err != nil {
		t.Fatal(err)
	}
	before, _ := unix.IoctlGetTermios(int(callerTTY.Fd()), unix.TCGETS)
	s := startT(t, Config{}, "/bin/sh", "-c", "read x; stty size; echo got $x; exit 5")
	var out syncBuffer
	type result struct {
		st  ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := Attach(context.Background(), callerTTY, &out, s)
		done <- result{st, err}
	}()
	eventually(t, "raw mode", func() bool {
		tio, _ := unix.IoctlGetTermios(int(callerTTY.Fd()), unix.TCGETS)
		return tio.Lflag&unix.ICANON == 0
	})
	// In raw mode Enter arrives as CR, which the session's own terminal
	// turns into a newline, as a terminal emulator's would.
	user.Write([]byte("hi\r"))
	var r result
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("Attach did not return; output so far %q", out.String())
	}
	if r.err != nil || r.st.Code != 5 {
		t.Fatalf("Attach: %v, %v; want exit 5", r.st, r.err)
	}
	if got := out.String(); !strings.Contains(got, "33 99") || !strings.Contains(got, "got hi") {
		t.Fatalf("output %q lacks the forwarded size or the typed line", got)
	}
	after, _ := unix.IoctlGetTermios(int(callerTTY.Fd()), unix.TCGETS)
	if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag {
		t.Fatalf("the caller's terminal was not restored: %+v, was %+v", after, before)
	}
}
