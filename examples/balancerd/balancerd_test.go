package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/balancer"
)

func TestHelpDocumentsFlagsAndFormat(t *testing.T) {
	var out bytes.Buffer
	require.Equal(t, 0, run([]string{"--help"}, &out))
	for _, want := range []string{"-table", "-listen", "-admin", "-tls-certs", "SIGHUP", "node ID ADDR", "host PATTERN", "policy maglev|modulo"} {
		require.Contains(t, out.String(), want)
	}
	out.Reset()
	require.Equal(t, 2, run(nil, &out))
	require.Contains(t, out.String(), "--table is required")
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func node(t *testing.T, name string) string {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// writeAtomic replaces path the way deploy tools do.
func writeAtomic(t *testing.T, path, content string) {
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(content), 0o644))
	require.NoError(t, os.Rename(tmp, path))
}

type status struct {
	Nodes []struct {
		ID string `json:"id"`
	} `json:"nodes"`
	Reloads     int    `json:"reloads"`
	ReloadError string `json:"reload_error"`
}

func TestReloadsOnChangeAndSIGHUPAndKeepsOldTableOnBadFile(t *testing.T) {
	a, b := node(t, "A"), node(t, "B")
	dir := t.TempDir()
	path := filepath.Join(dir, "table")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf("node a %s\nhost example.com a\n", a)), 0o644))
	o, err := parseFlags([]string{"--table", path, "--listen", "127.0.0.1:0", "--admin", freeAddr(t), "--poll", "50ms"}, io.Discard)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan *balancer.Proxy, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, o, slog.New(slog.NewTextHandler(io.Discard, nil)), func(p *balancer.Proxy) { started <- p })
	}()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	p := <-started
	fetch := func() string {
		req, _ := http.NewRequest("GET", "http://"+p.Addr().String()+"/", nil)
		req.Host = "Example.com"
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, body)
	}
	adminStatus := func() status {
		var st status
		require.Eventually(t, func() bool {
			resp, err := http.Get("http://" + o.admin + "/nodes")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			return json.NewDecoder(resp.Body).Decode(&st) == nil
		}, 5*time.Second, 10*time.Millisecond)
		return st
	}
	require.Equal(t, "200 A", fetch())

	// A change to the file is picked up.
	writeAtomic(t, path, fmt.Sprintf("node a %s\nnode b %s\nhost example.com b\n", a, b))
	require.Eventually(t, func() bool { return fetch() == "200 B" }, 5*time.Second, 20*time.Millisecond)

	// Empty and malformed files keep the old table, and say why.
	for _, bad := range []string{"", "node b\nhost example.com b\n", "node b " + b + "\nhost example.com nosuchnode\n"} {
		writeAtomic(t, path, bad)
		require.Eventually(t, func() bool { return adminStatus().ReloadError != "" }, 5*time.Second, 20*time.Millisecond)
		require.Equal(t, "200 B", fetch())
		require.Len(t, adminStatus().Nodes, 2)
		writeAtomic(t, path, fmt.Sprintf("node a %s\nnode b %s\nhost example.com b\n", a, b))
		require.Eventually(t, func() bool { return adminStatus().ReloadError == "" }, 5*time.Second, 20*time.Millisecond)
	}

	// SIGHUP reloads even when size and mtime look unchanged.
	before := adminStatus().Reloads
	fi, err := os.Stat(path)
	require.NoError(t, err)
	content := fmt.Sprintf("node a %s\nnode b %s\nhost example.com a\n", a, b)
	require.Equal(t, fi.Size(), int64(len(content)))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	require.NoError(t, os.Chtimes(path, fi.ModTime(), fi.ModTime()))
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))
	require.Eventually(t, func() bool { return fetch() == "200 A" }, 5*time.Second, 20*time.Millisecond)
	require.Greater(t, adminStatus().Reloads, before)
}

func TestBadFlagsAndInitialTable(t *testing.T) {
	var out bytes.Buffer
	require.Equal(t, 2, run([]string{"--table", "x", "--poll", "0s"}, &out))
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	out.Reset()
	require.Equal(t, 1, run([]string{"--table", empty, "--listen", "127.0.0.1:0"}, &out))
	require.Contains(t, out.String(), "no nodes")
}

func TestBoundsFlags(t *testing.T) {
	o, err := parseFlags([]string{"--table", "t", "--max-conns", "500", "--max-conns-per-ip", "20", "--max-conn-buffer", "65536",
		"--max-body", "-1", "--socket-buffer", "65536", "--trusted-proxies", "10.0.0.0/8, 192.0.2.1", "--trusted-proxies", "2001:db8::/32"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 500, o.maxConns)
	require.Equal(t, 20, o.maxConnsPerIP)
	require.Equal(t, 65536, o.maxConnBuffer)
	require.Equal(t, 65536, o.socketBuffer)
	require.EqualValues(t, -1, o.maxBody)
	require.Equal(t, "[10.0.0.0/8 192.0.2.1/32 2001:db8::/32]", fmt.Sprint(o.trustedProxies))
	_, err = parseFlags([]string{"--table", "t", "--trusted-proxies", "10.0.0.0/99"}, io.Discard)
	require.Error(t, err)
}
