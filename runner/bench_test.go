package runner_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paaskit/paaskit/runner"
)

// BenchmarkColdStart measures a request to a stopped app, from the request
// to the answer, through the front: on-demand start included. "plain" runs
// the app without isolation, "isolated" with everything on (its network
// namespace from the pool). Compare with BenchmarkDirectStart, the app's
// own time to start, bind and answer.
//
// "isolated" starts back to back (the next request as soon as the last
// instance stopped: 30 starts a second, faster than the pool of parked init
// helpers refills on 2 cores); "isolated-rested" lets the node rest 150 ms
// between starts, off the clock, as a node does between on-demand starts.
func BenchmarkColdStart(b *testing.B) {
	for _, mode := range []string{"isolated", "isolated-rested", "plain"} {
		b.Run(mode, func(b *testing.B) {
			e := newEnv(b, func(c *runner.Config) {
				c.Isolation.Off = mode == "plain"
				c.Sink = &memSink{}
			})
			e.put(spec("cold"))
			ctx := context.Background()
			b.ResetTimer()
			for k := 0; k < b.N; k++ {
				e.mustGet("cold.example", "/")
				b.StopTimer()
				if err := e.r.Stop(ctx, "cold"); err != nil {
					b.Fatal(err)
				}
				if mode == "isolated-rested" {
					time.Sleep(150 * time.Millisecond)
				}
				b.StartTimer()
			}
			b.StopTimer()
			st := e.status("cold")
			var sum time.Duration
			for _, r := range st.Recent {
				sum += r.StartTime
			}
			b.ReportMetric(float64(sum.Microseconds())/float64(len(st.Recent))/1000, "start-ms")
		})
	}
}

