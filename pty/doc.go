// Package pty runs commands in a pseudo-terminal: local sessions, raw mode
// for the caller's terminal, window resize, a wrapper mode that puts a pty
// over the stdin and stdout of a subprocess, and remote sessions carried over
// zmqloop. The runner's Command builds the isolated *exec.Cmd that pty runs.
//
// Status: planned; the package holds no API yet.
package pty
