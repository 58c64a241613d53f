package pty

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paaskit/paaskit/zmqloop"
	zmq "github.com/pebbe/zmq4"
)

func runT(t testing.TB, c *Client, req StartRequest) *RemoteSession {
	t.Helper()
	rs, err := c.Run(context.Background(), req)
	if err != nil {
		t.Fatalf("run %v: %v", req.Argv, err)
	}
	t.Cleanup(func() { rs.Close() })
	return rs
}

func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	if got := ErrorCode(err); got != code {
		t.Fatalf("error %v: code %q, want %q", err, got, code)
	}
}

// eventually polls cond (a status query, say) until it holds; it is a
// wait for an event, not a timing assertion: the bound is generous.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: did not happen within 60s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRemoteBashExitCode(t *testing.T) {
	_, ep := startServer(t, ServerConfig{})
	c := clientFor(t, ep, "alice")
	rs := runT(t, c, StartRequest{Argv: []string{"/bin/bash", "--norc", "--noprofile", "-i"}})
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
	if st := waitT(t, rs); st.Code != 3 {
		t.Fatalf("status %v; want exit 3", st)
	}
}

func TestRemotePythonAndResize(t *testing.T) {
	needProgram(t, "/usr/bin/python3", "python3")
	_, ep := startServer(t, ServerConfig{})
	c := clientFor(t, ep, "alice")
	rs := runT(t, c, StartRequest{Argv: []string{"/usr/bin/python3", "-i", "-q"}, Rows: 40, Cols: 120})
	readUntil(t, rs, ">>> ")
	rs.Write([]byte("6*7\n"))
	readUntil(t, rs, "42\r\n")
	rs.Write([]byte("import os; os.get_terminal_size()\n"))
	readUntil(t, rs, "columns=120, lines=40")
	if err := rs.Resize(WindowSize{Rows: 50, Cols: 132}); err != nil {
		t.Fatal(err)
	}
	rs.Write([]byte("os.get_terminal_size()\n"))
	readUntil(t, rs, "columns=132, lines=50")
	rs.Write([]byte("import subprocess; subprocess.run(['stty', 'size'])\n"))
	readUntil(t, rs, "50 132")
	rs.Write([]byte("raise SystemExit(4)\n"))
	io.Copy(io.Discard, rs)
	if st := waitT(t, rs); st.Code != 4 {
		t.Fatalf("status %v, want 4", st)
	}
}

func TestRemoteTenMegabytesThenExit(t *testing.T) {
	_, ep := startServer(t, ServerConfig{})
	c := clientFor(t, ep, "alice")
	rs := runT(t, c, StartRequest{Argv: []string{"/bin/sh", "-c", "head -c 10000000 /dev/zero; printf END"}})
	b, err := io.ReadAll(rs)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 10000003 || !bytes.HasSuffix(b, []byte("END")) {
		t.Fatalf("got %d bytes, want 10000003 ending END", len(b))
	}
	if st := waitT(t, rs); st.Code != 0 {
		t.Fatal(st)
	}
}

// seqOutput is what `seq 1 n` shows on a terminal.
func seqOutput(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteString("\r\n")
	}
	return b.String()
}

func TestRemoteDisconnectMidOutputAndReattach(t *testing.T) {
	for _, how := range []string{"at once", "after the server noticed"} {
		t.Run(how, func(t *testing.T) {
			srv, ep := startServer(t, ServerConfig{Buffer: 64 << 10, AttachTimeout: 200 * time.Millisecond, Grace: time.Minute})
			a := clientFor(t, ep, "alice")
			const n = 300000
			rs, err := a.Run(context.Background(), StartRequest{Argv: []string{"seq", "1", strconv.Itoa(n)}})
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			buf := make([]byte, 1000)
			for got.Len() < 200000 {
				k, err := rs.Read(buf)
				got.Write(buf[:k])
				if err != nil {
					t.Fatal(err)
				}
			}
			// The client vanishes mid-output.
			id, off := rs.ID(), rs.Offset()
			rs.Close()
			a.Close()
			if how != "at once" {
				eventually(t, "the server sees the client gone", func() bool {
					srv.mu.Lock()
					r := srv.sessions[id]
					srv.mu.Unlock()
					r.mu.Lock()
					defer r.mu.Unlock()
					return r.att == nil
				})
			}
			b := clientFor(t, ep, "alice")
			rs2, err := b.Attach(context.Background(), id, off)
			if err != nil {
				t.Fatal(err)
			}
			defer rs2.Close()
			rest, err := io.ReadAll(rs2)
			if err != nil {
				t.Fatal(err)
			}
			got.Write(rest)
			if want := seqOutput(n); got.String() != want {
				t.Fatalf("output after reattach: %d bytes, want %d; first difference at %d", got.Len(), len(want), firstDiff(got.String(), want))
			}
			if st := waitT(t, rs2); st.Code != 0 {
				t.Fatal(st)
			}
		})
	}
}

