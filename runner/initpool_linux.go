package runner

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/paaskit/paaskit/internal/threadprio"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// An instance's init helper is this very binary re-executed, and a Go
// binary's start (the runtime, then every linked package's init) is most of
// an on-demand start: 10 to 20 ms on a small VM, where the app itself binds
// in a few. The pool starts helpers ahead, in the new namespaces every
// instance gets, parked on a control socket before they have read anything
// about an app; a start takes one and sends it the sandbox's description
// and its descriptors, and the helper goes on exactly as a freshly started
// one would (the sandbox root, the cgroup, the user, the lock-down). A
// parked helper is root with every capability, as a fresh one is at that
// point, but has run nothing of an app's and holds nothing of one; the
// control socket is its only way in, and only the runner holds the other
// end.
//
// One-off commands never come from the pool: their caller owns the Cmd
// (its stdio, a pty's session) before it starts.

// initPoolMarker is initEnv's value in a parked helper: its description
// comes on descriptor 3 instead. No JSON document reads so.
const initPoolMarker = "pool"

// DefaultInitPool is how many parked init helpers a runner keeps.
const DefaultInitPool = 2

// parkedHelper is a started init helper waiting for its sandbox.
type parkedHelper struct {
	cmd *exec.Cmd
	ctl *os.File // the runner's end of the control socket
}

type initPool struct {
	log   *slog.Logger
	size  int
	start func() (*parkedHelper, error)
	busy  func() bool // whether a start is in progress
	ready chan *parkedHelper
	kick  chan struct{}
	stop  chan struct{}
	wg    sync.WaitGroup
}

func newInitPool(size int, log *slog.Logger, start func() (*parkedHelper, error), busy func() bool) *initPool {
	return &initPool{
		log:   log,
		size:  size,
		start: start,
		busy:  busy,
		ready: make(chan *parkedHelper, size),
		kick:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
	}
}

func (p *initPool) run() {
	p.wg.Add(1)
	go p.fill()
}

// fill keeps the pool full. A replacement for a helper taken from a pool
// that still has some waits until no start is in progress (at most
// maxRefillWait), so its start never competes for the CPU with the very
// start that took the last one; one for an empty pool starts at once.
// Either way every helper is forked from the process's thread at the
// lowest CPU priority (parkedNice, see internal/threadprio) and inherits
// it until taken: a helper's own start (most of it the Go runtime's) then
// takes only CPU time nothing else wants, yet is done by the time the next
// start needs it. That thread never ends, so the helpers' parent-death
// signal comes only with the runner's process.
func (p *initPool) fill() {
	defer p.wg.Done()
	warned := false
	start := func() (h *parkedHelper, err error) {
		if perr := threadprio.Do(parkedNice, func() { h, err = p.start() }); perr != nil && !warned {
			p.log.Warn("runner: parked init helpers run at the runner's priority", "err", perr)
			warned = true
		}
		return h, err
	}
	for {
		if len(p.ready) == p.size {
			select {
			case <-p.stop:
				return
			case <-p.kick:
			}
			continue
		}
		if len(p.ready) > 0 && !waitQuiet(p.stop, p.busy) {
			return
		}
		h, err := start()
		if err != nil {
			p.log.Error("runner: cannot start an init helper for the pool", "err", err)
			select {
			case <-p.stop:
				return
			case <-time.After(time.Second):
			}
			continue
		}
		select {
		case p.ready <- h:
		case <-p.stop:
			h.discard()
			return
		}
	}
}

// maxRefillWait bounds how long a pool's refill waits for the starts in
// progress to end: on a node that starts apps without a pause, the pool
// must still refill.
const maxRefillWait = 200 * time.Millisecond

// waitQuiet waits until busy reports no start in progress, or
// maxRefillWait has passed; false means stop was closed first.
func waitQuiet(stop <-chan struct{}, busy func() bool) bool {
	if busy == nil {
		return true
	}
	deadline := time.Now().Add(maxRefillWait)
	for busy() && time.Now().Before(deadline) {
		select {
		case <-stop:
			return false
		case <-time.After(2 * time.Millisecond):
		}
	}
	return true
}

// take returns a live parked helper, or nil when none is ready. One that
// died while parked (killed by someone) is ended here, not handed out.
func (p *initPool) take() *parkedHelper {
	defer func() {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}()
	for {
		select {
		case h := <-p.ready:
			if h.alive() {
				h.wake()
				return h
			}
			p.log.Warn("runner: a parked init helper died; discarding it", "pid", h.cmd.Process.Pid)
			h.discard()
		default:
			return nil
		}
	}
}

// parkedNice is the nice value of a parked helper: the lowest priority,
// so its start takes only CPU time nothing else wants.
const parkedNice = 19

