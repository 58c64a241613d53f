package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/paaskit/paaskit/daemon"
)

// A daemon with a server-like main loop and a resilient loop that fails
// once, is logged, and goes on.
func Example() {
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelError + 1}))
	d, err := daemon.New(daemon.Config{Name: "example", Logger: log, NoSignals: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())

	// A main loop: runs until the daemon stops it.
	_ = d.Add("server", func(ctx context.Context) error {
		<-ctx.Done()
		fmt.Println("server stopped")
		return nil
	})
	// A resilient loop: every 10ms; the first call fails, the daemon goes on.
	calls := 0
	_ = d.Every("sweeper", 10*time.Millisecond, func(ctx context.Context) error {
		calls++
		switch calls {
		case 1:
			return errors.New("disk busy")
		case 3:
			cancel() // stop the example after the third call
		}
		return nil
	}, daemon.Restart(daemon.Policy{MinBackoff: time.Millisecond}))

	err = d.Run(ctx)
	st := d.Status()
	fmt.Println("run:", err)
	fmt.Println(st[1].Name, "failures:", st[1].Failures, "last error:", st[1].LastError)
	// Output:
	// server stopped
	// run: <nil>
	// sweeper failures: 1 last error: disk busy
}

// An essential loop that fails stops the daemon, and the error names it.
func ExampleDaemon_Run_essentialLoopFails() {
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelError + 1}))
	d, _ := daemon.New(daemon.Config{Name: "example", Logger: log, NoSignals: true})
	_ = d.Add("listener", func(ctx context.Context) error {
		return errors.New("listen tcp :80: address already in use")
	})
	err := d.Run(context.Background())
	var stop *daemon.StopError
	if errors.As(err, &stop) {
		fmt.Println("stopped by loop:", stop.Loop)
	}
	fmt.Println(err)
	// Output:
	// stopped by loop: listener
	// daemon stopped: loop "listener": listen tcp :80: address already in use
}

// Raise the open-files soft limit to the hard limit, as servers with many
// connections do first.
func ExampleRaiseSoftLimit() {
	l, err := daemon.RaiseSoftLimit(daemon.OpenFiles)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(l.Soft == l.Hard)
	// Output: true
}
