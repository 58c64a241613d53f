package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
)

// syslogWriter owns the connection to a remote syslog server. Handlers hand
// it finished lines through a bounded queue; it never blocks them.
type syslogWriter struct {
	network, addr string
	local         *slog.Logger // where the writer reports its own trouble
	queue         chan []byte
	quit          chan struct{}
	done          chan struct{}
	closeOnce     sync.Once
	dropped       atomic.Int64
}

func newSyslogWriter(c LogConfig, local *slog.Logger) (*syslogWriter, error) {
	u, err := url.Parse(c.Syslog)
	if err != nil {
		return nil, fmt.Errorf("daemon: syslog address %q: %w", c.Syslog, err)
	}
	if u.Scheme != "udp" && u.Scheme != "tcp" {
		return nil, fmt.Errorf("daemon: syslog address %q: scheme must be udp or tcp", c.Syslog)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return nil, fmt.Errorf("daemon: syslog address %q: want host:port: %w", c.Syslog, err)
	}
	n := c.SyslogQueue
	if n <= 0 {
		n = 4096
	}
	w := &syslogWriter{
		network: u.Scheme, addr: u.Host, local: local,
		queue: make(chan []byte, n), quit: make(chan struct{}), done: make(chan struct{}),
	}
	go w.run()
	return w, nil
}

// enqueue offers a line to the writer, dropping it when the queue is full.
func (w *syslogWriter) enqueue(line []byte) {
	select {
	case <-w.quit:
		w.dropped.Add(1)
	case w.queue <- line:
	default:
		w.dropped.Add(1)
	}
}

// Close stops the writer after sending what is queued, waiting at most a
// second.
func (w *syslogWriter) Close() error {
	w.closeOnce.Do(func() { close(w.quit) })
	select {
	case <-w.done:
	case <-time.After(time.Second):
	}
	return nil
}

func (w *syslogWriter) run() {
	defer close(w.done)
	var conn net.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	var retryAt time.Time
	backoff := 500 * time.Millisecond
	down := false
	send := func(line []byte) {
		if conn == nil {
			if time.Now().Before(retryAt) {
				w.dropped.Add(1)
				return
			}
			c, err := net.DialTimeout(w.network, w.addr, 2*time.Second)
			if err != nil {
				if !down {
					w.local.Warn("syslog unreachable; dropping lines until it answers", "addr", w.addr, "error", err)
					down = true
				}
				retryAt = time.Now().Add(backoff)
				backoff = min(backoff*2, 30*time.Second)
				w.dropped.Add(1)
				return
			}
			conn, backoff = c, 500*time.Millisecond
			if down {
				w.local.Info("syslog reachable again", "addr", w.addr, "dropped", w.dropped.Load())
				down = false
			}
		}
		if w.network == "tcp" {
			line = append(strconv.AppendInt(nil, int64(len(line)), 10), append([]byte{' '}, line...)...)
		}
		_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write(line); err != nil {
			conn.Close()
			conn = nil
			w.dropped.Add(1)
			if w.network == "tcp" && !down {
				w.local.Warn("syslog write failed; reconnecting", "addr", w.addr, "error", err)
				down = true
			}
		}
	}
	for {
		select {
		case line := <-w.queue:
			send(line)
		case <-w.quit:
			deadline := time.Now().Add(900 * time.Millisecond)
			for time.Now().Before(deadline) {
				select {
				case line := <-w.queue:
					send(line)
				default:
					return
				}
			}
			return
		}
	}
}

// syslogHandler formats records as RFC 5424 lines: the message followed by
// its attributes as key=value pairs, groups joined with dots.
type syslogHandler struct {
	w        *syslogWriter
	facility int
	host     string
	app      string
	pid      string
	level    slog.Leveler
	prefix   string // pre-formatted attributes from WithAttrs
	group    string // current group prefix, "a.b."
}

func newSyslogHandler(w *syslogWriter, c LogConfig, opts *slog.HandlerOptions) *syslogHandler {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "-"
	}
	f := c.Facility
	if f == 0 {
		f = 3
	}
	return &syslogHandler{w: w, facility: f, host: sdName(host, 255), app: sdName(c.Name, 48),
		pid: strconv.Itoa(os.Getpid()), level: opts.Level}
}

// sdName makes s a valid RFC 5424 header field: printable ASCII without
// spaces, at most n bytes, "-" when empty.
func sdName(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r > 32 && r < 127 {
			return r
		}
		return '_'
	}, s)
	if len(s) > n {
		s = s[:n]
	}
	if s == "" {
		return "-"
	}
	return s
}

func (h *syslogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func severity(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	default:
		return 7
	}
}

func (h *syslogHandler) Handle(_ context.Context, r slog.Record) error {
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	var b []byte
	b = fmt.Appendf(b, "<%d>1 %s %s %s %s - - ", h.facility*8+severity(r.Level),
		t.UTC().Format("2006-01-02T15:04:05.000000Z"), h.host, h.app, h.pid)
	b = append(b, r.Message...)
	b = append(b, h.prefix...)
	r.Attrs(func(a slog.Attr) bool {
		b = appendAttr(b, h.group, a)
		return true
	})
	h.w.enqueue(b)
	return nil
}

func (h *syslogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	var b []byte
	for _, a := range as {
		b = appendAttr(b, h.group, a)
	}
	n.prefix = h.prefix + string(b)
	return &n
}

func (h *syslogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.group = h.group + name + "."
	return &n
}

func appendAttr(b []byte, group string, a slog.Attr) []byte {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		g := group
		if a.Key != "" {
			g += a.Key + "."
		}
		for _, ga := range v.Group() {
			b = appendAttr(b, g, ga)
		}
		return b
	}
	if a.Equal(slog.Attr{}) {
		return b
	}
	b = append(b, ' ')
	b = append(b, group...)
	b = append(b, a.Key...)
	b = append(b, '=')
	s := v.String()
	if needsQuote(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

func needsQuote(s string) bool {
	if s == "" {
		return true
	}
	for _, r := range s {
		if r == '"' || r == '=' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
	}
	return false
}
