package evproxy

import (
	"fmt"
	"time"
)

// Duration is one duration field of a Config with its default, for
// SetDurations; Dur makes one.
type Duration struct {
	p    *time.Duration
	def  time.Duration
	name string
}

// Dur is the duration field p, named name, with default def.
func Dur(p *time.Duration, def time.Duration, name string) Duration { return Duration{p, def, name} }

// Defaults of the fields every forwarder's Config has (this package's,
// internal/connproxy's, the balancer's), set by SetDurations and
// SetHeadLimits.
const (
	DefaultReadHeaderTimeout     = 10 * time.Second
	DefaultIdleTimeout           = 90 * time.Second
	DefaultDialTimeout           = 3 * time.Second
	DefaultResponseHeaderTimeout = 60 * time.Second
	DefaultShutdownTimeout       = 10 * time.Second
)

// SetDurations sets each zero duration of ds to its default and refuses
// a negative one, with an error that starts with pkg and names it.
func SetDurations(pkg string, ds ...Duration) error {
	for _, d := range ds {
		if *d.p < 0 {
			return fmt.Errorf("%s: %s %v is negative", pkg, d.name, *d.p)
		}
		if *d.p == 0 {
			*d.p = d.def
		}
	}
	return nil
}

// SetHeadLimits sets a zero head size bound to 32 KiB and a zero field
// count bound to 100, and refuses negative ones and a head bound below
// 256 bytes, with an error that starts with pkg.
func SetHeadLimits(pkg string, maxBytes, maxFields *int) error {
	if *maxBytes < 0 || *maxFields < 0 {
		return fmt.Errorf("%s: negative MaxHeaderBytes or MaxHeaderFields in Config", pkg)
	}
	if *maxBytes == 0 {
		*maxBytes = 32 << 10
	}
	if *maxBytes < 256 {
		return fmt.Errorf("%s: MaxHeaderBytes %d is below 256", pkg, *maxBytes)
	}
	if *maxFields == 0 {
		*maxFields = 100
	}
	return nil
}