// BenchmarkColdStartNetns measures what the network namespace adds to a
// cold start, with three runners whose cold requests alternate (so the
// machine's noise hits all three alike): full isolation with the
// namespace from the pool ("pool-ms"), made at the start ("nopool-ms",
// Config.NetnsPool -1), and without a network namespace ("nonet-ms"); and
// what the pool of parked init helpers saves ("noinitpool-ms": full
// isolation, Config.InitPool -1, each start execs its helper).
func BenchmarkColdStartNetns(b *testing.B) {
	modes := []string{"pool", "nopool", "nonet", "noinitpool"}
	envs := make([]*env, len(modes))
	for k, mode := range modes {
		envs[k] = newEnv(b, func(c *runner.Config) {
			c.Isolation.NoNetwork = mode == "nonet"
			if mode == "nopool" {
				c.NetnsPool = -1
			}
			if mode == "noinitpool" {
				c.InitPool = -1
			}
			c.Sink = &memSink{}
		})
		envs[k].put(spec("cold"))
	}
	sums := make([]time.Duration, len(modes))
	ctx := context.Background()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for k := range modes {
			e := envs[(k+n)%len(modes)]
			t0 := time.Now()
			e.mustGet("cold.example", "/")
			sums[(k+n)%len(modes)] += time.Since(t0)
			b.StopTimer()
			if err := e.r.Stop(ctx, "cold"); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
	b.StopTimer()
	for k, mode := range modes {
		b.ReportMetric(float64(sums[k].Microseconds())/float64(b.N)/1000, mode+"-ms")
	}
}

// BenchmarkDirectStart is the baseline of BenchmarkColdStart: exec the test
// app directly, wait for its socket to accept, send one request.
func BenchmarkDirectStart(b *testing.B) {
	dir, err := os.MkdirTemp("", "rd")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "app.sock")
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	c := &http.Client{Transport: tr}
	for k := 0; k < b.N; k++ {
		os.Remove(sock)
		cmd := exec.Command(filepath.Join(imageDir, "testapp"))
		cmd.Env = []string{"PAASKIT_SOCKET=" + sock, "PAASKIT_APP=cold"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		for {
			conn, err := net.Dial("unix", sock)
			if err == nil {
				conn.Close()
				break
			}
			time.Sleep(50 * time.Microsecond)
		}
		resp, err := c.Get("http://cold/")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		b.StopTimer()
		tr.CloseIdleConnections()
		cmd.Process.Kill()
		cmd.Wait()
		b.StartTimer()
	}
}

// BenchmarkBurstOf100FirstRequests sends 100 concurrent requests to a
// stopped app and waits for all answers; it fails on any error or on more
// than one start.
func BenchmarkBurstOf100FirstRequests(b *testing.B) {
	e := newEnv(b, func(c *runner.Config) { c.Sink = &memSink{} })
	e.put(spec("burst"))
	ctx := context.Background()
	b.ResetTimer()
	for k := 0; k < b.N; k++ {
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for j := 0; j < 100; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("GET", "http://"+e.front+"/", nil)
				req.Host = "burst.example"
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		b.StopTimer()
		if st := e.status("burst"); st.Starts != int64(k+1) {
			b.Fatalf("%d starts after %d bursts", st.Starts, k+1)
		}
		if err := e.r.Stop(ctx, "burst"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkWarm compares keep-alive GETs from many goroutines through the
// front ("front") with the same client hitting the instance's unix socket
// directly ("direct"). Report both as req/s; the ratio is the front's cost.
func BenchmarkWarm(b *testing.B) {
	e := newEnv(b, func(c *runner.Config) { c.Sink = &memSink{} })
	e.put(spec("warm"))
	e.mustGet("warm.example", "/")
	// The same runner behind net/http and ServeHTTP, for comparison.
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: e.r}
	go hs.Serve(hl)
	defer hs.Close()
	sock := filepath.Join(e.state, "run", strconv.FormatInt(e.status("warm").Instance.ID, 10), "app.sock")
	front := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, DisableCompression: true}}
	direct := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, DisableCompression: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	run := func(b *testing.B, c *http.Client, url, host string) {
		b.SetParallelism(16)
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			req, _ := http.NewRequest("GET", url, nil)
			req.Host = host
			for pb.Next() {
				resp, err := c.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	}
	b.Run("front", func(b *testing.B) { run(b, front, "http://"+e.front+"/", "warm.example") })
	b.Run("handler", func(b *testing.B) { run(b, front, "http://"+hl.Addr().String()+"/", "warm.example") })
	b.Run("direct", func(b *testing.B) { run(b, direct, "http://warm/", "warm") })
}

// BenchmarkWarmRatio alternates rounds of 500ms through the front and
// directly to the socket (32 keep-alive client goroutines each, the same
// client code) and reports the median ratio of their throughputs, so that
// load from elsewhere on the machine hits both sides alike. The client runs
// in this process, sharing its cores with the front; the bench section also
// measures with the client in a process of its own. Each iteration is one
// pair of rounds: run it with -benchtime 6x or so.
//
// "goapp" is the tiny Go test app (the worst case for the front: the app
// costs about what the front does), "wsgi" a Python WSGI app under
// Debian's gunicorn (internal/testapp/wsgi, the workload the platform is
// for); "loops" variants serve warm requests with Config.EventLoops.
func BenchmarkWarmRatio(b *testing.B) {
	for _, bc := range []struct {
		name  string
		loops int
		wsgi  bool
	}{
		{"goapp", 0, false},
		{"goapp-loops", 2, false},
		{"wsgi", 0, true},
		{"wsgi-loops", 2, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newEnv(b, func(c *runner.Config) {
				c.Sink = &memSink{}
				c.EventLoops = bc.loops
			})
			s := spec("warm")
			if bc.wsgi {
				s = wsgiSpec(b, "warm")
			}
			e.put(s)
			e.mustGet("warm.example", "/")
			warmRatio(b, e, "warm")
		})
	}
}

// wsgiSpec is an app spec for internal/testapp/wsgi under gunicorn.
func wsgiSpec(b testing.TB, name string) runner.Spec {
	if _, err := os.Stat("/usr/bin/gunicorn"); err != nil {
		b.Fatal("the WSGI benchmark needs gunicorn: apt-get install gunicorn, or run scripts/install-deps.sh")
	}
	src, err := os.ReadFile("../internal/testapp/wsgi/app.py")
	if err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "wsgi-image")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app.py"), src, 0o644); err != nil {
		b.Fatal(err)
	}
	return runner.Spec{
		Name:  name,
		Hosts: []string{name + ".example"},
		Image: dir,
		Command: []string{"/bin/sh", "-c",
			"exec /usr/bin/gunicorn --workers 2 --worker-class gthread --threads 4 --bind unix:$PAASKIT_SOCKET app:app"},
	}
}