func firstDiff(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestRemoteRefusesOtherCallersAndMissingSessions(t *testing.T) {
	_, ep := startServer(t, ServerConfig{})
	alice := clientFor(t, ep, "alice")
	bob := clientFor(t, ep, "bob")
	rs := runT(t, alice, StartRequest{Argv: []string{"cat"}})
	ctx := context.Background()
	for _, id := range []string{rs.ID(), "0123456789abcdef0123456789abcdef", ""} {
		_, err := bob.Attach(ctx, id, 0)
		wantCode(t, err, CodeNotFound)
		_, err = bob.Status(ctx, id)
		wantCode(t, err, CodeNotFound)
		wantCode(t, bob.Signal(ctx, id, syscall.SIGKILL), CodeNotFound)
		_, err = bob.Hangup(ctx, id)
		wantCode(t, err, CodeNotFound)
		_, err = call[struct{}](ctx, bob, TypeInput, InputRequest{Session: id, Attach: rs.attach, Data: []byte("x")})
		wantCode(t, err, CodeNotFound)
	}
	if l, err := bob.List(ctx); err != nil || len(l) != 0 {
		t.Fatalf("bob's list: %v, %v; want none", l, err)
	}
	if l, err := alice.List(ctx); err != nil || len(l) != 1 || l[0].ID != rs.ID() {
		t.Fatalf("alice's list: %v, %v", l, err)
	}
	// Alice's session is untouched.
	rs.Write([]byte("still mine\n"))
	readUntil(t, rs, "still mine\r\nstill mine")
}

// rawDealer is a DEALER socket for frames a Client would never send.
func rawDealer(t *testing.T, ep string) *zmq.Socket {
	sock, err := zmq.NewSocket(zmq.DEALER)
	if err != nil {
		t.Fatal(err)
	}
	sock.SetLinger(0)
	sock.SetRcvtimeo(5 * time.Second)
	if err := sock.Connect(ep); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	return sock
}

func TestRemoteRefusesUnsignedAndReplayedFrames(t *testing.T) {
	_, ep := startServer(t, ServerConfig{})
	c := clientFor(t, ep, "alice")
	// No echo: what the terminal shows is what cat was typed, once.
	rs := runT(t, c, StartRequest{Argv: []string{"/bin/sh", "-c", "stty -echo; echo ready; exec cat"}})
	readUntil(t, rs, "ready\r\n")
	codec := codecFor(t, "alice", "server")
	body := fmt.Appendf(nil, `{"session":%q,"attach":%q,"data":%q}`, rs.ID(), rs.attach, "b25jZQo=") // "once\n"
	frames, err := codec.Seal(zmqloop.Message{Type: TypeInput, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	sock := rawDealer(t, ep)
	send := func(fr [][]byte) {
		msg := append([][]byte{{}}, fr...)
		parts := make([]any, len(msg))
		for i, p := range msg {
			parts[i] = p
		}
		if _, err := sock.SendMessage(parts...); err != nil {
			t.Fatal(err)
		}
	}
	send(frames)
	if reply, err := sock.RecvMessageBytes(0); err != nil || len(reply) != 4 {
		t.Fatalf("reply to a good frame: %d frames, %v", len(reply), err)
	}
	// The same frames again: a replay, refused (and not answered).
	send(frames)
	// Forged: other data under the original MAC, and a message signed by
	// a key the server does not hold.
	forged := [][]byte{frames[0], bytes.Replace(frames[1], []byte("b25jZQo="), []byte("dHdpY2UK"), 1), frames[2]}
	send(forged)
	stranger := codecFor(t, "mallory")
	sf, _ := stranger.Seal(zmqloop.Message{Type: TypeInput, Body: body})
	send(sf)
	send([][]byte{[]byte("alice"), []byte("{}")}) // too few frames
	// A good frame after the bad ones, as a marker: once it is echoed,
	// everything before it has been dealt with.
	rs.Write([]byte("marker\n"))
	out := readUntil(t, rs, "marker\r\n")
	if out != "once\r\nmarker\r\n" {
		t.Fatalf("terminal saw %q: want \"once\" typed exactly once and no forged input", out)
	}
}

func TestRemoteRefusesBadWindowSizes(t *testing.T) {
	_, ep := startServer(t, ServerConfig{})
	c := clientFor(t, ep, "alice")
	ctx := context.Background()
	for _, sz := range [][2]uint16{{0, 80}, {24, 0}, {65535, 80}, {65535, 65535}} {
		_, err := c.Start(ctx, StartRequest{Argv: []string{"cat"}, Rows: sz[0], Cols: sz[1]})
		wantCode(t, err, CodeBadRequest)
	}
	rs := runT(t, c, StartRequest{Argv: []string{"cat"}})
	for _, sz := range [][2]uint16{{0, 0}, {0, 80}, {65535, 65535}} {
		_, err := call[struct{}](ctx, c, TypeResize, ResizeRequest{Session: rs.ID(), Attach: rs.attach, Rows: sz[0], Cols: sz[1]})
		wantCode(t, err, CodeBadRequest)
		if sz != [2]uint16{0, 0} {
			_, err = call[AttachReply](ctx, c, TypeAttach, AttachRequest{Session: rs.ID(), Rows: sz[0], Cols: sz[1]})
			wantCode(t, err, CodeBadRequest)
		}
	}
	if err := rs.Resize(WindowSize{Rows: 0, Cols: 10}); !errors.Is(err, ErrBadSize) {
		t.Fatalf("client-side resize check: %v", err)
	}
}

func TestRemoteRefusesMalformedRequests(t *testing.T) {
	_, ep := startServer(t, ServerConfig{MaxSessions: 1})
	c := clientFor(t, ep, "alice")
	ctx := context.Background()
	_, err := c.Start(ctx, StartRequest{})
	wantCode(t, err, CodeBadRequest)
	_, err = call[SessionInfo](ctx, c, TypeStart, rawJSON(`{"argv":"not a list"}`))
	wantCode(t, err, CodeBadRequest)
	_, err = c.Start(ctx, StartRequest{Argv: []string{"/nonexistent/program"}})
	wantCode(t, err, CodeStartFailed)
	rs := runT(t, c, StartRequest{Argv: []string{"cat"}})
	_, err = c.Start(ctx, StartRequest{Argv: []string{"cat"}})
	wantCode(t, err, CodeTooMany)
	_, err = call[AttachReply](ctx, c, TypeAttach, AttachRequest{Session: rs.ID(), From: 1 << 40})
	wantCode(t, err, CodeBadOffset)
	_, err = call[AckReply](ctx, c, TypeAck, AckRequest{Session: rs.ID(), Attach: rs.attach, Offset: 1 << 40})
	wantCode(t, err, CodeBadOffset)
	_, err = call[struct{}](ctx, c, TypeSignal, SignalRequest{Session: rs.ID(), Signal: "NOPE"})
	wantCode(t, err, CodeBadRequest)
	_, err = call[struct{}](ctx, c, TypeInput, InputRequest{Session: rs.ID(), Attach: "stale", Data: []byte("x")})
	wantCode(t, err, CodeDetached)
	// None of it hurt the session.
	rs.Write([]byte("fine\n"))
	readUntil(t, rs, "fine\r\nfine")
}

type rawJSON string

func (j rawJSON) MarshalJSON() ([]byte, error) { return []byte(j), nil }

func TestRemoteInputAfterExit(t *testing.T) {
	_, ep := startServer(t, ServerConfig{})
	c := clientFor(t, ep, "alice")
	rs := runT(t, c, StartRequest{Argv: []string{"true"}})
	io.Copy(io.Discard, rs)
	waitT(t, rs)
	if _, err := rs.Write([]byte("late\n")); !errors.Is(err, ErrExited) {
		t.Fatalf("input after exit: %v, want ErrExited", err)
	}
	if err := rs.Signal(syscall.SIGINT); !errors.Is(err, ErrExited) {
		t.Fatalf("signal after exit: %v, want ErrExited", err)
	}
	info, err := c.Status(context.Background(), rs.ID())
	if err != nil || !info.Exited || info.Code != 0 {
		t.Fatalf("status after exit: %+v, %v", info, err)
	}
}

func TestRemoteClientThatNeverReadsPausesTheChild(t *testing.T) {
	const buffer = 64 << 10
	const total = 5000000
	srv, ep := startServer(t, ServerConfig{Buffer: buffer})
	c := clientFor(t, ep, "alice")
	rs := runT(t, c, StartRequest{Argv: []string{"head", "-c", strconv.Itoa(total), "/dev/zero"}})
	// The client reads nothing. The server fills its buffer and stops.
	var info SessionInfo
	eventually(t, "the buffer fills", func() bool {
		info, _ = c.Status(context.Background(), rs.ID())
		return info.Output-info.Buffered >= buffer/2
	})
	for range 50 {
		info, err := c.Status(context.Background(), rs.ID())
		if err != nil {
			t.Fatal(err)
		}
		if held := info.Output - info.Buffered; held > buffer {
			t.Fatalf("server holds %d bytes for the client, over its bound %d", held, buffer)
		}
		if info.Exited {
			t.Fatal("the child finished although its output was never read")
		}
		rs.mu.Lock()
		clientHeld := rs.recv - rs.read
		rs.mu.Unlock()
		if clientHeld > buffer {
			t.Fatalf("client holds %d unread bytes, over the window %d", clientHeld, buffer)
		}
		time.Sleep(2 * time.Millisecond)
	}
	// The child is blocked writing to its terminal, not dropping.
	srv.mu.Lock()
	pid := srv.sessions[rs.ID()].s.Pid()
	srv.mu.Unlock()
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if f := strings.Fields(string(stat)); len(f) < 3 || f[2] != "S" {
		t.Fatalf("child state %q, want S (sleeping in write)", stat)
	}
	n, err := io.Copy(io.Discard, rs)
	if err != nil || n != total {
		t.Fatalf("read %d bytes (%v), want every one of %d", n, err, total)
	}
}

func TestRemoteGraceThenSIGHUP(t *testing.T) {
	dir := t.TempDir()
	srv, ep := startServer(t, ServerConfig{AttachTimeout: 100 * time.Millisecond, Grace: 200 * time.Millisecond})
	c := clientFor(t, ep, "alice")
	rs := runT(t, c, StartRequest{Argv: []string{"/bin/sh", "-c", "trap 'echo hup > " + dir + "/got; exit 0' HUP; echo ready; while :; do sleep 0.05; done"}})
	readUntil(t, rs, "ready")
	id := rs.ID()
	rs.Close() // vanish
	eventually(t, "the child gets SIGHUP", func() bool {
		b, _ := os.ReadFile(dir + "/got")
		return string(b) == "hup\n"
	})
	eventually(t, "the session ends", func() bool {
		info, err := c.Status(context.Background(), id)
		return err == nil && info.Exited
	})
	_ = srv
}

func TestRemoteChildIgnoringSIGHUPIsKilled(t *testing.T) {
	_, ep := startServer(t, ServerConfig{AttachTimeout: 100 * time.Millisecond, Grace: 200 * time.Millisecond, KillAfter: 200 * time.Millisecond})
	c := clientFor(t, ep, "alice")
	rs := runT(t, c, StartRequest{Argv: []string{"/bin/sh", "-c", "trap '' HUP; echo ready; while :; do sleep 0.05; done"}})
	readUntil(t, rs, "ready")
	id := rs.ID()
	rs.Close()
	var info SessionInfo
	eventually(t, "the session ends", func() bool {
		var err error
		info, err = c.Status(context.Background(), id)
		return err == nil && info.Exited
	})
	if info.Signal != "KILL" {
		t.Fatalf("status %+v, want killed by KILL after ignoring HUP", info)
	}
}

func TestRemoteHangup(t *testing.T) {
	_, ep := startServer(t, ServerConfig{})
	c := clientFor(t, ep, "alice")
	rs := runT(t, c, StartRequest{Argv: []string{"sleep", "100"}})
	info, err := c.Hangup(context.Background(), rs.ID())
	if err != nil || !info.Exited || info.Signal != "HUP" {
		t.Fatalf("hangup: %+v, %v", info, err)
	}
	io.Copy(io.Discard, rs)
	if st := waitT(t, rs); st.Signal != syscall.SIGHUP {
		t.Fatalf("status %v", st)
	}
}

type memLog struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	closed bool
}

func (m *memLog) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.buf.Write(p)
}
func (m *memLog) Close() error { m.mu.Lock(); m.closed = true; m.mu.Unlock(); return nil }
func (m *memLog) snapshot() (int, string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.buf.Len(), m.buf.String(), m.closed
}

func TestRemoteDetached(t *testing.T) {
	var logs sync.Map
	_, ep := startServer(t, ServerConfig{Buffer: 64 << 10, Log: func(info SessionInfo) (io.WriteCloser, error) {
		m := &memLog{}
		logs.Store(info.ID, m)
		return m, nil
	}})
	c := clientFor(t, ep, "alice")
	ctx := context.Background()
	info, err := c.Start(ctx, StartRequest{Argv: []string{"/bin/sh", "-c", "echo started; read x; echo got $x; exit 4"}, Detached: true})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the log has the output", func() bool {
		v, _ := logs.Load(info.ID)
		_, s, _ := v.(*memLog).snapshot()
		return strings.Contains(s, "started")
	})
	st, err := c.Status(ctx, info.ID)
	if err != nil || st.Exited || !st.Detached || st.Attached {
		t.Fatalf("status of a running detached command: %+v, %v", st, err)
	}
	// Attach later, from the oldest output held: see it, type, get the
	// exit code.
	rs, err := c.Attach(ctx, info.ID, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	readUntil(t, rs, "started")
	rs.Write([]byte("hello\n"))
	readUntil(t, rs, "got hello")
	io.Copy(io.Discard, rs)
	if es := waitT(t, rs); es.Code != 4 {
		t.Fatalf("status %v, want 4", es)
	}
	st, err = c.Status(ctx, info.ID)
	if err != nil || !st.Exited || st.Code != 4 {
		t.Fatalf("status after exit: %+v, %v", st, err)
	}
	v, _ := logs.Load(info.ID)
	eventually(t, "the log is closed", func() bool { _, _, closed := v.(*memLog).snapshot(); return closed })
}

