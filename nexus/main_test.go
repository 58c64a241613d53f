package nexus

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/testserver"
)

// childResolverEnv, when set to a bind endpoint, makes the test binary a
// resolver process (for the tests that kill one).
const childResolverEnv = "NEXUS_TEST_CHILD_RESOLVER"

// childIntervalEnv sets the child resolver's heartbeat interval.
const childIntervalEnv = "NEXUS_TEST_CHILD_INTERVAL"

func TestMain(m *testing.M) {
	if ep := os.Getenv(childResolverEnv); ep != "" {
		os.Exit(runChildResolver(ep))
	}
	testserver.Main(m)
}

func runChildResolver(ep string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	interval := testInterval
	if d, err := time.ParseDuration(os.Getenv(childIntervalEnv)); err == nil {
		interval = d
	}
	r, err := NewResolver(ResolverConfig{Bind: strings.Split(ep, ","), Codec: mustCodec(nil), Interval: interval, Logger: quietLog()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	go func() {
		<-r.Ready()
		fmt.Println("ready", strings.Join(r.Endpoints(), ","))
	}()
	if err := r.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
