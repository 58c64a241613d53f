// Command heartbeat is the reference daemon for package daemon: a status
// server, a heartbeat every interval, and a deliberately flaky sweeper that
// fails now and then to show the supervisor logging and backing off while
// the daemon stays up. SIGTERM or Ctrl-C stops it cleanly, in reverse order.
//
// Usage:
//
//	heartbeat [flags]
//
// Then look at http://127.0.0.1:8089/status for every loop's state, runs,
// restarts and last error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/paaskit/paaskit/daemon"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("heartbeat", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8089", "address of the status server (/status, /healthz)")
	interval := fs.Duration("interval", time.Second, "time between heartbeats")
	failEvery := fs.Int("fail-every", 4, "the sweeper fails on every Nth call (0: never), to show recovery")
	lc := daemon.LogFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: heartbeat [flags]\n\nA reference daemon on paaskit's supervisor.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	lc.Name = "heartbeat"
	log, closeLog, err := daemon.NewLogger(*lc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "heartbeat:", err)
		return 2
	}
	defer closeLog()

	d, err := daemon.New(daemon.Config{Name: "heartbeat", Logger: log})
	if err == nil {
		err = setup(d, log, *listen, *interval, *failEvery)
	}
	if err != nil {
		log.Error("cannot start", "error", err)
		return 2
	}
	if err := d.Run(context.Background()); err != nil {
		return 1
	}
	return 0
}

func setup(d *daemon.Daemon, log *slog.Logger, listen string, interval time.Duration, failEvery int) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("status server: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /status", d.StatusHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	// The status server is added first, so it is the last to stop and
	// answers while the other loops shut down.
	if err := d.Add("status", func(ctx context.Context) error {
		log.Info("status server listening", "url", "http://"+ln.Addr().String()+"/status")
		go func() {
			<-ctx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(shutdown)
		}()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}); err != nil {
		return err
	}
	start := time.Now()
	beats := 0
	if err := d.Every("heartbeat", interval, func(ctx context.Context) error {
		beats++
		log.Info("beat", "n", beats, "uptime", time.Since(start).Round(time.Millisecond))
		return nil
	}); err != nil {
		return err
	}
	sweeps := 0
	return d.Every("sweeper", interval, func(ctx context.Context) error {
		sweeps++
		if failEvery > 0 && sweeps%failEvery == 0 {
			if sweeps%(2*failEvery) == 0 {
				panic(fmt.Sprintf("sweep %d: simulated crash", sweeps))
			}
			return fmt.Errorf("sweep %d: simulated failure", sweeps)
		}
		return nil
	}, daemon.Restart(daemon.Policy{MaxBackoff: 8 * interval}))
}
