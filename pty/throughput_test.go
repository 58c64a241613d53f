package pty

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The output benchmarks: one child program, three readers, two terminal
// modes, all in one run so the figures are ratios against the kernel's own
// ceiling measured next to them on the same noisy machine.
//
// The child (ptyflood, below) writes outputSize bytes to its stdout, the
// terminal, as lines of 79 'x' and a newline in write calls of 1 MiB (less 16 bytes, to end on a line). With
// "raw" it first does what `stty raw -echo` does (cfmakeraw on its
// terminal: no OPOST/ONLCR output processing, no ECHO, no ICANON), as a
// real high-output program that wants speed would; with "cooked" it
// leaves the terminal as the session made it (OPOST|ONLCR on: the kernel
// turns every "\n" into "\r\n", so a reader gets 81 bytes per 80-byte
// line). MB/s counts the bytes the child wrote.
//
// The readers:
//   - kernel: ptyflood's peer mode, the smallest possible reader in C: it
//     opens a pty pair, forks the child onto the slave (a new session with
//     the terminal as its controlling terminal, as Start does) and reads
//     the master with blocking 256 KiB reads until EIO. Nothing can read a
//     pty faster on this kernel, so this row is the ceiling.
//   - local: a Session, read with 64 KiB reads.
//   - remote: a RemoteSession on loopback (server and client in this
//     process), read with 64 KiB reads.

const outputSize = 100 << 20

const ptyfloodSource = `
#define _GNU_SOURCE
#include <errno.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

/* child: write total bytes of 80-byte lines to fd 1 in writes of about 1 MiB. */
static int child(long total, int raw) {
	if (raw) {
		struct termios t;
		if (tcgetattr(1, &t) < 0) { perror("tcgetattr"); return 2; }
		cfmakeraw(&t);
		if (tcsetattr(1, TCSANOW, &t) < 0) { perror("tcsetattr"); return 2; }
	}
	static char buf[(1 << 20) / 80 * 80]; /* whole lines: total/80 newlines in all */
	for (size_t i = 0; i < sizeof buf; i++) buf[i] = (i % 80 == 79) ? '\n' : 'x';
	while (total > 0) {
		size_t want = total < (long)sizeof buf ? (size_t)total : sizeof buf;
		ssize_t n = write(1, buf, want);
		if (n < 0) { if (errno == EINTR) continue; perror("write"); return 2; }
		total -= n;
	}
	return 0;
}

int main(int argc, char **argv) {
	if (argc != 4) { fprintf(stderr, "usage: ptyflood child|peer BYTES raw|cooked\n"); return 2; }
	long total = atol(argv[2]);
	int raw = strcmp(argv[3], "raw") == 0;
	if (strcmp(argv[1], "child") == 0) return child(total, raw);
	int master, slave;
	if (openpty(&master, &slave, NULL, NULL, NULL) < 0) { perror("openpty"); return 2; }
	pid_t pid = fork();
	if (pid < 0) { perror("fork"); return 2; }
	if (pid == 0) {
		close(master);
		setsid();
		if (ioctl(slave, TIOCSCTTY, 0) < 0) { perror("TIOCSCTTY"); _exit(2); }
		dup2(slave, 0); dup2(slave, 1); dup2(slave, 2);
		if (slave > 2) close(slave);
		_exit(child(total, raw));
	}
	close(slave);
	static char rbuf[256 << 10];
	long got = 0;
	for (;;) {
		ssize_t n = read(master, rbuf, sizeof rbuf);
		if (n > 0) { got += n; continue; }
		if (n < 0 && errno == EINTR) continue;
		break; /* EIO: the child is gone and its output drained */
	}
	int st;
	waitpid(pid, &st, 0);
	printf("%ld\n", got);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 2;
}
`

// ptyflood compiles ptyfloodSource with gcc into a temporary directory
// and returns the binary's path.
func ptyflood(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	src := filepath.Join(dir, "ptyflood.c")
	bin := filepath.Join(dir, "ptyflood")
	if err := os.WriteFile(src, []byte(ptyfloodSource), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-O2", "-o", bin, src, "-lutil").CombinedOutput(); err != nil {
		b.Fatalf("gcc ptyflood.c (apt-get install gcc): %v\n%s", err, out)
	}
	return bin
}

