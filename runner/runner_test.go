package runner_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paaskit/paaskit/runner"
	"github.com/stretchr/testify/require"
)

func TestOnDemandStartServesFromSandbox(t *testing.T) {
	e := newEnv(t, nil)
	iso := e.r.Isolation()
	require.True(t, iso.User && iso.Namespaces && iso.SandboxRoot && iso.Cgroup && iso.Rlimits,
		"tests run as root on Linux (make test); isolation missing: %v", iso.Missing)
	e.put(spec("hello"))
	require.Equal(t, "stopped", e.status("hello").State)

	require.Equal(t, "hello hello\n", e.mustGet("hello.example", "/"))
	st := e.status("hello")
	require.Equal(t, "running", st.State)
	require.EqualValues(t, 1, st.Starts)
	require.GreaterOrEqual(t, st.UID, runner.DefaultUIDMin)
	require.LessOrEqual(t, st.UID, runner.DefaultUIDMax)

	w := e.whoami("hello.example")
	require.Equal(t, st.UID, w.UID, "app runs as its own UID")
	require.Equal(t, st.UID, w.GID)
	require.Equal(t, "hello", w.Hostname, "own UTS namespace")
	require.Equal(t, "/run/paaskit/app.sock", w.Socket)
	require.Equal(t, 1, w.PPID, "the init helper is PID 1 of the app's PID namespace")
	require.Less(t, w.PID, 100, "own PID namespace (the helper's runtime threads take a few PIDs)")
	require.EqualValues(t, 1, e.status("hello").Starts, "warm requests reuse the instance")
	require.Len(t, e.status("hello").Recent, 1)
}

func TestConcurrentFirstRequestsShareOneStart(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("burst"))
	const n = 100
	var wg sync.WaitGroup
	codes := make([]int, n)
	bodies := make([]string, n)
	start := make(chan struct{})
	for k := 0; k < n; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			<-start
			codes[k], bodies[k], _ = e.get("burst.example", "/")
		}(k)
	}
	close(start)
	wg.Wait()
	for k := 0; k < n; k++ {
		require.Equal(t, 200, codes[k], "request %d: %s", k, bodies[k])
		require.Equal(t, "hello burst\n", bodies[k])
	}
	st := e.status("burst")
	require.EqualValues(t, 1, st.Starts, "exactly one start for the burst")
	require.Len(t, st.Recent, 1)
	require.Greater(t, st.Recent[0].Waiters, 0)
	require.Greater(t, st.Recent[0].QueueWait, time.Duration(0), "queue wait is recorded")
	require.Greater(t, st.Recent[0].StartTime, time.Duration(0), "start time is recorded")
	require.Equal(t, st.Recent[0].QueueWait, st.MaxQueueWait)
	require.Equal(t, st.Recent[0].StartTime, st.MaxStartTime)
}

func TestUnknownHostIsAMiss(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("known"))
	code, body, h := e.get("nobody.example", "/")
	require.Equal(t, 404, code)
	require.Equal(t, "1", h.Get(runner.MissHeader))
	require.Contains(t, body, "nobody.example")
}

func TestHostIsCaseInsensitiveAndPortless(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("casey"))
	require.Equal(t, "hello casey\n", e.mustGet("CaSeY.Example:8080", "/"))
	name, ok := e.r.Lookup("CASEY.EXAMPLE.")
	require.True(t, ok)
	require.Equal(t, "casey", name)
}

func TestAppThatExitsAtOnceFailsWaitersWithStderrTail(t *testing.T) {
	e := newEnv(t, func(c *runner.Config) { c.MaxStartBackoff = time.Minute })
	s := spec("quitter", "exit")
	s.StartTimeout = runner.Duration(time.Minute)
	e.put(s)
	var wg sync.WaitGroup
	for k := 0; k < 5; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body, _ := e.get("quitter.example", "/")
			require.Equal(t, 503, code)
			require.Contains(t, body, "exited with status 3")
			require.Contains(t, body, "testapp: exiting at once as asked", "the 503 carries the stderr tail")
		}()
	}
	wg.Wait()
	st := e.status("quitter")
	require.EqualValues(t, 1, st.Starts)
	require.Equal(t, "backoff", st.State)
	// Inside the backoff the next request fails at once, without a start.
	code, body, _ := e.get("quitter.example", "/")
	require.Equal(t, 503, code)
	require.Contains(t, body, "next start not before")
	require.EqualValues(t, 1, e.status("quitter").Starts)
}

// getAsync sends GET path with Host host to the front from another
// goroutine; the channel delivers the status code and body.
func (e *env) getAsync(host, path string) <-chan string {
	got := make(chan string, 1)
	go func() {
		req, err := http.NewRequest("GET", "http://"+e.front+path, nil)
		if err != nil {
			got <- err.Error()
			return
		}
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			got <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- strconv.Itoa(resp.StatusCode) + " " + string(b)
	}()
	return got
}

