package zmqloop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// debianPython is the interpreter whose pyzmq comes from Debian's
// python3-zmq (scripts/install-deps.sh); a python3 earlier on PATH (pyenv,
// a venv) may not have it.
const debianPython = "/usr/bin/python3"

// peerCmd returns the Python peer (testdata/peer/peer.py, written from the
// package doc alone) in mode against endpoint, with the test key.
func peerCmd(t *testing.T, mode, endpoint string) *exec.Cmd {
	t.Helper()
	out, err := exec.Command(debianPython, "-c", "import zmq").CombinedOutput()
	require.NoError(t, err, "%s with pyzmq is needed (Debian's python3-zmq; scripts/install-deps.sh installs it): %s", debianPython, out)
	return exec.Command(debianPython, "testdata/peer/peer.py", mode, endpoint, testKey.ID, string(testKey.Secret))
}

// TestPeerWrittenFromTheDoc checks the package doc's claim that its wire
// format section is enough to write a compatible peer in another language:
// a Python peer written from it calls a ReplyLoop, serves a Client and
// pushes to a PullLoop, checking every answer it gets.
func TestPeerWrittenFromTheDoc(t *testing.T) {
	c := newTestCodec(t, nil)

	t.Run("python client, Go ReplyLoop", func(t *testing.T) {
		var mu sync.Mutex
		var rejected []error
		_, ep := startReply(t, c, nil, func(cfg *ReplyConfig) {
			cfg.Rejected = func(err error) { mu.Lock(); rejected = append(rejected, err); mu.Unlock() }
		})
		out, err := peerCmd(t, "client", ep).CombinedOutput()
		require.NoError(t, err, "peer.py client: %s", out)
		// The loop refused what the peer sent to be refused, for the
		// reasons the doc gives.
		mu.Lock()
		defer mu.Unlock()
		var why []string
		for _, err := range rejected {
			for _, target := range []error{ErrReplay, ErrBadMAC, ErrStale, ErrMalformed} {
				if errors.Is(err, target) {
					why = append(why, target.Error())
				}
			}
		}
		bad := ErrBadMAC.Error()
		require.ElementsMatch(t, []string{ErrReplay.Error(), ErrMalformed.Error(), ErrStale.Error(), bad, bad, bad, bad, bad}, why, "%v", rejected)
	})

	t.Run("Go Client, python server", func(t *testing.T) {
		cmd := peerCmd(t, "server", "tcp://127.0.0.1:*")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdin, err := cmd.StdinPipe()
		require.NoError(t, err)
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		// stderr is read only after Wait: until then the process writes it.
		waited := false
		wait := func() error {
			_ = stdin.Close()
			waited = true
			return cmd.Wait()
		}
		defer func() {
			if !waited {
				err := wait()
				require.NoError(t, err, "peer.py server: %s", stderr.String())
			}
		}()
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil {
			werr := wait()
			t.Fatalf("peer.py server printed no endpoint (%v; exit: %v): %s", err, werr, stderr.String())
		}
		cl := newClient(t, c, []string{strings.TrimSpace(line)})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for _, body := range []string{`{"a":[1,2,"é"]}`, `"text"`, `null`, `12.5`} {
			got, err := cl.Call(ctx, "py", json.RawMessage(body))
			require.NoError(t, err)
			var want, have any
			require.NoError(t, json.Unmarshal([]byte(`{"py":`+body+`}`), &want))
			require.NoError(t, json.Unmarshal(got, &have))
			require.Equal(t, want, have)
		}
		// Data frames both ways: the peer answers with the bytes reversed.
		body, data, err := cl.CallData(ctx, "py", json.RawMessage(`1`), []byte("\x00abc\xff"))
		require.NoError(t, err)
		require.JSONEq(t, `{"py":1}`, string(body))
		require.Equal(t, []byte("\xffcba\x00"), data)
		_, err = cl.Call(ctx, "other", nil)
		var re *RemoteError
		require.ErrorAs(t, err, &re)
		require.Equal(t, CodeUnknownType, re.Code)
	})

	t.Run("python pusher, Go PullLoop", func(t *testing.T) {
		var mu sync.Mutex
		var got []string
		var data []byte
		six := make(chan struct{})
		l, err := NewPullLoop(PullConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Logger: quietLog,
			Handlers: map[string]MessageHandler{"stat": func(_ context.Context, r *Request) error {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, string(r.Body))
				if len(r.Data) > 0 {
					data = append([]byte(nil), r.Data...)
				}
				if len(got) == 6 {
					close(six)
				}
				return nil
			}}})
		require.NoError(t, err)
		ep := start(t, l)
		out, err := peerCmd(t, "push", ep).CombinedOutput()
		require.NoError(t, err, "peer.py push: %s", out)
		select {
		case <-six:
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of 6 messages", len(got))
		}
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, []string{`{"n":0}`, `{"n":1}`, `{"n":2}`, `{"n":3}`, `{"n":4}`, `{"n":5}`}, got, "singles, batch items and a message with data in order")
		require.Equal(t, []byte("\x00\xffraw"), data)
	})
}
