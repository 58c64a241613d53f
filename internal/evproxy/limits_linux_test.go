package evproxy

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/internal/admit"
	"github.com/paaskit/paaskit/internal/proxyproto"
)

// dialFrom connects from a given loopback source address.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

// closedWithoutAnswer reports whether c ends without a byte.
func closedWithoutAnswer(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	return n == 0 && err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestGateCapsPerAddressOnTheLoop(t *testing.T) {
	g, err := admit.New(admit.Config{MaxConnsPerIP: 5})
	require.NoError(t, err)
	hs := start(t, &testHandler{targets: []Target{tcp(echoBackend(t))}}, func(c *Config) { c.Gate = g })
	var held []net.Conn
	for i := 0; i < 5; i++ {
		c := dialFrom(t, "127.0.0.1", hs.addr)
		held = append(held, c)
	}
	require.Eventually(t, func() bool { _, n := g.Held(netip.MustParseAddr("127.0.0.1")); return n == 5 }, 5*time.Second, 5*time.Millisecond)
	for i := 0; i < 5; i++ {
		c := dialFrom(t, "127.0.0.1", hs.addr)
		require.True(t, closedWithoutAnswer(t, c), "connection %d over the cap is closed", i)
	}
	// Another address is served, and so are the held connections.
	c := dialFrom(t, "127.0.0.2", hs.addr)
	_, err = io.WriteString(c, "GET /other HTTP/1.1\r\nHost: h\r\n\r\n")
	require.NoError(t, err)
	resp, body := readBody(t, newReader(c))
	require.Equal(t, 200, resp.StatusCode)
	require.Contains(t, body, "127.0.0.2")
	_, err = io.WriteString(held[0], "GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
	require.NoError(t, err)
	resp, _ = readBody(t, newReader(held[0]))
	require.Equal(t, 200, resp.StatusCode)
	require.GreaterOrEqual(t, hs.p.Stats().Refused, int64(5))
	// Closing gives the slots back.
	for _, c := range held {
		_ = c.Close()
	}
	require.Eventually(t, func() bool { _, n := g.Held(netip.MustParseAddr("127.0.0.1")); return n == 0 }, 5*time.Second, 5*time.Millisecond)
}

func TestPanickingRouteIs502(t *testing.T) {
	h := &testHandler{targets: []Target{tcp(echoBackend(t))}}
	h.decide = func(r *Request) *Decision {
		if string(r.Head.Target) == "/panic" {
			panic("route hook bug")
		}
		return nil
	}
	hs := start(t, h, nil)
	c, br := dial(t, hs.addr)
	_, err := io.WriteString(c, "GET /panic HTTP/1.1\r\nHost: h\r\n\r\n")
	require.NoError(t, err)
	resp, _ := readBody(t, br)
	require.Equal(t, 502, resp.StatusCode)
	require.Equal(t, int64(1), hs.p.Stats().Panics)
	// The loop keeps serving.
	c, br = dial(t, hs.addr)
	_, err = io.WriteString(c, "GET /fine HTTP/1.1\r\nHost: h\r\n\r\n")
	require.NoError(t, err)
	resp, _ = readBody(t, br)
	require.Equal(t, 200, resp.StatusCode)
}

func TestProxyHeaderOnTheLoop(t *testing.T) {
	g, err := admit.New(admit.Config{MaxConnsPerIP: 3,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
	require.NoError(t, err)
	hs := start(t, &testHandler{targets: []Target{tcp(echoBackend(t))}}, func(c *Config) { c.Gate = g })
	client := netip.MustParseAddrPort("203.0.113.9:4711")
	dst := netip.MustParseAddrPort("127.0.0.1:80")
	req := "GET /p HTTP/1.1\r\nHost: h\r\n\r\n"
	for name, hdr := range map[string][]byte{
		"v1":   proxyproto.AppendV1(nil, client, dst),
		"v2":   proxyproto.AppendV2(nil, client, dst, []byte{4, 0, 2, 'o', 'k'}),
		"v2v6": proxyproto.AppendV2(nil, netip.MustParseAddrPort("[2001:db8::5]:1"), netip.MustParseAddrPort("[2001:db8::1]:80"), nil),
	} {
		c := dialFrom(t, "127.0.0.2", hs.addr)
		// The header and the request split across writes.
		_, err := c.Write(hdr[:7])
		require.NoError(t, err)
		time.Sleep(10 * time.Millisecond) // a second segment (not a timing assertion)
		_, err = c.Write(append(hdr[7:], req...))
		require.NoError(t, err)
		resp, body := readBody(t, newReader(c))
		require.Equal(t, 200, resp.StatusCode, name)
		want := client.Addr().String()
		if name == "v2v6" {
			want = "2001:db8::5"
		}
		require.Equal(t, "GET /p 0 "+want+" h", body, name)
	}
	// The named client's per-address cap applies, not the proxy's.
	for i := 0; i < 3; i++ {
		c := dialFrom(t, "127.0.0.2", hs.addr)
		_, err := c.Write(proxyproto.AppendV1(nil, netip.MustParseAddrPort("198.51.100.7:1"), dst))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { _, n := g.Held(netip.MustParseAddr("198.51.100.7")); return n == 3 }, 5*time.Second, 5*time.Millisecond)
	c := dialFrom(t, "127.0.0.2", hs.addr)
	_, err = c.Write(append(proxyproto.AppendV1(nil, netip.MustParseAddrPort("198.51.100.7:2"), dst), req...))
	require.NoError(t, err)
	require.True(t, closedWithoutAnswer(t, c), "a client over its cap behind a trusted proxy is refused")

	refused := map[string]struct{ src, in string }{
		"untrusted v1":         {"127.0.0.1", string(proxyproto.AppendV1(nil, client, dst)) + req},
		"untrusted v2":         {"127.0.0.1", string(proxyproto.AppendV2(nil, client, dst, nil)) + req},
		"trusted malformed":    {"127.0.0.2", "PROXY TCP4 203.0.113.9 127.0.0.1 99999 80\r\n" + req},
		"trusted no header":    {"127.0.0.2", req},
		"trusted v2 bad TLV":   {"127.0.0.2", string(proxyproto.AppendV2(nil, client, dst, []byte{4, 0, 9})) + strings.Repeat("x", 6) + req},
		"trusted truncated":    {"127.0.0.2", "PROXY TCP4 203.0.113.9 12"},
		"trusted v2 truncated": {"127.0.0.2", string(proxyproto.AppendV2(nil, client, dst, nil)[:20])},
	}
	for name, tc := range refused {
		c := dialFrom(t, tc.src, hs.addr)
		_, err := io.WriteString(c, tc.in)
		require.NoError(t, err)
		if strings.Contains(name, "truncated") {
			require.NoError(t, c.(*net.TCPConn).CloseWrite())
		}
		require.True(t, closedWithoutAnswer(t, c), name)
	}
	// Still serving.
	c = dialFrom(t, "127.0.0.1", hs.addr)
	_, err = io.WriteString(c, req)
	require.NoError(t, err)
	resp, _ := readBody(t, newReader(c))
	require.Equal(t, 200, resp.StatusCode)
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }
