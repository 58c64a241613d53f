// Command load is the Go load generator of runner's bench section: N
// goroutines doing keep-alive GETs with net/http's client for a while, over
// TCP to a URL or straight to a unix socket, printing requests per second.
// The same client against every target keeps the comparison fair.
//
//	load -url http://127.0.0.1:8080/ -host blog.example -c 32 -d 2s
//	load -unix /path/app.sock -c 32 -d 2s
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "http://localhost/", "URL to GET")
	host := flag.String("host", "", "Host header (default: the URL's)")
	unix := flag.String("unix", "", "dial this unix socket instead of the URL's host")
	conc := flag.Int("c", 32, "concurrent keep-alive clients")
	dur := flag.Duration("d", 2*time.Second, "how long to run")
	timeout := flag.Duration("timeout", 10*time.Second, "give up on one request after this long (counted as an error)")
	flag.Parse()
	tr := &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}
	if *unix != "" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", *unix)
		}
	}
	c := &http.Client{Transport: tr, Timeout: *timeout}
	var n, errs atomic.Int64
	var firstErr sync.Once
	report := func(msg string) {
		firstErr.Do(func() { fmt.Fprintln(os.Stderr, "load: first error:", msg) })
	}
	end := time.Now().Add(*dur)
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < *conc; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", *url, nil)
			if *host != "" {
				req.Host = *host
			}
			for time.Now().Before(end) {
				resp, err := c.Do(req)
				if err != nil {
					errs.Add(1)
					report(err.Error())
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs.Add(1)
					report(fmt.Sprintf("status %d: %.200s", resp.StatusCode, body))
					continue
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	fmt.Printf("%.0f req/s, %d requests, %d errors\n", float64(n.Load())/el, n.Load(), errs.Load())
	if errs.Load() > 0 {
		os.Exit(1)
	}
}
