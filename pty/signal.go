package pty

import (
	"fmt"
	"strings"
	"syscall"
)

// signals are the signals a remote or wrapped session may send, by the
// names the protocols use (SSH's, without "SIG").
var signals = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
	"KILL": syscall.SIGKILL, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
	"TERM": syscall.SIGTERM, "CONT": syscall.SIGCONT, "STOP": syscall.SIGSTOP,
	"TSTP": syscall.SIGTSTP, "WINCH": syscall.SIGWINCH, "ALRM": syscall.SIGALRM,
	"PIPE": syscall.SIGPIPE, "ABRT": syscall.SIGABRT,
}

// ParseSignal returns the signal named name ("INT", "SIGINT", any case).
// Only the signals a user can send from a terminal or SSH are known.
func ParseSignal(name string) (syscall.Signal, error) {
	n := strings.TrimPrefix(strings.ToUpper(name), "SIG")
	if s, ok := signals[n]; ok {
		return s, nil
	}
	return 0, fmt.Errorf("pty: unknown signal %q (want one of HUP INT QUIT KILL USR1 USR2 TERM CONT STOP TSTP WINCH ALRM PIPE ABRT)", name)
}

// SignalName returns the protocol name of sig ("INT"), or its number.
func SignalName(sig syscall.Signal) string {
	for n, s := range signals {
		if s == sig {
			return n
		}
	}
	return fmt.Sprintf("%d", int(sig))
}
