package pty

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
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
// of it; it fails the test at EOF.
func readUntil(t testing.TB, r io.Reader, want string) string {
	t.Helper()
	var buf bytes.Buffer
	p := make([]byte, 4096)
	for !strings.Contains(buf.String(), want) {
		n, err := r.Read(p)
		buf.Write(p[:n])
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s.Wait(ctx)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	return st
}

func TestTenMegabytesThenExit(t *testing.T) {
	s := startT(t, Config{}, "head", "-c", "10000000", "/dev/zero")
	n, err := io.Copy(io.Discard, s)
	if err != nil {
		t.Fatal(err)
	}
	if n != 10000000 {
		t.Fatalf("got %d bytes, want 10000000", n)
	}
	if st := waitT(t, s); st.Code != 0 {
		t.Fatalf("status %v", st)
	}
	_ = syscall.Getpid
}

func BenchmarkLocalOutput(b *testing.B) {
	const size = 100 << 20
	b.SetBytes(size)
	for b.Loop() {
		s, err := Start(exec.Command("head", "-c", "104857600", "/dev/zero"), Config{})
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 64<<10)
		var n int64
		for {
			k, err := s.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		if n != size {
			b.Fatalf("got %d", n)
		}
		s.Close(context.Background())
	}
}
