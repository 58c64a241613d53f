package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/testserver"
	"github.com/paaskit/paaskit/stats"
	"github.com/paaskit/paaskit/zmqloop"
)

func TestMain(m *testing.M) { testserver.Main(m) }

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Sprintf("status %d: %s", resp.StatusCode, b)
	}
	return string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStatsdFilesAndPostgres runs statsd with a PostgreSQL address and an
// emitter in this process, then reads logs, metrics and usage back over
// HTTP.
func TestStatsdFilesAndPostgres(t *testing.T) {
	t.Setenv("PAASKIT_STATS_SECRET", "a test secret of enough bytes....")
	pull, ack, web := "tcp://"+freeAddr(t), "tcp://"+freeAddr(t), freeAddr(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"-bind", pull, "-ack", ack, "-dir", dir, "-http", web,
			"-postgres", testserver.Postgres(t), "-log-level", "warn"}, &stderr, true)
	}()
	ring, _ := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("a test secret of enough bytes....")})
	codec, _ := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	e, err := stats.NewEmitter(stats.EmitterConfig{Collector: []string{pull}, Ack: []string{ack}, Codec: codec,
		SpoolDir: filepath.Join(dir, "spool"), Name: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	ectx, ecancel := context.WithCancel(context.Background())
	edone := make(chan error, 1)
	go func() { edone <- e.Run(ectx) }()
	app := fmt.Sprintf("hello%d", time.Now().UnixNano()%1e6)
	for i := range 5 {
		e.Log(stats.Tags{App: app, Instance: 1, Stream: "stdout"}, []byte(fmt.Sprintf("hello %d", i)))
	}
	e.Count(stats.Tags{App: app}, "requests", 3)
	stats.NewUsageMeter(e).Observe(time.Now(), []stats.AppUsage{{App: app, CPU: 2 * time.Second, Requests: 3}})

	waitFor(t, "the lines over HTTP", func() bool {
		return strings.Count(get(t, "http://"+web+"/logs/"+app+"?n=3"), "\n") == 3
	})
	if body := get(t, "http://"+web+"/logs/"+app+"?n=3"); !strings.HasSuffix(body, "1 stdout|hello 4\n") {
		t.Fatalf("tail: %q", body)
	}
	waitFor(t, "metrics", func() bool {
		return strings.Contains(get(t, "http://"+web+"/metrics"), `paaskit_app_requests_total{app="`+app+`"} 3`)
	})
	waitFor(t, "usage", func() bool {
		return strings.Contains(get(t, "http://"+web+"/usage?app="+app), `"CPUSeconds":2`)
	})
	waitFor(t, "the metric over a range", func() bool {
		return strings.Contains(get(t, "http://"+web+"/query?app="+app+"&name=requests&step=1h"), `"Sum":3`)
	})
	// Follow: the last line, then one written after the request.
	resp, err := http.Get("http://" + web + "/logs/" + app + "?follow=1&n=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if l, err := br.ReadString('\n'); err != nil || !strings.HasSuffix(l, "|hello 4\n") {
		t.Fatalf("followed first %q, %v", l, err)
	}
	e.Log(stats.Tags{App: app, Instance: 1, Stream: "stdout"}, []byte("while following"))
	if l, err := br.ReadString('\n'); err != nil || !strings.HasSuffix(l, "|while following\n") {
		t.Fatalf("followed then %q, %v", l, err)
	}
	resp.Body.Close()
	if b := get(t, "http://"+web+"/logs/..%2Fetc"); !strings.Contains(b, "status 400") {
		t.Fatalf("a bad app name: %q", b)
	}
	ecancel()
	if err := <-edone; err != nil {
		t.Fatal(err)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("statsd exited %d: %s", code, stderr.String())
	}
	if code := run(context.Background(), []string{"-no-such-flag"}, io.Discard, true); code != 2 {
		t.Fatalf("a bad flag: exit %d", code)
	}
}
