package balancer

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// hostOn finds a host whose first node is id.
func hostOn(t testing.TB, tb *Table, id string) string {
	for i := 0; i < 10000; i++ {
		h := fmt.Sprintf("h%d.example.com", i)
		n, err := tb.Pick(h)
		require.NoError(t, err)
		if n.ID == id {
			return h
		}
	}
	t.Fatalf("no host maps to %s", id)
	return ""
}

// ejected reports whether node id is ejected now.
func ejected(t testing.TB, p *Proxy, id string) bool {
	t.Helper()
	for _, n := range p.Nodes() {
		if n.ID == id {
			return n.Ejected
		}
	}
	t.Fatalf("no node %s in %+v", id, p.Nodes())
	return false
}

func TestDeadNodeRetriedEjectedAndBack(t *testing.T) {
	a := backendServer(t, echoInfo("a"))
	bAddr, revive := deadAddrRevivable(t)
	tb := table(t, map[string]string{"a": addrOf(a), "b": bAddr}, map[string]string{"*": ""})
	clk := newFakeClock()
	p := startProxy(t, Config{Table: tb, EjectAfter: 100 * time.Millisecond, ProbeInterval: 20 * time.Millisecond, Clock: clk})
	host := hostOn(t, tb, "b")
	c := &http.Client{}
	// Connection refused before any byte: retried on the next node. Its
	// failures begin now.
	resp, _ := get(t, c, proxyURL(p)+"/", host)
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "a", resp.Header.Get("X-Node"))
	clk.Advance(99 * time.Millisecond)
	resp, _ = get(t, c, proxyURL(p)+"/", host)
	require.Equal(t, "a", resp.Header.Get("X-Node"))
	require.False(t, ejected(t, p, "b"), "within the grace period")
	// Still failing once the grace period is over: ejected.
	clk.Advance(time.Millisecond)
	resp, _ = get(t, c, proxyURL(p)+"/", host)
	require.Equal(t, "a", resp.Header.Get("X-Node"))
	require.True(t, ejected(t, p, "b"), "failing for EjectAfter")
	// Probed while it is down, it stays out.
	clk.probeRound(t)
	require.True(t, ejected(t, p, "b"))
	// It comes back at the first probe that finds it answering.
	ln := revive()
	srv := &http.Server{Handler: echoInfo("b")}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	clk.probeRound(t)
	require.False(t, ejected(t, p, "b"), "a probe found it answering")
	resp, _ = get(t, c, proxyURL(p)+"/", host)
	require.Equal(t, "b", resp.Header.Get("X-Node"))
}

func TestActiveHealthCheckEjects(t *testing.T) {
	var sick atomic.Bool
	a := backendServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" && sick.Load() {
			w.WriteHeader(500)
			return
		}
		_, _ = io.WriteString(w, "a")
	}))
	b := backendServer(t, echoInfo("b"))
	tb := table(t, map[string]string{"a": addrOf(a), "b": addrOf(b)}, map[string]string{"*": ""})
	clk := newFakeClock()
	p := startProxy(t, Config{Table: tb, EjectAfter: 50 * time.Millisecond, ProbeInterval: 20 * time.Millisecond, HealthCheckPath: "/health", Clock: clk})
	host := hostOn(t, tb, "a")
	clk.probeRound(t)
	require.False(t, ejected(t, p, "a"))
	sick.Store(true)
	clk.probeRound(t) // a's failures begin
	require.False(t, ejected(t, p, "a"), "within the grace period")
	clk.Advance(50 * time.Millisecond)
	clk.probeRound(t)
	require.True(t, ejected(t, p, "a"), "failing the check for EjectAfter")
	require.False(t, ejected(t, p, "b"))
	resp, _ := get(t, &http.Client{}, proxyURL(p)+"/", host)
	require.Equal(t, "b", resp.Header.Get("X-Node"), "the host goes to the next node")
	sick.Store(false)
	clk.probeRound(t)
	require.False(t, ejected(t, p, "a"), "back at the first check it passes")
	_, body := get(t, &http.Client{}, proxyURL(p)+"/", host)
	require.Equal(t, "a", body, "the host is back on its node")
}

