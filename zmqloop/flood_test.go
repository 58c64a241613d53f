package zmqloop

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/require"
)

// TestReplyLoopServesThroughAFlood has a hostile peer send 20,000
// messages that must all be refused (random frames and frame counts,
// forged MACs, unknown keys, replays of one authentic request, stale and
// truncated requests) while a Client makes calls. Every call is answered,
// every bad message is counted as rejected, and the loop is still up
// afterwards. (An oversized frame costs the peer its connection, by
// ZMQ_MAXMSGSIZE, and its next sends wait for a reconnect;
// TestReplyLoopBadInput has that case.)
func TestReplyLoopServesThroughAFlood(t *testing.T) {
	const flood = 20000
	c := newTestCodec(t, nil)
	// The Rejected hook runs after the refusal is counted: the last one
	// closes allRefused, when every counter has its final value.
	var refused atomic.Int64
	allRefused := make(chan struct{})
	l, ep := startReply(t, c, nil, func(cfg *ReplyConfig) {
		cfg.Rejected = func(error) {
			if refused.Add(1) == flood {
				close(allRefused)
			}
		}
	})
	cl := newClient(t, c, []string{ep})

	authentic, err := c.Seal(Message{Type: "echo", Body: json.RawMessage(`"first"`)})
	require.NoError(t, err)
	stale := newTestCodec(t, func() time.Time { return time.Now().Add(-time.Minute) })
	forged := append([][]byte{}, authentic...)
	forged[2] = make([]byte, 32)
	rnd := rand.New(rand.NewPCG(1, 2))
	garbage := func(i int) [][]byte {
		switch i % 6 {
		case 0: // random frames, random count
			f := make([][]byte, rnd.IntN(6)+1)
			for j := range f {
				f[j] = make([]byte, rnd.IntN(64))
				for k := range f[j] {
					f[j][k] = byte(rnd.Uint32())
				}
			}
			return append([][]byte{{}}, f...)
		case 1:
			return append([][]byte{{}}, forged...)
		case 2:
			return [][]byte{{}, []byte("nokey"), authentic[1], authentic[2]}
		case 3: // the authentic request again: a replay
			return append([][]byte{{}}, authentic...)
		case 4: // a minute old: answered with "rejected", not handled
			f, err := stale.Seal(Message{Type: "echo", Body: json.RawMessage(strconv.Itoa(i))})
			if err != nil {
				panic(err)
			}
			return append([][]byte{{}}, f...)
		default:
			return [][]byte{{}, authentic[0], []byte(`{"type":`), authentic[2]}
		}
	}

	hostile := rawSocket(t, zmq.DEALER, ep)
	// The authentic request once, so that its copies are replays.
	sendRaw(t, hostile, append([][]byte{{}}, authentic...)...)
	recvRaw(t, hostile, 10*time.Second)

	var wg sync.WaitGroup
	wg.Add(2)
	floodErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		for i := 0; i < flood; i++ {
			if err := sendFrames(hostile, 0, garbage(i)...); err != nil {
				floodErr <- err
				return
			}
		}
		floodErr <- nil
	}()
	callErrs := make(chan error, 1)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			want := strconv.Itoa(i)
			got, err := cl.Call(ctx, "echo", json.RawMessage(want))
			cancel()
			if err == nil && string(got) != want {
				err = fmt.Errorf("call %d: got %s", i, got)
			}
			if err != nil {
				callErrs <- err
				return
			}
		}
		callErrs <- nil
	}()
	wg.Wait()
	require.NoError(t, <-floodErr)
	require.NoError(t, <-callErrs, "a caller was not served during the flood")

	// All of the flood is refused, and only the authentic request and the
	// client's calls reach the handler.
	select {
	case <-allRefused:
	case <-time.After(30 * time.Second):
		t.Fatalf("not all of the flood refused within 30s: %+v", l.Stats())
	}
	st := l.Stats()
	require.Equal(t, LoopStats{Received: 1 + flood + 200, Handled: 1 + 200, Rejected: flood}, st)
	got, err := cl.Call(context.Background(), "echo", json.RawMessage(`"after"`))
	require.NoError(t, err)
	require.Equal(t, `"after"`, string(got))
}
