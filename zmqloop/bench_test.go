package zmqloop

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// The benchmarks come in pairs: raw pebbe/zmq4 as the baseline and the
// signed zmqloop equivalent, over TCP loopback, so their ratio is measured
// in one run. bench/sections/20-zmqloop.sh turns them into ratio rows.

var benchBody = json.RawMessage(`"` + string(make([]byte, 0)) + `0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"`[:100])

func init() {
	// A 100-byte JSON string body.
	b := make([]byte, 100)
	b[0], b[99] = '"', '"'
	for i := 1; i < 99; i++ {
		b[i] = 'a' + byte(i%26)
	}
	benchBody = b
}

func benchBind(b *testing.B, s *zmq.Socket) string {
	b.Helper()
	if err := s.Bind("tcp://127.0.0.1:*"); err != nil {
		b.Fatal(err)
	}
	ep, err := s.GetLastEndpoint()
	if err != nil {
		b.Fatal(err)
	}
	return ep
}

func benchSocket(b *testing.B, typ zmq.Type) *zmq.Socket {
	b.Helper()
	s, err := zmq.NewSocket(typ)
	if err != nil {
		b.Fatal(err)
	}
	_ = s.SetLinger(0)
	return s
}

// BenchmarkRawReqRep is one REQ/REP round trip of a 100-byte body.
func BenchmarkRawReqRep(b *testing.B) {
	rep := benchSocket(b, zmq.REP)
	ep := benchBind(b, rep)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer rep.Close()
		for {
			msg, err := rep.RecvBytes(0)
			if err != nil || len(msg) == 1 {
				if err == nil {
					_, _ = rep.SendBytes(msg, 0)
				}
				return
			}
			if _, err := rep.SendBytes(msg, 0); err != nil {
				return
			}
		}
	}()
	req := rawReqRepCalls(b, ep)
	defer req.Close()
	_, _ = req.SendBytes([]byte{'x'}, 0)
	_, _ = req.RecvBytes(0)
	wg.Wait()
}

// rawReqRepCalls makes b.N REQ/REP round trips to ep, timed, and returns
// the REQ socket.
func rawReqRepCalls(b *testing.B, ep string) *zmq.Socket {
	req := benchSocket(b, zmq.REQ)
	if err := req.Connect(ep); err != nil {
		b.Fatal(err)
	}
	// One untimed round trip, so the connection is up (as the signed side's is).
	if _, err := req.SendBytes(benchBody, 0); err != nil {
		b.Fatal(err)
	}
	if _, err := req.RecvBytes(0); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := req.SendBytes(benchBody, 0); err != nil {
			b.Fatal(err)
		}
		if _, err := req.RecvBytes(0); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	return req
}

// BenchmarkSignedReqRep is one Client.Call round trip through a ReplyLoop
// (signed both ways, replay-checked, handler on a worker).
func BenchmarkSignedReqRep(b *testing.B) {
	c := newTestCodec(b, nil)
	_, ep := startReply(b, c, nil)
	signedCalls(b, c, ep)
}

// signedCalls makes b.N Client.Call round trips to ep, timed.
func signedCalls(b *testing.B, c *Codec, ep string) {
	cl := newClient(b, c, []string{ep})
	ctx := context.Background()
	if _, err := cl.Call(ctx, "echo", benchBody); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := cl.Call(ctx, "echo", benchBody); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
}

// BenchmarkRawPushPull is PUSH/PULL throughput of 100-byte messages
// (ns/op is per message, receiver side).
func BenchmarkRawPushPull(b *testing.B) {
	pull := benchSocket(b, zmq.PULL)
	ep := benchBind(b, pull)
	push := benchSocket(b, zmq.PUSH)
	if err := push.Connect(ep); err != nil {
		b.Fatal(err)
	}
	n := b.N
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer push.Close()
		defer func() { <-stop }()
		for i := 0; i < n; i++ {
			if _, err := push.SendBytes(benchBody, 0); err != nil {
				return
			}
		}
	}()
	b.ResetTimer()
	for i := 0; i < n; i++ {
		if _, err := pull.RecvBytes(0); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	pull.Close()
}

// BenchmarkSignedPushPull is Pusher → PullLoop throughput of 100-byte
// bodies, signed and replay-checked (ns/op is per message delivered to the
// handler).
func BenchmarkSignedPushPull(b *testing.B) {
	c := newTestCodec(b, nil)
	var got atomic.Int64
	done := make(chan struct{})
	n := int64(b.N)
	l, err := NewPullLoop(PullConfig{Bind: []string{"tcp://127.0.0.1:*"}, Codec: c, Logger: quietLog,
		Handlers: map[string]MessageHandler{"stat": func(context.Context, *Request) error {
			if got.Add(1) == n {
				close(done)
			}
			return nil
		}}})
	if err != nil {
		b.Fatal(err)
	}
	ep := start(b, l)
	p, err := NewPusher(SenderConfig{Connect: []string{ep}, Codec: c, Logger: quietLog})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	b.ResetTimer()
	go func() {
		for i := int64(0); i < n; i++ {
			if err := p.Push(ctx, "stat", benchBody); err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d messages arrived", got.Load(), n)
	}
}

// BenchmarkReplyLoop64 is ReplyLoop throughput with 64 concurrent callers
// sharing one Client (64 calls in flight); report req/s = 1e9/(ns/op).
func BenchmarkReplyLoop64(b *testing.B) {
	c := newTestCodec(b, nil)
	l, ep := startReply(b, c, nil)
	_ = l
	cl := newClient(b, c, []string{ep})
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = cl.Call(ctx, "echo", benchBody) }()
	}
	wg.Wait()
	var next atomic.Int64
	n := int64(b.N)
	b.ResetTimer()
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= n {
				if _, err := cl.Call(ctx, "echo", benchBody); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
