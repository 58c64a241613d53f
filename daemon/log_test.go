package daemon

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var rfc5424 = regexp.MustCompile(`^<(\d+)>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (\S+) (\S+) (\d+) - - (.*)$`)

func TestSyslogUDPReceivesRFC5424LinesAndStderrToo(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	stderr := &syncBuffer{}
	log, closeLog, err := NewLogger(LogConfig{Name: "heartbeat", Stderr: stderr, Format: "json",
		Syslog: "udp://" + pc.LocalAddr().String()})
	require.NoError(t, err)
	log.With("loop", "beat").WithGroup("req").Warn("slow beat", "took", 2*time.Second, "path", "/a b")
	log.Debug("not at debug level")
	require.NoError(t, closeLog())

	require.NoError(t, pc.SetReadDeadline(time.Now().Add(10*time.Second)))
	buf := make([]byte, 4096)
	n, _, err := pc.ReadFrom(buf)
	require.NoError(t, err)
	m := rfc5424.FindStringSubmatch(string(buf[:n]))
	require.NotNil(t, m, "not RFC 5424: %q", buf[:n])
	assert.Equal(t, "28", m[1], "facility daemon (3) * 8 + warning (4)")
	assert.Equal(t, "heartbeat", m[3])
	assert.Equal(t, strconv.Itoa(os.Getpid()), m[4])
	assert.Equal(t, `slow beat loop=beat req.took=2s req.path="/a b"`, m[5])
	assert.Contains(t, stderr.String(), `"msg":"slow beat"`)
	assert.NotContains(t, stderr.String(), "not at debug level")
}

func TestSyslogTCPUsesOctetCounting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	lines := make(chan string, 10)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			var size int
			if _, err := fmt.Fscanf(r, "%d ", &size); err != nil {
				return
			}
			b := make([]byte, size)
			if _, err := io.ReadFull(r, b); err != nil {
				return
			}
			lines <- string(b)
		}
	}()
	log, closeLog, err := NewLogger(LogConfig{Name: "d", Stderr: &syncBuffer{}, Syslog: "tcp://" + ln.Addr().String()})
	require.NoError(t, err)
	log.Error("first", "n", 1)
	log.Info("second line\nwith newline")
	require.NoError(t, closeLog())
	for _, want := range []string{"<27>1 ", "<30>1 "} {
		select {
		case l := <-lines:
			assert.True(t, strings.HasPrefix(l, want), l)
		case <-time.After(10 * time.Second):
			t.Fatal("no line received")
		}
	}
}

// A syslog that is unreachable, refuses connections or never reads must not
// block logging or the daemon.
func TestUnreachableSyslogNeverBlocksTheDaemon(t *testing.T) {
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refusedAddr := refused.Addr().String()
	refused.Close()

	// A server that accepts and never reads: writes stall once the socket
	// buffers fill.
	stall, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer stall.Close()
	go func() {
		for {
			c, err := stall.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()

	for _, addr := range []string{"tcp://" + refusedAddr, "udp://" + refusedAddr, "tcp://" + stall.Addr().String(),
		"tcp://unresolvable.invalid:514"} {
		t.Run(addr, func(t *testing.T) {
			stderr := &syncBuffer{}
			log, closeLog, err := NewLogger(LogConfig{Stderr: stderr, Syslog: addr, SyslogQueue: 64})
			require.NoError(t, err)
			d, err := New(Config{Name: "d", Logger: log, NoSignals: true})
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			var beats int
			require.NoError(t, d.Every("beat", time.Microsecond, func(ctx context.Context) error {
				beats++
				log.Info(strings.Repeat("x", 1000), "beat", beats)
				if beats == 20000 {
					cancel()
				}
				return nil
			}))
			ch := runAsync(ctx, d)
			require.NoError(t, waitErr(t, ch))
			require.NoError(t, closeLog())
			assert.GreaterOrEqual(t, beats, 20000)
			assert.Contains(t, stderr.String(), "beat=20000", "stderr got every line")
		})
	}
}

func TestNewLoggerRejectsBadConfig(t *testing.T) {
	for cfg, want := range map[LogConfig]string{
		{Format: "xml"}:                      `log format "xml"`,
		{Syslog: "http://127.0.0.1:514"}:     "scheme must be udp or tcp",
		{Syslog: "udp://127.0.0.1"}:          "want host:port",
		{Syslog: "udp://[::1:514"}:           `syslog address "udp://[::1:514"`,
		{Syslog: "tcp://localhost:notaport"}: "invalid port",
	} {
		_, _, err := NewLogger(cfg)
		assert.ErrorContains(t, err, want)
	}
}

func TestLogFlags(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c := LogFlags(fs)
	require.NoError(t, fs.Parse([]string{"-log-format", "json", "-log-level", "warn", "-syslog", "udp://127.0.0.1:514"}))
	assert.Equal(t, LogConfig{Format: "json", Level: slog.LevelWarn, Syslog: "udp://127.0.0.1:514"}, *c)
	fs = flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(&syncBuffer{})
	LogFlags(fs)
	assert.Error(t, fs.Parse([]string{"-log-level", "loud"}))
}
