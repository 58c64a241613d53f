package pty

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func startT(t testing.TB, cfg Config, name string, args ...string) *Session {
	t.Helper()
	s, err := Start(exec.Command(name, args...), cfg)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// readUntil reads from r until the output contains want, and returns all
// of it; it fails the test at EOF or error.
func readUntil(t testing.TB, r io.Reader, want string) string {
	t.Helper()
	var buf bytes.Buffer
	p := make([]byte, 4096)
	for !strings.Contains(buf.String(), want) {
		n, err := r.Read(p)
		buf.Write(p[:n])
		if os.Getenv("DBG") != "" {
			println("readUntil got", strconv.Quote(buf.String()))
		}
		if err != nil {
			t.Fatalf("read until %q: %v; got %q", want, err, buf.String())
		}
	}
	return buf.String()
}

func waitT(t testing.TB, s interface {
	Wait(context.Context) (ExitStatus, error)
}) ExitStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := s.Wait(ctx)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	return st
}

func needProgram(t testing.TB, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: apt-get install %s", path, pkg)
	}
}

func TestBashInteractive(t *testing.T) {
	needProgram(t, "/bin/bash", "bash")
	s := startT(t, Config{}, "/bin/bash", "--norc", "--noprofile", "-i")
	if _, err := s.Write([]byte("echo $((6*7))\n")); err != nil {
		t.Fatal(err)
	}
	readUntil(t, s, "42\r\n")
	if _, err := s.Write([]byte("exit 3\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, s); err != nil {
		t.Fatal(err)
	}
	if st := waitT(t, s); st.Code != 3 || st.Signal != 0 {
		t.Fatalf("status %v, want exit 3", st)
	}
}

func TestPythonInteractive(t *testing.T) {
	needProgram(t, "/usr/bin/python3", "python3")
	s := startT(t, Config{}, "/usr/bin/python3", "-i", "-q")
	readUntil(t, s, ">>> ")
	if _, err := s.Write([]byte("6*7\n")); err != nil {
		t.Fatal(err)
	}
	readUntil(t, s, "42\r\n")
	if _, err := s.Write([]byte("raise SystemExit(5)\n")); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, s)
	if st := waitT(t, s); st.Code != 5 {
		t.Fatalf("status %v, want exit 5", st)
	}
}