// A node that closes idle keep-alive connections: the stale pooled
// connection fails before any response byte and the request is retried on
// a fresh one, invisibly to the client.
func TestStalePooledConnectionRetried(t *testing.T) {
	var conns atomic.Int32
	addr := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		conns.Add(1)
		if _, err := readReq(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		// and close without saying so
	})
	p := startProxy(t, Config{Table: table(t, map[string]string{"a": addr}, map[string]string{"*": ""})})
	c := &http.Client{}
	for i := 0; i < 5; i++ {
		resp, body := get(t, c, proxyURL(p)+"/", "x")
		require.Equal(t, 200, resp.StatusCode, "request %d", i)
		require.Equal(t, "ok", body)
	}
	require.GreaterOrEqual(t, conns.Load(), int32(5))
}

func TestBoundedLoadSpillsWithFloor(t *testing.T) {
	nodes := map[string]string{}
	for i := 0; i < 4; i++ {
		nodes[fmt.Sprintf("n%d", i)] = fmt.Sprintf("127.0.0.1:%d", 1000+i)
	}
	tb := table(t, nodes, map[string]string{"*": ""})
	p, err := New(Config{Table: tb, BoundedLoad: 1.25, BoundedLoadFloor: 3, Logger: testLogger(t)})
	require.NoError(t, err)
	order, err := tb.Order("site.example.com", 4)
	require.NoError(t, err)
	b := p.cur.Load()
	beOf := func(id string) *backend {
		for i, n := range b.t.nodes {
			if n.ID == id {
				return b.be[i]
			}
		}
		t.Fatal(id)
		return nil
	}
	var buf []byte
	norm, _ := normalizeHost(buf, []byte("site.example.com"))
	pl := b.t.lookup(norm)
	cc := &struct{ p *Proxy }{p: p}
	pick := func() string {
		idx, be := cc.p.pick(b, pl, hostHash(norm), nil)
		require.NotNil(t, be)
		return b.t.nodes[idx].ID
	}
	first := beOf(order[0].ID)
	// Below the floor: stays on its node even though it carries all load.
	first.inflight.Store(2)
	p.total.Store(2)
	require.Equal(t, order[0].ID, pick())
	// Over both the floor and 1.25x the mean: spills to the next node.
	first.inflight.Store(10)
	p.total.Store(10)
	require.Equal(t, order[1].ID, pick())
	// Load spread evenly: back to its own node.
	for _, n := range order {
		beOf(n.ID).inflight.Store(5)
	}
	p.total.Store(20)
	require.Equal(t, order[0].ID, pick())
	// Ejected: next in order.
	first.inflight.Store(0)
	first.ejected.Store(true)
	require.Equal(t, order[1].ID, pick())
	require.Error(t, func() error { _, err := New(Config{BoundedLoad: 0.5}); return err }())
}

// writeCert writes a self-signed pair for names into dir as base.crt/.key.
func writeCert(t testing.TB, dir, base string, names ...string) *x509.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(mrand.Int63()), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, base+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, base+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c
}

func TestTLSBySNIWithReload(t *testing.T) {
	dir := t.TempDir()
	pool := x509.NewCertPool()
	pool.AddCert(writeCert(t, dir, "a", "a.test"))
	pool.AddCert(writeCert(t, dir, "wild", "*.b.test"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "broken.crt"), []byte("not a cert"), 0o600))
	a := backendServer(t, echoInfo("a"))
	p := startProxy(t, Config{
		Table:      table(t, map[string]string{"a": addrOf(a)}, map[string]string{"*": ""}),
		TLSCertDir: dir,
	})
	client := func(name string) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: name}}}
	}
	url := "https://" + p.Addr().String() + "/"
	for _, name := range []string{"a.test", "x.b.test"} {
		resp, body := get(t, client(name), url, name)
		require.Equal(t, 200, resp.StatusCode, name)
		require.Contains(t, body, "proto=https")
		require.Contains(t, resp.TLS.PeerCertificates[0].DNSNames[0], name[len(name)-6:])
	}
	req, _ := http.NewRequest("GET", url, nil)
	_, err := client("c.test").Do(req)
	require.Error(t, err, "no certificate for c.test yet")
	pool.AddCert(writeCert(t, dir, "c", "c.test"))
	require.Error(t, p.ReloadCerts(), "the broken pair is reported")
	resp, _ := get(t, client("c.test"), url, "c.test")
	require.Equal(t, 200, resp.StatusCode)
}

