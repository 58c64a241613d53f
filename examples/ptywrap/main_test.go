package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paaskit/paaskit/pty"
)

// TestWrapperProgram builds ptywrap and drives it with pty's Go client.
func TestWrapperProgram(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ptywrap")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-rows", "30", "-cols", "90", "--", "/bin/sh", "-c", "stty size; tty; read x; echo got $x; exit 6")
	cmd.Stderr = os.Stderr
	w, err := pty.StartWrapper(cmd)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("hi\n"))
	out, err := io.ReadAll(w)
	if err != nil {
		t.Fatal(err)
	}
	st, err := w.Wait(t.Context())
	if err != nil || st.Code != 6 || cmd.ProcessState.ExitCode() != 6 {
		t.Fatalf("status %v, %v; wrapper exit %d; want 6", st, err, cmd.ProcessState.ExitCode())
	}
	for _, want := range []string{"30 90", "/dev/pts/", "got hi"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("output %q lacks %q", out, want)
		}
	}
	if err := exec.Command(bin).Run(); err == nil {
		t.Fatal("ptywrap without a command succeeded")
	}
}
