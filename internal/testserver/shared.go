package testserver

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"
)

var (
	mu      sync.Mutex
	started = map[string]*Server{}
)

// Main runs a package's tests and then stops any server that Postgres,
// Redis or Etcd started for this test binary. Call it from TestMain:
//
//	func TestMain(m *testing.M) { testserver.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	mu.Lock()
	for _, s := range started {
		_ = s.Stop()
	}
	mu.Unlock()
	os.Exit(code)
}

// Postgres returns a PostgreSQL connection URL for the test: the server
// `make test` started, or one started for this test binary on first use.
// It fails the test, naming what to install or run, when there is none.
func Postgres(t testing.TB) string {
	t.Helper()
	return shared(t, EnvPostgres, "PostgreSQL", StartPostgres, func(addr string) (string, error) {
		return hostPort(addr)
	})
}

// Redis returns a Redis address (host:port) for the test, as Postgres does.
func Redis(t testing.TB) string {
	t.Helper()
	return shared(t, EnvRedis, "Redis", StartRedis, func(addr string) (string, error) { return addr, nil })
}

// Etcd returns an etcd client endpoint (http://host:port) for the test, as
// Postgres does.
func Etcd(t testing.TB) string {
	t.Helper()
	return shared(t, EnvEtcd, "etcd", StartEtcd, func(addr string) (string, error) {
		u, err := url.Parse(addr)
		if err != nil {
			return "", err
		}
		if u.Port() == "" {
			return "", fmt.Errorf("no port in %q", addr)
		}
		return u.Host, nil
	})
}

func shared(t testing.TB, env, what string, start func(context.Context) (*Server, error),
	dialAddr func(string) (string, error)) string {
	t.Helper()
	if addr := os.Getenv(env); addr != "" {
		hp, err := dialAddr(addr)
		if err != nil {
			t.Fatalf("%s=%q is not a usable address: %v (run the tests with `make test`)", env, addr, err)
		}
		c, err := net.DialTimeout("tcp", hp, 5*time.Second)
		if err != nil {
			t.Fatalf("%s at %s (from %s) is unreachable: %v; `make test` starts one", what, addr, env, err)
		}
		c.Close()
		return addr
	}
	mu.Lock()
	defer mu.Unlock()
	if s, ok := started[env]; ok {
		return s.Addr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := start(ctx)
	if err != nil {
		t.Fatalf("no %s for this test (%s is unset and starting one failed): %v", what, env, err)
	}
	started[env] = s
	return s.Addr
}

// hostPort extracts host:port from a postgres:// URL.
func hostPort(dsn string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", err
	}
	if u.Port() == "" {
		return "", fmt.Errorf("no port in %q", dsn)
	}
	return u.Host, nil
}
