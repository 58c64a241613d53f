package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// LogConfig configures NewLogger. The zero value logs text at Info level to
// stderr only.
type LogConfig struct {
	// Name is the program name in syslog lines (APP-NAME); empty means the
	// base name of os.Args[0].
	Name string
	// Format of the stderr lines: "text" (the default) or "json".
	Format string
	// Level is the lowest level logged; the zero value is Info.
	Level slog.Level
	// Stderr is where the local lines go; nil means os.Stderr.
	Stderr io.Writer
	// Syslog is a remote syslog address, "udp://host:port" or
	// "tcp://host:port"; empty means none. Lines are sent in RFC 5424
	// format (over TCP with RFC 6587 octet counting) from a background
	// writer with a bounded queue: a syslog server that is slow, down or
	// unreachable never blocks the daemon; lines it cannot take are
	// dropped and counted.
	Syslog string
	// Facility is the syslog facility number; zero means 3 (daemon).
	Facility int
	// SyslogQueue bounds the lines waiting for the syslog writer; zero
	// means 4096.
	SyslogQueue int
}

// LogFlags registers -log-format, -log-level and -syslog on fs and returns
// the LogConfig they fill in when fs is parsed.
func LogFlags(fs *flag.FlagSet) *LogConfig {
	c := &LogConfig{}
	fs.StringVar(&c.Format, "log-format", "text", "stderr log format: text or json")
	fs.Func("log-level", "lowest level logged: debug, info, warn or error (default info)", func(s string) error {
		return c.Level.UnmarshalText([]byte(s))
	})
	fs.StringVar(&c.Syslog, "syslog", "", "also log to a remote syslog: udp://host:port or tcp://host:port (RFC 5424)")
	return c
}

// NewLogger returns a logger that writes to stderr and, when configured, to
// a remote syslog at the same time, and a close function that flushes and
// stops the syslog writer (waiting at most a second). Close it last.
func NewLogger(c LogConfig) (*slog.Logger, func() error, error) {
	if c.Name == "" {
		c.Name = filepath.Base(os.Args[0])
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	opts := &slog.HandlerOptions{Level: c.Level}
	var local slog.Handler
	switch strings.ToLower(c.Format) {
	case "", "text":
		local = slog.NewTextHandler(c.Stderr, opts)
	case "json":
		local = slog.NewJSONHandler(c.Stderr, opts)
	default:
		return nil, nil, fmt.Errorf("daemon: log format %q: want text or json", c.Format)
	}
	if c.Syslog == "" {
		return slog.New(local), func() error { return nil }, nil
	}
	sw, err := newSyslogWriter(c, slog.New(local))
	if err != nil {
		return nil, nil, err
	}
	h := &fanout{handlers: []slog.Handler{local, newSyslogHandler(sw, c, opts)}}
	return slog.New(h), sw.Close, nil
}

// fanout sends each record to every handler that is enabled for it.
type fanout struct{ handlers []slog.Handler }

func (f *fanout) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range f.handlers {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (f *fanout) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range f.handlers {
		if h.Enabled(ctx, r.Level) {
			if err := h.Handle(ctx, r.Clone()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (f *fanout) WithAttrs(as []slog.Attr) slog.Handler {
	n := &fanout{handlers: make([]slog.Handler, len(f.handlers))}
	for i, h := range f.handlers {
		n.handlers[i] = h.WithAttrs(as)
	}
	return n
}

func (f *fanout) WithGroup(name string) slog.Handler {
	n := &fanout{handlers: make([]slog.Handler, len(f.handlers))}
	for i, h := range f.handlers {
		n.handlers[i] = h.WithGroup(name)
	}
	return n
}