func TestSttySizeAfterResize(t *testing.T) {
	s := startT(t, Config{Size: WindowSize{Rows: 30, Cols: 100}}, "/bin/sh", "-c", "stty size; read x; stty size")
	readUntil(t, s, "30 100")
	if err := s.Resize(WindowSize{Rows: 51, Cols: 173}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Size(); err != nil || got != (WindowSize{Rows: 51, Cols: 173}) {
		t.Fatalf("Size() = %v, %v", got, err)
	}
	s.Write([]byte("\n"))
	readUntil(t, s, "51 173")
}

func TestTTYNamesPts(t *testing.T) {
	s := startT(t, Config{}, "tty")
	out, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimSpace(string(out))
	if !strings.HasPrefix(name, "/dev/pts/") || name != s.TTY() {
		t.Fatalf("tty printed %q, session says %q", name, s.TTY())
	}
	if st := waitT(t, s); st.Code != 0 {
		t.Fatalf("tty: %v", st)
	}
}

func TestTenMegabytesThenExit(t *testing.T) {
	// The child writes 10 MB and exits at once: the tail it wrote just
	// before exiting must arrive, not be lost to the master's EIO.
	s := startT(t, Config{}, "/bin/sh", "-c", "head -c 10000000 /dev/zero; printf END")
	var tail [3]byte
	var n int64
	buf := make([]byte, 32<<10)
	for {
		k, err := s.Read(buf)
		if k > 0 {
			n += int64(k)
			if k >= 3 {
				copy(tail[:], buf[k-3:k])
			} else {
				copy(tail[:], append(tail[k:], buf[:k]...))
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n != 10000003 || string(tail[:]) != "END" {
		t.Fatalf("got %d bytes ending %q, want 10000003 ending END", n, tail)
	}
	if st := waitT(t, s); st.Code != 0 {
		t.Fatalf("status %v", st)
	}
}

func TestCtrlCIsSIGINT(t *testing.T) {
	s := startT(t, Config{}, "/bin/sh", "-c", "trap 'echo got-INT; exit 7' INT; echo ready; while :; do sleep 0.05; done")
	readUntil(t, s, "ready")
	s.Write([]byte{0x03})
	readUntil(t, s, "got-INT")
	io.Copy(io.Discard, s)
	if st := waitT(t, s); st.Code != 7 {
		t.Fatalf("status %v, want 7 from the INT trap", st)
	}
}

func TestSignalReachesForegroundJob(t *testing.T) {
	s := startT(t, Config{}, "/bin/sh", "-c", "echo ready; exec sleep 100")
	readUntil(t, s, "ready")
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, s)
	if st := waitT(t, s); st.Signal != syscall.SIGTERM || st.Code != 128+15 {
		t.Fatalf("status %v, want killed by TERM", st)
	}
	if err := s.Signal(syscall.SIGTERM); !errors.Is(err, ErrExited) {
		t.Fatalf("signal after exit: %v, want ErrExited", err)
	}
}

func TestInputAfterExit(t *testing.T) {
	s := startT(t, Config{}, "true")
	io.Copy(io.Discard, s)
	waitT(t, s)
	if _, err := s.Write([]byte("late\n")); !errors.Is(err, ErrExited) {
		t.Fatalf("write after exit: %v, want ErrExited", err)
	}
	if err := s.Resize(WindowSize{Rows: 10, Cols: 10}); !errors.Is(err, ErrExited) {
		t.Fatalf("resize after exit: %v, want ErrExited", err)
	}
	s.Close(context.Background())
	if _, err := s.Read(make([]byte, 10)); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v, want ErrClosed", err)
	}
}

func TestBadWindowSizes(t *testing.T) {
	for _, ws := range []WindowSize{{0, 80}, {24, 0}, {65535, 80}, {24, 65535}, {MaxDimension + 1, 1}} {
		if _, err := Start(exec.Command("true"), Config{Size: ws}); !errors.Is(err, ErrBadSize) {
			t.Errorf("start with %v: %v, want ErrBadSize", ws, err)
		}
	}
	s := startT(t, Config{}, "cat")
	for _, ws := range []WindowSize{{0, 0}, {0, 80}, {65535, 65535}} {
		if err := s.Resize(ws); !errors.Is(err, ErrBadSize) {
			t.Errorf("resize to %v: %v, want ErrBadSize", ws, err)
		}
	}
	if got, _ := s.Size(); got != (WindowSize{DefaultRows, DefaultCols}) {
		t.Fatalf("a refused resize changed the size to %v", got)
	}
}

func TestStartRefusals(t *testing.T) {
	if _, err := Start(exec.Command("/nonexistent/program"), Config{}); err == nil {
		t.Fatal("started a program that does not exist")
	}
	if _, err := Start(&exec.Cmd{}, Config{}); err == nil {
		t.Fatal("started an empty command")
	}
	refused := errors.New("app is gone")
	if _, err := Start(exec.Command("true"), Config{KeepAlive: func() (func(), error) { return nil, refused }}); !errors.Is(err, refused) {
		t.Fatalf("keep-alive refusal: %v", err)
	}
}

func TestKeepAliveReleasedAfterExit(t *testing.T) {
	released := make(chan struct{})
	s := startT(t, Config{KeepAlive: func() (func(), error) { return func() { close(released) }, nil }}, "true")
	io.Copy(io.Discard, s)
	waitT(t, s)
	<-released
}

func TestCloseHangsUpAChildIgnoringSIGHUP(t *testing.T) {
	// The child ignores SIGHUP; Close must still end it (SIGKILL after
	// KillAfter) and report how.
	s := startT(t, Config{KillAfter: 100 * time.Millisecond}, "/bin/sh", "-c", "trap '' HUP; echo ready; while :; do sleep 0.05; done")
	readUntil(t, s, "ready")
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := waitT(t, s); st.Signal != syscall.SIGKILL {
		t.Fatalf("status %v, want killed by KILL", st)
	}
}

func TestCloseSendsSIGHUP(t *testing.T) {
	dir := t.TempDir()
	s := startT(t, Config{}, "/bin/sh", "-c", "trap 'echo hup > "+dir+"/got; exit 0' HUP; echo ready; while :; do sleep 0.05; done")
	readUntil(t, s, "ready")
	s.Close(context.Background())
	b, err := os.ReadFile(dir + "/got")
	if err != nil || string(b) != "hup\n" {
		t.Fatalf("child did not see SIGHUP: %q, %v", b, err)
	}
}

func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestTenThousandSessions opens and closes sessions and checks that no
// file descriptor or goroutine is left behind. The suite opens 1,000 (a
// leak of anything per session shows as surely, at a tenth of the race
// detector's time); bench/sections/60-pty.sh runs it with
// PAASKIT_PTY_SESSIONS=10000, the figure.
func TestTenThousandSessions(t *testing.T) {
	n := 1000
	if v := os.Getenv("PAASKIT_PTY_SESSIONS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	before := openFDs(t)
	others := goleak.IgnoreCurrent() // goroutines of earlier tests
	ctx := context.Background()
	for i := range n {
		s, err := Start(exec.Command("/bin/true"), Config{})
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		if i%2 == 0 {
			// Half read to EOF, half are closed without reading.
			io.Copy(io.Discard, s)
		}
		if err := s.Close(ctx); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
	}
	runtime.GC()
	after := openFDs(t)
	if after > before {
		t.Fatalf("%d sessions leaked %d file descriptors", n, after-before)
	}
	goleak.VerifyNone(t, others)
	t.Logf("%d sessions opened and closed: %d file descriptors before, %d after; no goroutine left", n, before, after)
}
