package admit

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/proxyproto"
)

func TestGateCaps(t *testing.T) {
	g, err := New(Config{MaxConns: 5, MaxConnsPerIP: 2})
	if err != nil {
		t.Fatal(err)
	}
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i := 0; i < 2; i++ {
		if !g.Admit(a, false) {
			t.Fatalf("admit %d from a refused", i)
		}
	}
	if g.Admit(a, false) {
		t.Fatal("third from a admitted over the per-address cap")
	}
	// IPv6 counts per /64.
	v6a, v6b := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")
	if !g.Admit(v6a, false) || !g.Admit(v6b, false) || g.Admit(netip.MustParseAddr("2001:db8:1:2::77"), false) {
		t.Fatal("the /64 is not one bucket")
	}
	if !g.Admit(b, false) {
		t.Fatal("b refused under the process cap")
	}
	if g.Admit(netip.MustParseAddr("192.0.2.3"), false) {
		t.Fatal("admitted over the process cap")
	}
	g.Release(a)
	if total, fromA := g.Held(a); total != 4 || fromA != 1 {
		t.Fatalf("held %d, %d from a after a release", total, fromA)
	}
	if !g.Admit(a, false) {
		t.Fatal("a refused after a release")
	}
}

func TestGateDefaultsAndOff(t *testing.T) {
	g, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if mc, mp := g.Limits(); mc < 64 || mp != 1024 {
		t.Fatalf("defaults %d, %d", mc, mp)
	}
	g, _ = New(Config{MaxConns: -1, MaxConnsPerIP: -1})
	a := netip.MustParseAddr("192.0.2.1")
	for i := 0; i < 5000; i++ {
		if !g.Admit(a, false) {
			t.Fatalf("refused %d with the caps off", i)
		}
	}
	if _, err := New(Config{TrustedProxies: []netip.Prefix{{}}}); err == nil {
		t.Fatal("an invalid prefix was accepted")
	}
}

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestConnHeader(t *testing.T) {
	src := netip.MustParseAddrPort("203.0.113.9:4711")
	dst := netip.MustParseAddrPort("198.51.100.1:80")
	for name, hdr := range map[string][]byte{
		"v1": proxyproto.AppendV1(nil, src, dst),
		"v2": proxyproto.AppendV2(nil, src, dst, nil),
	} {
		g, _ := New(Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
		cl, sv := pair(t)
		ac := g.Accept(sv, time.Second)
		if _, err := cl.Write(append(hdr, "hello"...)); err != nil {
			t.Fatal(err)
		}
		if got := ac.RemoteAddr().String(); got != src.String() {
			t.Fatalf("%s: RemoteAddr %s, want %s", name, got, src)
		}
		if _, err := ac.SyscallConn(); err == nil {
			t.Fatalf("%s: raw access with bytes buffered", name)
		}
		b := make([]byte, 5)
		if _, err := io.ReadFull(ac, b); err != nil || string(b) != "hello" {
			t.Fatalf("%s: read %q, %v", name, b, err)
		}
		if total, fromSrc := g.Held(src.Addr()); total != 1 || fromSrc != 1 {
			t.Fatalf("%s: held %d, %d from the client", name, total, fromSrc)
		}
		ac.Close()
		ac.Close()
		if total, fromSrc := g.Held(src.Addr()); total != 0 || fromSrc != 0 {
			t.Fatalf("%s: held %d, %d after close", name, total, fromSrc)
		}
	}
}

func TestConnBadHeaderRefused(t *testing.T) {
	for name, in := range map[string]string{
		"malformed": "PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\nGET / HTTP/1.1\r\n\r\n",
		"no header": "GET / HTTP/1.1\r\n\r\n",
		"truncated": "PROXY TCP4 1.2.3.4",
	} {
		g, _ := New(Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
		cl, sv := pair(t)
		ac := g.Accept(sv, time.Second)
		if _, err := io.WriteString(cl, in); err != nil {
			t.Fatal(err)
		}
		cl.(*net.TCPConn).CloseWrite()
		_, err := ac.Read(make([]byte, 10))
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("%s: read error %v, want ErrRefused", name, err)
		}
		// The socket is closed: the client sees EOF.
		_ = cl.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := cl.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Fatalf("%s: client read %d, %v", name, n, err)
		}
		ac.Close()
		if total, _ := g.Held(netip.Addr{}); total != 0 {
			t.Fatalf("%s: %d held after close", name, total)
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	ps, err := ParsePrefixes(" 10.0.0.0/8, 192.0.2.1,2001:db8::/32,::ffff:198.51.100.1 ,")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32", "198.51.100.1/32"}
	if len(ps) != len(want) {
		t.Fatalf("got %v", ps)
	}
	for i, p := range ps {
		if p.String() != want[i] {
			t.Fatalf("got %v, want %v", ps, want)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "1.2.3"} {
		if _, err := ParsePrefixes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if ps, err := ParsePrefixes(""); err != nil || len(ps) != 0 {
		t.Fatalf("empty: %v, %v", ps, err)
	}
}

// Detach hands the socket and the slot over: the Conn's Close then
// neither closes the socket nor gives the slot back, and a second Detach
// fails.
func TestConnDetach(t *testing.T) {
	g, _ := New(Config{MaxConns: 10, MaxConnsPerIP: 10})
	client, server := pair(t)
	ac := g.Accept(server, time.Second)
	if ac == nil {
		t.Fatal("refused")
	}
	peer := AddrOf(server.RemoteAddr())
	sock, slot, ok := ac.Detach()
	if !ok || sock != server || slot != peer {
		t.Fatalf("Detach = %v, %v, %v", sock, slot, ok)
	}
	if _, _, ok := ac.Detach(); ok {
		t.Fatal("detached twice")
	}
	_ = ac.Close()
	if total, _ := g.Held(peer); total != 1 {
		t.Fatalf("Close after Detach gave the slot back: %d held", total)
	}
	if _, err := sock.Write([]byte("x")); err != nil {
		t.Fatalf("Close after Detach closed the socket: %v", err)
	}
	b := make([]byte, 1)
	if _, err := client.Read(b); err != nil || b[0] != 'x' {
		t.Fatalf("read %q, %v", b, err)
	}
	g.Release(slot)
	if total, _ := g.Held(peer); total != 0 {
		t.Fatalf("%d held after the new owner's release", total)
	}
}
