package pty

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

func TestRemoteBashExitCode(t *testing.T) {
	_, ep := startServer(t, ServerConfig{})
	c := clientFor(t, ep, "alice")
	ctx := context.Background()
	rs, err := c.Run(ctx, StartRequest{Argv: []string{"/bin/bash", "--norc", "--noprofile", "-i"}})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	if _, err := rs.Write([]byte("echo hel''lo; exit 3\n")); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(rs)
	if err != nil {
		t.Fatalf("read: %v; got %q", err, out)
	}
	if !strings.Contains(string(out), "hello") {
		t.Fatalf("output %q lacks hello", out)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := rs.Wait(wctx)
	if err != nil || st.Code != 3 {
		t.Fatalf("status %v, %v; want exit 3", st, err)
	}
}

func BenchmarkRemoteOutput(b *testing.B) {
	_, ep := startServer(b, ServerConfig{})
	c := clientFor(b, ep, "alice")
	const size = 100 << 20
	b.SetBytes(size)
	buf := make([]byte, 64<<10)
	for b.Loop() {
		rs, err := c.Run(context.Background(), StartRequest{Argv: []string{"head", "-c", "104857600", "/dev/zero"}})
		if err != nil {
			b.Fatal(err)
		}
		var n int64
		for {
			k, err := rs.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		if n != size {
			b.Fatalf("got %d", n)
		}
		rs.Close()
	}
}