func TestServeHTTPHandler(t *testing.T) {
	a := backendServer(t, echoInfo("a"))
	p, err := New(Config{Table: table(t, map[string]string{"a": addrOf(a)}, map[string]string{"example.com": ""}), Logger: testLogger(t)})
	require.NoError(t, err)
	front := httptest.NewServer(p)
	defer front.Close()
	resp, body := get(t, &http.Client{}, front.URL+"/q", "EXAMPLE.com.")
	require.Equal(t, 200, resp.StatusCode)
	require.Contains(t, body, "host=EXAMPLE.com.")
	require.Contains(t, body, "path=/q")
	resp, _ = get(t, &http.Client{}, front.URL+"/", "other.org")
	require.Equal(t, 404, resp.StatusCode)
}

// Swapping a table of 3,000 nodes and 10,000 hosts while requests flow
// fails no request; in-flight requests finish on the table they started on.
func TestReloadUnderLoadLosesNothing(t *testing.T) {
	be := backendServer(t, echoInfo("be"))
	build := func(variant int, reuse *Table) *Table {
		cfg := TableConfig{Reuse: reuse}
		for i := 0; i < 3000; i++ {
			v := 0
			if i < 100 {
				v = variant
			}
			cfg.Nodes = append(cfg.Nodes, Node{ID: fmt.Sprintf("n%d-%d", i, v), Addr: addrOf(be)})
		}
		for i := 0; i < 10000; i++ {
			cfg.Sites = append(cfg.Sites, Site{Host: fmt.Sprintf("h%d.example.com", i)})
		}
		tb, err := NewTable(cfg)
		require.NoError(t, err)
		return tb
	}
	p := startProxy(t, Config{Table: build(0, nil), MaxIdlePerNode: 4})
	// Three reloads, each after the workers finished at least 25 more
	// requests (counted, not timed), so requests flow across every swap.
	const reloads, between = 3, 25
	stop := make(chan struct{})
	finished := make(chan struct{}, 1024)
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
			defer c.CloseIdleConnections()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", proxyURL(p)+"/", nil)
				req.Host = fmt.Sprintf("h%d.example.com", (i*31+w*7)%10000)
				resp, err := c.Do(req)
				switch {
				case err != nil:
					failed.Add(1)
					t.Log(err)
				case resp.StatusCode != 200:
					_ = resp.Body.Close()
					failed.Add(1)
					t.Log(resp.Status)
				default:
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					ok.Add(1)
				}
				select {
				case finished <- struct{}{}:
				default:
				}
			}
		}(w)
	}
	wait := func() {
		for i := 0; i < between; i++ {
			<-finished
		}
	}
	for v := 1; v <= reloads; v++ {
		wait()
		p.SetTable(build(v%2+1, p.Table()))
	}
	wait()
	close(stop)
	wg.Wait()
	t.Logf("%d reloads, %d requests, %d failed", reloads, ok.Load(), failed.Load())
	require.Zero(t, failed.Load())
	require.GreaterOrEqual(t, ok.Load(), int64((reloads+1)*between))
}

// Run returns only after in-flight requests finish and everything it
// started has stopped; no goroutine is left behind.
func TestRunDrainsAndLeaksNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	release := make(chan struct{})
	gotReq := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(gotReq)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	}))
	defer slow.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p, err := New(Config{Listener: ln, Logger: testLogger(t), Table: table(t, map[string]string{"a": addrOf(slow)}, map[string]string{"*": ""})})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(ctx) }()
	<-p.Ready()
	// An idle keep-alive client and a request in flight.
	idle, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer idle.Close()
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	body := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/slow", nil)
		resp, err := c.Do(req)
		if err != nil {
			body <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		body <- string(b)
	}()
	<-gotReq
	cancel()
	select {
	case <-runDone:
		t.Fatal("Run returned with a request in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	require.Equal(t, "done", <-body)
	select {
	case err := <-runDone:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	_, err = net.Dial("tcp", ln.Addr().String())
	require.Error(t, err, "the listener is closed")
	require.ErrorIs(t, p.Run(context.Background()), ErrRunTwice)
	c.CloseIdleConnections()
}