// wake gives a helper taken from the pool the priority of the runner's
// other children back, on every thread it has: nice is per thread on
// Linux, and PRIO_PGRP reaches all threads of the helper's process group,
// which is the helper alone (Setpgid). Threads it makes later inherit it
// from their maker, and the app from the thread that starts it.
func (h *parkedHelper) wake() {
	_ = unix.Setpriority(unix.PRIO_PGRP, h.cmd.Process.Pid, 0)
}

// alive reports whether the helper still holds its end of the control
// socket: it never writes to it, so anything readable (the end of the
// stream) or a hang-up means it is gone.
func (h *parkedHelper) alive() bool {
	sc, err := h.ctl.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = sc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		n, err := unix.Poll(fds, 0)
		ok = err == nil && n == 0
	})
	return ok
}

// close stops the filler and ends every parked helper.
func (p *initPool) close() {
	close(p.stop)
	p.wg.Wait()
	for {
		select {
		case h := <-p.ready:
			h.discard()
		default:
			return
		}
	}
}

// discard ends a helper that will get no sandbox: a closed control socket
// makes it exit at once; the kill is for one that does not.
func (h *parkedHelper) discard() {
	_ = h.ctl.Close()
	_ = h.cmd.Process.Kill()
	_ = h.cmd.Wait()
}

// startParkedHelper starts an init helper in the namespaces every instance
// gets, waiting on descriptor 3 for its sandbox.
func (r *Runner) startParkedHelper() (*parkedHelper, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ctl, theirs := os.NewFile(uintptr(fds[0]), "init-ctl"), os.NewFile(uintptr(fds[1]), "init-ctl")
	cmd := &exec.Cmd{
		Path:        r.initPath,
		Args:        []string{initArgv0},
		Env:         []string{initEnv + "=" + initPoolMarker},
		Dir:         "/",
		SysProcAttr: r.instanceSysProcAttr(),
		ExtraFiles:  []*os.File{theirs},
	}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		ctl.Close()
		return nil, err
	}
	return &parkedHelper{cmd: cmd, ctl: ctl}, nil
}

// maxInitConfig bounds a sandbox description on the control socket (the
// environment travels in it; the kernel's own bound on an exec's
// environment is about as large).
const maxInitConfig = 4 << 20

// give sends a parked helper its sandbox's description and descriptors:
// stdout, stderr, then the network namespace when it has one.
func (h *parkedHelper) give(raw []byte, files []*os.File) error {
	if len(raw) > maxInitConfig {
		return fmt.Errorf("sandbox description of %d bytes is over %d", len(raw), maxInitConfig)
	}
	fds := make([]int, len(files))
	for k, f := range files {
		fds[k] = int(f.Fd())
	}
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], uint32(len(raw)))
	sc, err := h.ctl.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = sc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), hdr[:], unix.UnixRights(fds...), nil, unix.MSG_NOSIGNAL)
		return serr != unix.EAGAIN
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	if _, err := h.ctl.Write(raw); err != nil {
		return err
	}
	// The helper has everything; its end of the socket closing is how it
	// would learn of a runner gone before it read it all.
	return h.ctl.Close()
}

// recvInitConfig is the parked helper's side of give: the description and
// the descriptors, each file descriptor of the helper's own.
func recvInitConfig(sock int) ([]byte, []int, error) {
	var hdr [4]byte
	oob := make([]byte, unix.CmsgSpace(4*3))
	n, oobn, _, _, err := unix.Recvmsg(sock, hdr[:], oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, nil, err
	}
	if n == 0 {
		return nil, nil, io.EOF
	}
	var fds []int
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, nil, err
		}
		for k := range msgs {
			got, err := unix.ParseUnixRights(&msgs[k])
			if err != nil {
				return nil, nil, err
			}
			fds = append(fds, got...)
		}
	}
	if n < len(hdr) {
		// The header is 4 bytes sent at once; a stream can still split it.
		if _, err := io.ReadFull(fdReader(sock), hdr[n:]); err != nil {
			return nil, nil, err
		}
	}
	size := binary.LittleEndian.Uint32(hdr[:])
	if size > maxInitConfig {
		return nil, nil, fmt.Errorf("sandbox description of %d bytes is over %d", size, maxInitConfig)
	}
	raw := make([]byte, size)
	if _, err := io.ReadFull(fdReader(sock), raw); err != nil {
		return nil, nil, fmt.Errorf("sandbox description: %w", err)
	}
	return raw, fds, nil
}

// fdReader reads a raw descriptor with read(2), retrying on EINTR.
type fdReader int

func (fd fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(fd), p)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}