func warmRatio(b *testing.B, e *env, name string) {
	host := name + ".example"
	sock := filepath.Join(e.state, "run", strconv.FormatInt(e.status(name).Instance.ID, 10), "app.sock")
	front := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, DisableCompression: true}}
	direct := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, DisableCompression: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	round := func(c *http.Client, url, host string) int64 {
		var n int64
		var mu sync.Mutex
		var wg sync.WaitGroup
		end := time.Now().Add(500 * time.Millisecond)
		for g := 0; g < 32; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("GET", url, nil)
				req.Host = host
				var k int64
				for time.Now().Before(end) {
					resp, err := c.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
					k++
				}
				mu.Lock()
				n += k
				mu.Unlock()
			}()
		}
		wg.Wait()
		return n
	}
	// Warm both pools first.
	round(front, "http://"+e.front+"/", host)
	round(direct, "http://"+name+"/", name)
	var nf, nd int64
	var ratios []float64
	b.ResetTimer()
	for k := 0; k < b.N; k++ {
		f := round(front, "http://"+e.front+"/", host)
		d := round(direct, "http://"+name+"/", name)
		nf += f
		nd += d
		ratios = append(ratios, float64(f)/float64(d))
	}
	// The median of the per-round ratios: a burst of load from elsewhere
	// skews one round, not the figure.
	sort.Float64s(ratios)
	med := ratios[len(ratios)/2]
	if len(ratios)%2 == 0 {
		med = (ratios[len(ratios)/2-1] + med) / 2
	}
	b.ReportMetric(med, "front/direct")
	b.ReportMetric(float64(nf)/(float64(b.N)*0.5), "front-req/s")
	b.ReportMetric(float64(nd)/(float64(b.N)*0.5), "direct-req/s")
}

// BenchmarkCommandNetwork measures a one-off command (/bin/true, built and
// run to its end) under each network policy, alternating in one loop so
// the machine's noise hits all alike: "none-ms" (loopback only, the
// namespace from the pool), "egress-ms" and "allowonly-ms" (a veth on the
// bridge and its filter entries, made for the command and undone by the
// watcher once it ends). The extra cost of egress is the difference.
func BenchmarkCommandNetwork(b *testing.B) {
	e := newEnv(b, func(c *runner.Config) {
		c.Sink = &memSink{}
		c.EgressSubnet = fmt.Sprintf("10.230.%d.0/24", os.Getpid()%200+20)
	})
	e.put(spec("benchcmd"))
	policies := []struct {
		name string
		net  *runner.Network
	}{
		{"none", nil},
		{"egress", &runner.Network{Policy: runner.PolicyEgress}},
		{"allowonly", &runner.Network{Policy: runner.PolicyAllowOnly, Allow: []string{"192.0.2.1:80"}}},
	}
	sums := make([]time.Duration, len(policies))
	b.ResetTimer()
	for k := 0; k < b.N; k++ {
		for i, p := range policies {
			t0 := time.Now()
			cmd, err := e.r.CommandWith("benchcmd", []string{"/bin/true"}, runner.CommandOptions{Network: p.net})
			if err == nil {
				err = cmd.Run()
			}
			if err != nil {
				b.Fatal(p.name, err)
			}
			sums[i] += time.Since(t0)
		}
	}
	b.StopTimer()
	for i, p := range policies {
		b.ReportMetric(float64(sums[i].Microseconds())/float64(b.N)/1000, p.name+"-ms")
	}
}