func TestRemoteDetachedFloodIsNotPaused(t *testing.T) {
	// With nobody attached, a detached command's output goes to its log
	// and only the newest Buffer bytes stay in memory: it runs to the end.
	var lg memLog
	_, ep := startServer(t, ServerConfig{Buffer: 64 << 10, Log: func(SessionInfo) (io.WriteCloser, error) { return &lg, nil }})
	c := clientFor(t, ep, "alice")
	info, err := c.Start(context.Background(), StartRequest{Argv: []string{"head", "-c", "5000000", "/dev/zero"}, Detached: true})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the command finishes", func() bool {
		st, err := c.Status(context.Background(), info.ID)
		return err == nil && st.Exited
	})
	st, _ := c.Status(context.Background(), info.ID)
	if n, _, _ := lg.snapshot(); n != 5000000 || st.Output != 5000000 || st.Output-st.Buffered > 64<<10 {
		t.Fatalf("log has %d bytes, status %+v; want all 5000000 logged and at most 64 KiB held", n, st)
	}
}

func TestRemoteAuthorize(t *testing.T) {
	var kept []string
	var mu sync.Mutex
	_, ep := startServer(t, ServerConfig{
		Authorize: func(caller string, req StartRequest) error {
			if caller != "alice" || req.App != "blog" {
				return errors.New("not yours")
			}
			return nil
		},
		KeepAlive: func(caller string, req StartRequest) (func(), error) {
			mu.Lock()
			kept = append(kept, req.App)
			mu.Unlock()
			return func() {}, nil
		},
	})
	_, err := clientFor(t, ep, "bob").Start(context.Background(), StartRequest{App: "blog", Argv: []string{"true"}})
	wantCode(t, err, CodeForbidden)
	alice := clientFor(t, ep, "alice")
	_, err = alice.Start(context.Background(), StartRequest{App: "shop", Argv: []string{"true"}})
	wantCode(t, err, CodeForbidden)
	rs := runT(t, alice, StartRequest{App: "blog", Argv: []string{"true"}})
	io.Copy(io.Discard, rs)
	mu.Lock()
	defer mu.Unlock()
	if len(kept) != 1 || kept[0] != "blog" {
		t.Fatalf("keep-alive calls %v, want [blog]", kept)
	}
}