// receive waits for what getAsync delivers.
func receive(t *testing.T, got <-chan string) string {
	t.Helper()
	select {
	case r := <-got:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no answer within 30s")
		return ""
	}
}

// startTimedOut has a request start an app that will not bind, and ends
// the start timeout on the fake clock once the app has said why on
// stderr (so that the 503 carries it); it returns the answer.
func startTimedOut(t *testing.T, e *env, clk *fakeClock, app, says string, timeout time.Duration) string {
	t.Helper()
	got := e.getAsync(app+".example", "/")
	require.Eventually(t, func() bool { return strings.Contains(e.sink.text(app, runner.Stderr), says) },
		10*time.Second, time.Millisecond, "the app writes %q", says)
	clk.WaitTimer(t, timeout)
	select {
	case r := <-got:
		t.Fatalf("answered before the start timeout: %s", r)
	default:
	}
	clk.Advance(timeout)
	return receive(t, got)
}

func TestAppThatNeverBindsTimesOut(t *testing.T) {
	clk := newFakeClock()
	e := newEnv(t, func(c *runner.Config) { c.Clock = clk })
	s := spec("sleepy", "nobind")
	s.StartTimeout = runner.Duration(500 * time.Millisecond)
	e.put(s)
	r := startTimedOut(t, e, clk, "sleepy", "sleeping, not binding", 500*time.Millisecond)
	code, body, _ := strings.Cut(r, " ")
	require.Equal(t, "503", code, body)
	require.Contains(t, body, "did not bind /run/paaskit/app.sock within 500ms")
	require.Contains(t, body, "sleeping, not binding")
	uid := e.status("sleepy").UID
	require.Eventually(t, func() bool { return len(procsOfUID(uid)) == 0 }, 10*time.Second, 10*time.Millisecond,
		"the failed instance leaves no process")
}

func TestAppThatBindsTheWrongPathTimesOut(t *testing.T) {
	clk := newFakeClock()
	e := newEnv(t, func(c *runner.Config) { c.Clock = clk })
	s := spec("lost", "wrongpath")
	s.StartTimeout = runner.Duration(500 * time.Millisecond)
	e.put(s)
	r := startTimedOut(t, e, clk, "lost", "bound the wrong path", 500*time.Millisecond)
	code, body, _ := strings.Cut(r, " ")
	require.Equal(t, "503", code, body)
	require.Contains(t, body, "did not bind")
	require.Contains(t, body, "bound the wrong path")
}

func TestIdleInstanceIsReaped(t *testing.T) {
	clk := newFakeClock()
	e := newEnv(t, func(c *runner.Config) { c.Clock = clk })
	s := spec("idler")
	s.IdleTimeout = runner.Duration(200 * time.Millisecond)
	e.put(s)
	e.mustGet("idler.example", "/")
	e.waitIdle("idler")
	uid := e.status("idler").UID
	// Not reaped a moment before its idle timeout, reaped at it.
	clk.Advance(199 * time.Millisecond)
	clk.reapRound(t)
	require.Equal(t, "running", e.status("idler").State)
	clk.Advance(time.Millisecond)
	clk.reapRound(t)
	require.Eventually(t, func() bool {
		st := e.status("idler")
		return st.State == "stopped" && st.LastExit != nil
	}, 10*time.Second, 10*time.Millisecond)
	st := e.status("idler")
	require.Equal(t, "reaped", st.LastExit.Reason)
	require.Empty(t, procsOfUID(uid), "reaping leaves no orphans")
	// The next request starts it again.
	e.mustGet("idler.example", "/")
	require.EqualValues(t, 2, e.status("idler").Starts)
}