// outputWant is how many bytes a reader gets from outputSize bytes of
// 80-byte lines: ONLCR adds a "\r" per line in cooked mode.
func outputWant(mode string) int64 {
	if mode == "raw" {
		return outputSize
	}
	return outputSize + outputSize/80
}

var outputModes = []string{"raw", "cooked"}

// BenchmarkOutput is the throughput table: kernel (the C peer), local and
// remote, each with a raw and a cooked child. See the comment above
// ptyfloodSource.
func BenchmarkOutput(b *testing.B) {
	bin := ptyflood(b)
	size := strconv.Itoa(outputSize)
	b.Run("reader=kernel", func(b *testing.B) {
		for _, mode := range outputModes {
			b.Run("child="+mode, func(b *testing.B) {
				b.SetBytes(outputSize)
				start := cpuTime()
				for b.Loop() {
					out, err := exec.Command(bin, "peer", size, mode).Output()
					if err != nil {
						b.Fatalf("ptyflood peer: %v", err)
					}
					if got, _ := strconv.ParseInt(string(out[:len(out)-1]), 10, 64); got != outputWant(mode) {
						b.Fatalf("the peer read %d bytes, want %d", got, outputWant(mode))
					}
				}
				reportCPU(b, start)
			})
		}
	})
	b.Run("reader=local", func(b *testing.B) {
		for _, mode := range outputModes {
			b.Run("child="+mode, func(b *testing.B) {
				b.SetBytes(outputSize)
				buf := make([]byte, 64<<10)
				start, sw := cpuTime(), switches()
				for b.Loop() {
					s, err := Start(exec.Command(bin, "child", size, mode), Config{})
					if err != nil {
						b.Fatal(err)
					}
					n, err := drain(s, buf)
					if err != nil || n != outputWant(mode) {
						b.Fatalf("read %d bytes (%v), want %d", n, err, outputWant(mode))
					}
					if st, _ := s.Wait(context.Background()); st.Code != 0 {
						b.Fatalf("child: %v", st)
					}
					s.Close(context.Background())
				}
				reportCPU(b, start)
				reportSwitches(b, sw)
			})
		}
	})
	b.Run("reader=remote", func(b *testing.B) {
		_, ep := startServer(b, ServerConfig{})
		c := clientFor(b, ep, "alice")
		for _, mode := range outputModes {
			b.Run("child="+mode, func(b *testing.B) {
				b.SetBytes(outputSize)
				buf := make([]byte, 64<<10)
				start, sw := cpuTime(), switches()
				for b.Loop() {
					rs, err := c.Run(context.Background(), StartRequest{Argv: []string{bin, "child", size, mode}})
					if err != nil {
						b.Fatal(err)
					}
					n, err := drain(rs, buf)
					if err != nil || n != outputWant(mode) {
						b.Fatalf("read %d bytes (%v), want %d", n, err, outputWant(mode))
					}
					if st, _ := rs.Wait(context.Background()); st.Code != 0 {
						b.Fatalf("child: %v", st)
					}
					rs.Close()
				}
				reportCPU(b, start)
				reportSwitches(b, sw)
			})
		}
	})
}

// cpuTime is the CPU time (user and system) this process and its reaped
// children have used.
func cpuTime() time.Duration {
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	d := func(tv syscall.Timeval) time.Duration { return time.Duration(tv.Nano()) }
	return d(self.Utime) + d(self.Stime) + d(kids.Utime) + d(kids.Stime)
}

// reportCPU reports the CPU time per byte the child wrote since start:
// the reader's, the child's and (remote) both ends' and their sockets'
// threads, not the kernel's pty worker. Contention from other work on
// the machine inflates wall-clock MB/s far more than it does this.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N)/outputSize, "cpu-ns/B")
}

// switches is the count of context switches (voluntary and involuntary)
// of this process's threads so far: not the child's, nor the C peer's.
func switches() int64 {
	var self syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	return self.Nvcsw + self.Nivcsw
}

// reportSwitches reports this process's context switches per MiB the
// child wrote since start (a reader that sleeps per 4 KiB piece the
// master hands out shows about 256).
func reportSwitches(b *testing.B, start int64) {
	b.ReportMetric(float64(switches()-start)/float64(b.N)/(outputSize>>20), "ctxsw/MiB")
}

// drain reads r to EOF with buf and counts the bytes.
func drain(r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if err != nil {
			if err == io.EOF {
				return n, nil
			}
			return n, fmt.Errorf("after %d bytes: %w", n, err)
		}
	}
}