func TestRemoteSessionsLeakNothing(t *testing.T) {
	n := 200
	if v := os.Getenv("PAASKIT_PTY_REMOTE_SESSIONS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	// The process-wide ZeroMQ context opens its own fds (I/O and reaper
	// threads) on first use and keeps them: warm it up before counting.
	t.Run("warm-up", func(t *testing.T) {
		_, ep := startServer(t, ServerConfig{})
		rs := runT(t, clientFor(t, ep, "alice"), StartRequest{Argv: []string{"true"}})
		io.Copy(io.Discard, rs)
	})
	before := openFDs(t)
	// Cleanups run last first: this check runs after the server and the
	// client are gone.
	t.Cleanup(func() {
		// libzmq's reaper thread closes a socket's fds shortly after
		// Close returns: wait for them, then count.
		eventually(t, "fds released", func() bool { return openFDs(t) <= before })
	})
	// Exited sessions are forgotten during the loop, so the sweep's
	// forgetting is what is counted. Retain must still outlast the gap
	// between Run's start and its attach: an `echo` has exited by then,
	// and with 1 ms a loaded CI machine had it forgotten first (22:26).
	_, ep := startServer(t, ServerConfig{Retain: 250 * time.Millisecond})
	c := clientFor(t, ep, "alice")
	for i := range n {
		rs, err := c.Run(context.Background(), StartRequest{Argv: []string{"echo", strconv.Itoa(i)}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rs); err != nil {
			t.Fatal(err)
		}
		rs.Close()
	}
}

// BenchmarkRemoteEcho measures a keystroke's round trip through a remote
// session on loopback: one byte typed into `cat` until its echo is read.
// One op is echoKeys keystrokes (so it runs in the same -benchtime Nx as
// BenchmarkOutput); it reports the median and 99th percentile of single
// keystrokes (ns/echo-p50, ns/echo-p99).
func BenchmarkRemoteEcho(b *testing.B) {
	const echoKeys = 1000
	_, ep := startServer(b, ServerConfig{})
	c := clientFor(b, ep, "alice")
	rs := runT(b, c, StartRequest{Argv: []string{"cat"}})
	buf := make([]byte, 64)
	key := []byte("a")
	var lat []time.Duration
	for b.Loop() {
		for n := 1; n <= echoKeys; n++ {
			t0 := time.Now()
			if _, err := rs.Write(key); err != nil {
				b.Fatal(err)
			}
			if _, err := rs.Read(buf); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
			if n%200 == 0 {
				// Keep the line short: end it, and read its echo and what
				// cat prints back (two newlines, in one read or several).
				rs.Write([]byte{'\n'})
				for nl := 0; nl < 2; {
					k, err := rs.Read(buf)
					if err != nil {
						b.Fatal(err)
					}
					nl += bytes.Count(buf[:k], []byte{'\n'})
				}
			}
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "ns/echo-p50")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "ns/echo-p99")
}

func FuzzParseOutput(f *testing.F) {
	f.Add(appendOutput(nil, "s1", "a1", 42, []byte("hello")))
	f.Add(appendOutput(nil, "s1", "a1", 0, []byte{0, 1, 0xff, 0xfe, 0x80}))
	f.Add([]byte(`{"d":"aGk=","o":1,"a":"x","s":"y"}`))
	f.Add([]byte(`{"s":"","a":"","o":-1,"d":"!!"}`))
	f.Add([]byte(`{"s":"x","a":"y","o":1,"t":"a\u00ffb\"","z":"}`))
	f.Add([]byte(`{"s":"x","a":"y","o":1,"t":"\u0100"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseOutput(b, nil)
		if err != nil {
			return
		}
		// What the fast path took must be what encoding/json reads too.
		var ref struct {
			S, A string
			O    int64
		}
		if err := json.Unmarshal(b, &ref); err != nil || ref.S != m.S || ref.A != m.A || ref.O != m.O {
			t.Fatalf("%q parsed as %+v; encoding/json: %+v, %v", b, m, ref, err)
		}
		// Whatever parsed must survive a round trip through the server's
		// own writer (whose ids are hex: nothing to escape).
		if plainRun([]byte(m.S)) != len(m.S) || plainRun([]byte(m.A)) != len(m.A) {
			return
		}
		m2, err := parseOutput(appendOutput(nil, m.S, m.A, m.O, m.D), nil)
		if err != nil || m2.O != m.O || !bytes.Equal(m2.D, m.D) {
			t.Fatalf("round trip changed %+v into %+v (%v)", m, m2, err)
		}
	})
}

// FuzzParseOutputFrame: a pty.output body with output in the data frame.
// What parses agrees with encoding/json on the body, has exactly the data
// frame as output (never output in the body as well), and survives a
// round trip through the server's writer.
func FuzzParseOutputFrame(f *testing.F) {
	f.Add(appendOutputHead(nil, "s1", "a1", 42), []byte("hello"))
	f.Add(appendOutputHead(nil, "s1", "a1", 0), []byte{0, 1, 0xff, 0xfe, 0x80})
	f.Add([]byte(`{"o":1,"a":"x","s":"y"}`), []byte{'"'})
	f.Add([]byte(`{"s":"x","a":"y","o":1,"t":"ab"}`), []byte("c"))
	f.Add([]byte(`{"s":"x","a":"y","o":01}`), []byte("c"))
	f.Fuzz(func(t *testing.T, b, data []byte) {
		m, err := parseOutput(b, data)
		if err != nil {
			return
		}
		var ref struct {
			S, A string
			O    int64
			D    json.RawMessage
			T    json.RawMessage
		}
		if err := json.Unmarshal(b, &ref); err != nil || ref.S != m.S || ref.A != m.A || ref.O != m.O {
			t.Fatalf("%q parsed as %+v; encoding/json: %+v, %v", b, m, ref, err)
		}
		if len(data) > 0 {
			if !bytes.Equal(m.D, data) {
				t.Fatalf("data frame %q came out as %q", data, m.D)
			}
			if ref.D != nil || ref.T != nil {
				t.Fatalf("%q with a data frame: accepted output in the body too", b)
			}
		}
		if len(m.D) == 0 || plainRun([]byte(m.S)) != len(m.S) || plainRun([]byte(m.A)) != len(m.A) {
			return
		}
		m2, err := parseOutput(appendOutputHead(nil, m.S, m.A, m.O), m.D)
		if err != nil || m2.S != m.S || m2.A != m.A || m2.O != m.O || !bytes.Equal(m2.D, m.D) {
			t.Fatalf("round trip changed %+v into %+v (%v)", m, m2, err)
		}
	})
}

// FuzzOutputData checks that any output survives the stream's encoding,
// as text or base64, and that the text form is a JSON string encoding/json
// reads as the same code points.
func FuzzOutputData(f *testing.F) {
	f.Add([]byte("plain text\r\n"))
	f.Add([]byte{0, 0x1f, '"', '\\', 0x7f, 0x80, 0xc3, 0xff})
	f.Add(bytes.Repeat([]byte{0xff}, 100))
	f.Fuzz(func(t *testing.T, data []byte) {
		body := appendOutput(nil, "s", "a", 7, data)
		if len(body) > 40+base64.StdEncoding.EncodedLen(len(data)) {
			t.Fatalf("%d bytes became a %d-byte body, more than base64's", len(data), len(body))
		}
		m, err := parseOutput(body, nil)
		if err != nil || m.S != "s" || m.A != "a" || m.O != 7 || !bytes.Equal(m.D, data) {
			t.Fatalf("%q: body %q parsed as %+v, %v", data, body, m, err)
		}
		var ref struct {
			T *string
			D []byte
		}
		if err := json.Unmarshal(body, &ref); err != nil {
			t.Fatalf("body %q is not JSON: %v", body, err)
		}
		if ref.T != nil {
			var got []byte
			for _, r := range *ref.T {
				got = append(got, byte(r))
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("text %q reads as %q, want %q", *ref.T, got, data)
			}
		} else if !bytes.Equal(ref.D, data) {
			t.Fatalf("base64 reads as %q, want %q", ref.D, data)
		}
	})
}

func TestRemoteHangupOfAPausedSession(t *testing.T) {
	// The child is blocked on a full buffer nobody drains; hanging it up
	// (and stopping the server afterwards) must not wait for room.
	_, ep := startServer(t, ServerConfig{Buffer: 4096})
	c := clientFor(t, ep, "alice")
	rs := runT(t, c, StartRequest{Argv: []string{"head", "-c", "10000000", "/dev/zero"}})
	eventually(t, "the buffer fills", func() bool {
		info, _ := c.Status(context.Background(), rs.ID())
		return info.Output >= 4096
	})
	info, err := c.Hangup(context.Background(), rs.ID())
	if err != nil || !info.Exited {
		t.Fatalf("hangup: %+v, %v", info, err)
	}
	// Another paused one is left for the server's shutdown.
	runT(t, c, StartRequest{Argv: []string{"head", "-c", "10000000", "/dev/zero"}})
}

// TestRemoteInputForms: input goes raw in the data frame (every byte
// value, unescaped); the base64 "data" member of clients before data
// frames still works; both at once is refused.
func TestRemoteInputForms(t *testing.T) {
	_, ep := startServer(t, ServerConfig{})
	c := clientFor(t, ep, "alice")
	// Raw mode first, so the terminal passes every byte to od as it is.
	rs := runT(t, c, StartRequest{Argv: []string{"sh", "-c", "stty raw -echo && echo ready && exec od -An -tx1 -v -w8"}})
	ctx := context.Background()
	readUntil(t, rs, "ready")
	if _, err := rs.Write([]byte{0, '"', '\\', 0x7f, 0x80, 0xc3, 0xfe, 0xff}); err != nil {
		t.Fatal(err)
	}
	readUntil(t, rs, "00 22 5c 7f 80 c3 fe ff")
	_, err := call[struct{}](ctx, c, TypeInput, InputRequest{Session: rs.ID(), Attach: rs.attach, Data: []byte("ABCDEFGH")})
	if err != nil {
		t.Fatalf("base64 input: %v", err)
	}
	readUntil(t, rs, "41 42 43 44 45 46 47 48")
	body, _ := json.Marshal(InputRequest{Session: rs.ID(), Attach: rs.attach, Data: []byte("x")})
	_, _, err = c.zc.CallData(ctx, TypeInput, body, []byte("y"))
	wantCode(t, err, CodeBadRequest)
}

// An attach that looked an exited session up is not undone by the sweep
// forgetting that session before the attach binds (Retain over): the
// session is pinned, the attach streams its output and exit, and the
// server still stops at once. Before, the sweep deleted the session under
// the attach, the attachment bound to a session no sweep or shutdown
// would visit again, and Run waited for it for ever (a CI run of
// TestRemoteSessionsLeakNothing, whose Retain is 1 ms, hung 12 minutes).
func TestAttachPinsItsSessionAgainstTheSweep(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, err := NewServer(ServerConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: codecFor(t, "server", "alice"),
		Command: plainCommand, Logger: quietLog, Retain: time.Second, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	<-s.Ready()
	c := clientFor(t, s.Endpoints()[0], "alice")
	info, err := c.Start(context.Background(), StartRequest{Argv: []string{"echo", "pinned"}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the command exited", func() bool {
		st, err := c.Status(context.Background(), info.ID)
		return err == nil && st.Exited
	})
	swept := make(chan struct{})
	s.attachPinned = func() {
		mu.Lock()
		now = now.Add(time.Hour) // far past Retain
		mu.Unlock()
		s.sweep()
		close(swept)
	}
	rs, err := c.Attach(context.Background(), info.ID, 0)
	if err != nil {
		t.Fatalf("attach while the sweep forgets the session: %v", err)
	}
	<-swept
	out, err := io.ReadAll(rs)
	if err != nil || !strings.Contains(string(out), "pinned") {
		t.Fatalf("output %q, %v", out, err)
	}
	if st, err := rs.Wait(context.Background()); err != nil || st.Code != 0 {
		t.Fatalf("exit %+v, %v", st, err)
	}
	s.attachPinned = nil
	if err := rs.Detach(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Once nobody is attached, the next sweep forgets the session.
	eventually(t, "forgotten once detached", func() bool {
		s.sweep()
		_, err := c.Status(context.Background(), info.ID)
		return err != nil && strings.Contains(err.Error(), CodeNotFound)
	})
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not stop: an attachment outlived its session")
	}
}
