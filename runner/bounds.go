package runner

import (
	"fmt"
	"runtime/debug"

	"github.com/paaskit/paaskit/internal/admit"
)

// DefaultMaxBodyBytes is the request body limit when Config.MaxBodyBytes
// is 0: 100 MB, as the balancer's.
const DefaultMaxBodyBytes = 100 << 20

// setBoundsDefaults applies the defaults of the front's bounds and
// returns the gate that admits its connections.
func setBoundsDefaults(cfg *Config) (*admit.Gate, error) {
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxConnBuffer == 0 {
		cfg.MaxConnBuffer = 16 << 10
	}
	if cfg.MaxConnBuffer < 0 || cfg.MaxConnBuffer > 16<<20 {
		return nil, fmt.Errorf("runner: MaxConnBuffer %d is outside 0 (default) to 16 MiB", cfg.MaxConnBuffer)
	}
	perIP := cfg.MaxConnsPerIP
	if perIP == 0 {
		perIP = -1 // see Config.MaxConnsPerIP
	}
	g, err := admit.New(admit.Config{MaxConns: cfg.MaxConns, MaxConnsPerIP: perIP, TrustedProxies: cfg.TrustedProxies, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	return g, nil
}

// writeLineSafe is Sink.WriteLine with a panic in it turned into an
// error that carries its stack (reported like a failed write, once), so
// that a broken sink loses lines instead of taking the runner down.
func writeLineSafe(s Sink, l *Line) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("runner: Sink.WriteLine panicked: %v\n%s", v, debug.Stack())
		}
	}()
	return s.WriteLine(l)
}
