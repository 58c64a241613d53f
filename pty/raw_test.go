package pty

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

const rawHelperEnv = "PAASKIT_PTY_RAW_HELPER"

// rawHelper runs in a re-executed test binary on a session's terminal: it
// puts the terminal in raw mode and then returns, panics or waits for a
// signal, as PAASKIT_PTY_RAW_HELPER says.
func rawHelper() int {
	r, err := MakeRaw(os.Stdin)
	if err != nil {
		fmt.Println("raw:", err)
		return 1
	}
	fmt.Print("raw\n")
	if os.Getenv(rawHelperEnv) != "sigterm" {
		// Wait for the test to have looked at the settings.
		os.Stdin.Read(make([]byte, 1))
	}
	switch os.Getenv(rawHelperEnv) {
	case "return":
		r.Restore()
		fmt.Print("restored\n")
		return 0
	case "panic":
		defer r.Restore()
		panic("boom")
	case "sigterm":
		select {}
	}
	return 1
}

func termiosOf(t *testing.T, f *os.File) *unix.Termios {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return tio
}

func TestRawModeRestored(t *testing.T) {
	for _, mode := range []string{"return", "panic", "sigterm"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), rawHelperEnv+"="+mode)
			s2, err := Start(cmd, Config{DrainTimeout: 10e6})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s2.Close(t.Context()) })
			// Hold the terminal's slave side to read its settings.
			slave, err := os.OpenFile(s2.TTY(), os.O_RDWR|syscall.O_NOCTTY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer slave.Close()
			cooked := *termiosOf(t, slave)
			readUntil(t, s2, "raw\n")
			raw := termiosOf(t, slave)
			if raw.Iflag&rawIflag != 0 || raw.Oflag&rawOflag != 0 || raw.Lflag&rawLflag != 0 {
				t.Fatalf("raw mode left flags set: iflag %#x oflag %#x lflag %#x", raw.Iflag&rawIflag, raw.Oflag&rawOflag, raw.Lflag&rawLflag)
			}
			if cooked.Lflag&unix.ECHO == 0 || cooked.Lflag&unix.ICANON == 0 || cooked.Oflag&unix.OPOST == 0 {
				t.Fatalf("the terminal did not start cooked: %+v", cooked)
			}
			if mode == "sigterm" {
				syscall.Kill(s2.Pid(), syscall.SIGTERM)
			} else {
				s2.Write([]byte("g"))
			}
			st := waitT(t, s2)
			switch mode {
			case "return":
				if st.Code != 0 {
					t.Fatalf("helper: %v", st)
				}
			case "panic":
				if st.Code != 2 {
					t.Fatalf("helper: %v, want the panic's exit 2", st)
				}
			case "sigterm":
				if st.Signal != syscall.SIGTERM {
					t.Fatalf("helper: %v, want killed by TERM (re-raised)", st)
				}
			}
			after := termiosOf(t, slave)
			if after.Iflag != cooked.Iflag || after.Oflag != cooked.Oflag || after.Lflag != cooked.Lflag {
				t.Fatalf("settings not restored after %s: got %+v, want %+v", mode, after, cooked)
			}
		})
	}
}

func TestMakeRawRefusesANonTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := MakeRaw(f); err == nil {
		t.Fatal("MakeRaw accepted a regular file")
	}
	if IsTerminal(f) {
		t.Fatal("IsTerminal(regular file)")
	}
}