// A streaming response keeps its instance alive past the idle timeout on
// every front (on the event loops, the in-flight count lasts until the
// body was relayed, not until the head arrived), and the count returns to
// zero after, also when the client leaves mid-stream.
func TestStreamingResponseKeepsInstanceAlive(t *testing.T) {
	for _, f := range fronts {
		t.Run(f.name, func(t *testing.T) {
			clk := newFakeClock()
			e := newEnvFront(t, func(c *runner.Config) {
				if f.tweak != nil {
					f.tweak(c)
				}
				c.Clock = clk
			}, f.handler)
			s := spec("streamer")
			s.IdleTimeout = runner.Duration(100 * time.Millisecond)
			e.put(s)
			// Started by a first request, so that the stream is a warm
			// request (the event loops' path, where there are loops).
			e.mustGet("streamer.example", "/")
			e.waitIdle("streamer")
			stream := func(n int) (net.Conn, io.Reader) {
				t.Helper()
				c, err := net.Dial("tcp", e.front)
				require.NoError(t, err)
				t.Cleanup(func() { c.Close() })
				_, err = fmt.Fprintf(c, "GET /stream?n=%d HTTP/1.1\r\nHost: streamer.example\r\n\r\n", n)
				require.NoError(t, err)
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				require.NoError(t, err)
				require.Equal(t, 200, resp.StatusCode)
				return c, resp.Body
			}
			// 40 lines, 10 ms apart: while the first has come and the
			// rest have not (400 ms, for the reap round to run in even
			// on a loaded machine), the idle timeout passes many times
			// over.
			_, body := stream(40)
			br := bufio.NewReader(body)
			line, err := br.ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "line 0\n", line)
			clk.Advance(time.Hour)
			clk.reapRound(t)
			st := e.status("streamer")
			require.Equal(t, "running", st.State)
			require.Nil(t, st.LastExit, "not reaped while the response streamed")
			require.EqualValues(t, 1, st.Instance.Active, "the stream is in flight")
			rest, err := io.ReadAll(br)
			require.NoError(t, err)
			require.Equal(t, 39, strings.Count(string(rest), "\n"))
			require.Contains(t, string(rest), "line 39")
			e.waitIdle("streamer") // the in-flight count is back to zero after the stream
			require.EqualValues(t, 1, e.status("streamer").Starts)
			require.Nil(t, e.status("streamer").LastExit)

			// A client that leaves mid-stream: the count returns to
			// zero at once, on every front, and the instance is reaped
			// as idle. The stream would run for 1,000 s: a front that
			// read the app's response to its end before letting go (as
			// ServeHTTP once did) keeps it in flight past waitIdle.
			c, body := stream(100000)
			_, err = bufio.NewReader(body).ReadString('\n')
			require.NoError(t, err)
			st = e.status("streamer")
			require.NotNil(t, st.Instance)
			require.EqualValues(t, 1, st.Instance.Active, "the stream is in flight")
			require.NoError(t, c.Close())
			e.waitIdle("streamer") // and once the client left mid-stream
			clk.Advance(100 * time.Millisecond)
			clk.reapRound(t)
			require.Eventually(t, func() bool {
				st := e.status("streamer")
				return st.LastExit != nil && st.LastExit.Reason == "reaped"
			}, 15*time.Second, 10*time.Millisecond, "reaped once the client left")
		})
	}
}

func TestAttachedCommandKeepsInstanceAlive(t *testing.T) {
	clk := newFakeClock()
	e := newEnv(t, func(c *runner.Config) { c.Clock = clk })
	s := spec("attached")
	s.IdleTimeout = runner.Duration(100 * time.Millisecond)
	e.put(s)
	release, err := e.r.Attach("attached")
	require.NoError(t, err)
	e.mustGet("attached.example", "/")
	e.waitIdle("attached")
	// Ten idle timeouts pass and the reaper looks: the attached command
	// keeps the instance.
	clk.Advance(time.Second)
	clk.reapRound(t)
	st := e.status("attached")
	require.Equal(t, "running", st.State)
	require.Equal(t, time.Second, time.Duration(st.Instance.IdleFor))
	release()
	clk.Advance(100 * time.Millisecond)
	clk.reapRound(t)
	require.Eventually(t, func() bool {
		st := e.status("attached")
		return st.State == "stopped" && st.LastExit != nil && st.LastExit.Reason == "reaped"
	}, 10*time.Second, 10*time.Millisecond)
}

func TestCrashedInstanceIsRestarted(t *testing.T) {
	clk := newFakeClock()
	e := newEnv(t, func(c *runner.Config) { c.Clock = clk })
	e.put(spec("crashy"))
	e.mustGet("crashy.example", "/")
	st := e.status("crashy")
	first := st.Instance.ID
	// Kill the sandbox from outside, as a crash would.
	require.NoError(t, killPid(st.Instance.PID))
	require.Eventually(t, func() bool {
		st := e.status("crashy")
		return st.Crashes == 1 && st.Instance == nil
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "crashed", e.status("crashy").LastExit.Reason)
	// Restarted after the first backoff (100ms), not before.
	clk.Advance(99 * time.Millisecond)
	clk.reapRound(t)
	require.Nil(t, e.status("crashy").Instance, "restarted inside the backoff")
	clk.Advance(time.Millisecond)
	clk.reapRound(t)
	require.Eventually(t, func() bool {
		st := e.status("crashy")
		return st.State == "running" && st.Instance.ID != first
	}, 10*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 2, e.status("crashy").Starts)
	e.mustGet("crashy.example", "/")
}

func TestStopIgnoringSIGTERMKillsAfterGrace(t *testing.T) {
	clk := newFakeClock()
	e := newEnv(t, func(c *runner.Config) { c.StopGrace = 300 * time.Millisecond; c.Clock = clk })
	e.put(spec("stubborn", "ignoreterm"))
	e.mustGet("stubborn.example", "/")
	uid := e.status("stubborn").UID
	require.NotEmpty(t, procsOfUID(uid))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- e.r.Stop(ctx, "stubborn") }()
	// SIGTERM is sent and the grace period begins; the app ignores it
	// and lives on until the grace period is over.
	clk.WaitTimer(t, 300*time.Millisecond)
	require.NotEmpty(t, procsOfUID(uid), "killed before the grace period was over")
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned before the grace period was over: %v", err)
	default:
	}
	clk.Advance(300 * time.Millisecond)
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Stop did not return within 20s of the grace period")
	}
	st := e.status("stubborn")
	require.Equal(t, "stopped", st.LastExit.Reason)
	require.Equal(t, 137, st.LastExit.Status, "killed by SIGKILL after the grace period")
	require.Empty(t, procsOfUID(uid), "no orphans")
}

