package zmqloop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// libzmq 4.3.4 can abort a process (errno_assert in session_base_t's
// clean_pipes, src/session_base.cpp, zeromq/libzmq#3442) when a connection
// dies while the session holds part of a multipart message it is sending.
// The fallback test once hit it in the test's own sending socket. These
// tests ask the question that matters to an operator: can a hostile peer,
// speaking ZMTP by hand so that nothing of libzmq runs on its side, make a
// ReplyLoop's process abort by dropping connections at the worst moments:
// mid-reply, mid-request, after an over-size frame header, during the
// handshake, or by never reading? The server runs in a process of its own
// (this test binary re-executed), so an abort is seen as its exit status
// instead of killing the test.

// zmtpConn is a hand-rolled ZMTP 3.0 DEALER over NULL security.
type zmtpConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialZMTP(ep string) (*zmtpConn, error) {
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(ep, "tcp://"), 2*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	z := &zmtpConn{c: c, r: bufio.NewReader(c)}
	greeting := make([]byte, 64)
	greeting[0], greeting[9] = 0xFF, 0x7F
	greeting[10], greeting[11] = 3, 0
	copy(greeting[12:], "NULL")
	if _, err := c.Write(greeting); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := io.ReadFull(z.r, make([]byte, 64)); err != nil {
		c.Close()
		return nil, fmt.Errorf("read greeting: %w", err)
	}
	var ready bytes.Buffer
	ready.WriteByte(5)
	ready.WriteString("READY")
	ready.WriteByte(byte(len("Socket-Type")))
	ready.WriteString("Socket-Type")
	_ = binary.Write(&ready, binary.BigEndian, uint32(len("DEALER")))
	ready.WriteString("DEALER")
	if _, err := c.Write(append([]byte{0x04, byte(ready.Len())}, ready.Bytes()...)); err != nil {
		c.Close()
		return nil, err
	}
	// The server's READY command.
	flags, err := z.r.ReadByte()
	if err != nil || flags&0x04 == 0 {
		c.Close()
		return nil, fmt.Errorf("read READY: flags %#x, %v", flags, err)
	}
	n, err := z.r.ReadByte()
	if err == nil {
		_, err = io.ReadFull(z.r, make([]byte, n))
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("read READY: %w", err)
	}
	return z, nil
}

// frameBytes encodes one ZMTP frame.
func frameBytes(body []byte, more bool) []byte {
	var flags byte
	if more {
		flags = 0x01
	}
	if len(body) < 256 {
		return append([]byte{flags, byte(len(body))}, body...)
	}
	h := make([]byte, 9)
	h[0] = flags | 0x02
	binary.BigEndian.PutUint64(h[1:], uint64(len(body)))
	return append(h, body...)
}

func messageBytes(frames [][]byte) []byte {
	var b []byte
	for i, f := range frames {
		b = append(b, frameBytes(f, i < len(frames)-1)...)
	}
	return b
}

// abort resets the connection (RST, not FIN) so the server's next write
// fails at once.
func (z *zmtpConn) abort() {
	if tc, ok := z.c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = z.c.Close()
}

func startHostileTarget(t *testing.T, env ...string) (string, *exec.Cmd, io.Closer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(append(os.Environ(), benchServerEnv+"=signed-big"), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err, "server: %s", &stderr)
	return strings.TrimSpace(line), cmd, stdin
}