func TestGracefulStopOfWellBehavedApp(t *testing.T) {
	e := newEnv(t, nil)
	e.put(spec("polite"))
	e.mustGet("polite.example", "/")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, e.r.Stop(ctx, "polite"))
	st := e.status("polite")
	require.Equal(t, "stopped", st.LastExit.Reason)
	require.Equal(t, 128+15, st.LastExit.Status, "ended by the SIGTERM it was passed")
}

func TestChangeWhileStartingServesTheWaiters(t *testing.T) {
	e := newEnv(t, nil)
	s := spec("slowstart")
	s.Command = []string{"/bin/sh", "-c", "sleep 0.5; exec /app/testapp"}
	e.put(s)
	got := make(chan string, 1)
	go func() {
		code, body, _ := e.get("slowstart.example", "/")
		got <- strconv.Itoa(code) + " " + body
	}()
	require.Eventually(t, func() bool { return e.status("slowstart").State == "starting" }, 10*time.Second, 5*time.Millisecond)
	s.Command = []string{"/app/testapp"}
	e.put(s)
	select {
	case r := <-got:
		require.Equal(t, "200 hello slowstart\n", r, "the waiter is served by the new instance")
	case <-time.After(30 * time.Second):
		t.Fatal("no answer")
	}
	require.EqualValues(t, 2, e.status("slowstart").Starts)
}

// The tests above move a fake clock; this one keeps the default, the
// system clock, and checks that each of its uses is wired: the reap
// ticker and the idle time (an instance is reaped in real time), the
// grace timer (the reaped app ignores SIGTERM and is killed after it) and
// the start timeout timer.
func TestSystemClockTimesReapingGraceAndStartTimeout(t *testing.T) {
	e := newEnv(t, func(c *runner.Config) { c.StopGrace = 100 * time.Millisecond })
	s := spec("realtime", "ignoreterm")
	s.IdleTimeout = runner.Duration(50 * time.Millisecond)
	e.put(s)
	e.mustGet("realtime.example", "/")
	require.Eventually(t, func() bool {
		st := e.status("realtime")
		return st.State == "stopped" && st.LastExit != nil
	}, 10*time.Second, 5*time.Millisecond, "reaped on the system clock")
	st := e.status("realtime")
	require.Equal(t, "reaped", st.LastExit.Reason)
	require.Equal(t, 137, st.LastExit.Status, "killed after the grace period")

	slow := spec("realslow", "nobind")
	slow.StartTimeout = runner.Duration(100 * time.Millisecond)
	e.put(slow)
	code, body, _ := e.get("realslow.example", "/")
	require.Equal(t, 503, code)
	require.Contains(t, body, "within 100ms")
}

// Every front counts each request it passed to an app once, the cold
// first one (served after a start) included; a miss and Start count
// nothing, and another app's requests are its own.
func TestRequestsCountedPerApp(t *testing.T) {
	for _, f := range fronts {
		t.Run(f.name, func(t *testing.T) {
			e := newEnvFront(t, f.tweak, f.handler)
			e.put(spec("counted"))
			e.put(spec("other"))
			require.NoError(t, e.r.Start(context.Background(), "other"))
			const n = 37
			for k := 0; k < n; k++ {
				require.Equal(t, "hello counted\n", e.mustGet("counted.example", "/"))
			}
			// Concurrent requests on several connections too.
			var wg sync.WaitGroup
			for k := 0; k < 8; k++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := 0; j < 5; j++ {
						code, body, _ := e.get("counted.example", "/")
						require.Equal(t, 200, code, body)
					}
				}()
			}
			wg.Wait()
			code, _, _ := e.get("nobody.example", "/")
			require.Equal(t, 404, code)
			require.Equal(t, "hello other\n", e.mustGet("other.example", "/"))
			require.EqualValues(t, n+40, e.status("counted").Requests)
			require.EqualValues(t, 1, e.status("other").Requests, "Start counts no request")
		})
	}
}