func TestHostilePeersCannotAbortReplyLoop(t *testing.T) {
	for _, path := range []struct{ name, env string }{{"one-call", ""}, {"per-frame", IOEnv + "=pebbe"}} {
		t.Run(path.name, func(t *testing.T) {
			var env []string
			if path.env != "" {
				env = append(env, path.env)
			}
			ep, cmd, stdin := startHostileTarget(t, env...)
			ring, err := NewKeyRing(testKey)
			require.NoError(t, err)
			codec, err := NewCodec(CodecConfig{Keys: ring}) // 1 MiB, as the server
			require.NoError(t, err)
			body, _ := json.Marshal(strings.Repeat("x", 200<<10)) // replies well over libzmq's 8 KiB zero-copy threshold
			request := func() []byte {
				frames, err := codec.Seal(Message{Type: "echo", Body: body})
				if err != nil {
					panic(err) // not require: this runs on the attackers' goroutines
				}
				return messageBytes(append([][]byte{{}}, frames...))
			}
			attacks := []func(z *zmtpConn){
				func(z *zmtpConn) { // a request, then gone while the reply streams
					_, _ = z.c.Write(request())
					_, _ = io.ReadFull(z.r, make([]byte, rand.IntN(64<<10)))
					z.abort()
				},
				func(z *zmtpConn) { // several requests pipelined, gone at once
					req := request()
					_, _ = z.c.Write(append(append(req, req...), req...))
					z.abort()
				},
				func(z *zmtpConn) { // part of a request
					req := request()
					_, _ = z.c.Write(req[:rand.IntN(len(req))])
					z.abort()
				},
				func(z *zmtpConn) { // a frame header over the server's maximum
					h := []byte{0x01, 0}
					h = append(h, 0x03, 0, 0, 0, 0, 0x10, 0, 0, 0) // more, long: 256 MiB
					_, _ = z.c.Write(h)
					_, _ = z.c.Write(bytes.Repeat([]byte("y"), 4096))
					time.Sleep(time.Millisecond)
					z.abort()
				},
				func(z *zmtpConn) { // requests it never reads the replies of, then a clean close
					req := request()
					for range 8 {
						_, _ = z.c.Write(req)
					}
					time.Sleep(5 * time.Millisecond)
					_ = z.c.Close()
				},
			}
			// Each attacker makes attacksPerWorker attacks that reached the
			// server (a finished ZMTP handshake). The count, not a clock,
			// ends the run: a slow or loaded machine takes longer, it does
			// not attack less. A server that died stops answering the
			// handshake, and giveUp ends the run with too few attacks.
			// ZMQLOOP_HOSTILE_SECONDS makes it a soak of that many seconds.
			const workers, attacksPerWorker = 16, 8
			var soakUntil time.Time
			if v, err := strconv.Atoi(os.Getenv("ZMQLOOP_HOSTILE_SECONDS")); err == nil && v > 0 {
				soakUntil = time.Now().Add(time.Duration(v) * time.Second)
			}
			giveUp := time.Now().Add(2 * time.Minute)
			var wg sync.WaitGroup
			var mu sync.Mutex
			rounds, failedDials := 0, 0
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for done := 0; (done < attacksPerWorker || time.Now().Before(soakUntil)) && time.Now().Before(giveUp); {
						z, err := dialZMTP(ep)
						if err != nil {
							mu.Lock()
							failedDials++
							mu.Unlock()
							continue // the server is busy or gone: the checks below say which
						}
						attacks[rand.IntN(len(attacks))](z)
						done++
						mu.Lock()
						rounds++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			t.Logf("%d hostile connections, %d dials not answered", rounds, failedDials)
			require.GreaterOrEqual(t, rounds, workers*attacksPerWorker, "the server stopped answering handshakes")
			require.NoError(t, cmd.Process.Signal(syscall.Signal(0)), "the server process is gone")

			// Still serving: a well-behaved client gets its echo.
			client, err := NewClient(ClientConfig{Endpoints: []string{ep}, Codec: codec})
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			got, err := client.Call(ctx, "echo", json.RawMessage(`"still here"`))
			cancel()
			client.Close()
			require.NoError(t, err)
			require.JSONEq(t, `"still here"`, string(got))

			stdin.Close()
			err = cmd.Wait()
			require.NoError(t, err, "the server did not exit cleanly (an abort shows as signal: aborted)")
		})
	}
}
