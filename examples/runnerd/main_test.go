package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// TestRunnerd builds and runs the real binary as root: it starts an app on
// the first request, answers misses with the miss header, shows status, and
// on SIGTERM stops the app and exits 0.
func TestRunnerd(t *testing.T) {
	_, bin, specs := runnerdFixture(t)
	state, err := os.MkdirTemp("", "rd")
	require.NoError(t, err)
	defer os.RemoveAll(state)

	front, admin := freeAddr(t), freeAddr(t)
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-listen", front, "-admin", admin, "-specs", specs, "-state", state,
		"-cgroup-root", fmt.Sprintf("paaskit-runnerd-test-%d", os.Getpid()), "-stop-grace", "2s")
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()

	get := func(host string) (*http.Response, string, error) {
		req, _ := http.NewRequest("GET", "http://"+front+"/", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b), nil
	}
	require.Eventually(t, func() bool {
		resp, body, err := get("site.example")
		return err == nil && resp.StatusCode == 200 && body == "hello site\n"
	}, 20*time.Second, 20*time.Millisecond, "runnerd serves the app; stderr:\n%s", &stderr)
	resp, _, err := get("other.example")
	require.NoError(t, err)
	require.Equal(t, 404, resp.StatusCode)
	require.Equal(t, "1", resp.Header.Get("X-Paaskit-Miss"))

	var st struct {
		Isolation struct{ Missing []string }
		Apps      []struct {
			Name   string
			UID    int
			State  string
			Starts int
		}
	}
	sresp, err := http.Get("http://" + admin + "/status")
	require.NoError(t, err)
	require.NoError(t, json.NewDecoder(sresp.Body).Decode(&st))
	sresp.Body.Close()
	require.Empty(t, st.Isolation.Missing, "full isolation as root")
	require.Len(t, st.Apps, 1)
	require.Equal(t, "running", st.Apps[0].State)
	require.Equal(t, 1, st.Apps[0].Starts)
	uid := st.Apps[0].UID

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("runnerd did not stop within 30s of SIGTERM; stderr:\n%s", &stderr)
	}
	require.Contains(t, stderr.String(), "instance stopped")
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		require.NotContains(t, string(b), fmt.Sprintf("\nUid:\t%d\t", uid), "an app process outlived runnerd")
	}
}

func TestRunnerdHelpAndBadFlags(t *testing.T) {
	var out bytes.Buffer
	require.Equal(t, 0, run([]string{"--help"}, &out))
	for _, want := range []string{"Usage: runnerd", "-specs", "-listen", "-uid-range", "-state", "Spec file format", "PAASKIT_SOCKET"} {
		require.Contains(t, out.String(), want)
	}
	out.Reset()
	require.Equal(t, 2, run(nil, &out))
	require.Contains(t, out.String(), "--specs DIR is required")
	out.Reset()
	require.Equal(t, 2, run([]string{"-specs", "/tmp", "-uid-range", "abc"}, &out))
	require.True(t, strings.Contains(out.String(), "uid-range"), out.String())
}

func TestRunnerdBoundsFlags(t *testing.T) {
	o := options{uidRange: "1000-2000", memory: "64M", logFileBytes: "1M", maxConns: 100, maxConnsPerIP: 5, maxConnBuffer: 1 << 16, maxBody: -1,
		trustedProxies: "10.0.0.0/8,192.0.2.1"}
	c, err := o.config()
	require.NoError(t, err)
	require.Equal(t, 100, c.MaxConns)
	require.Equal(t, 5, c.MaxConnsPerIP)
	require.Equal(t, 1<<16, c.MaxConnBuffer)
	require.EqualValues(t, -1, c.MaxBodyBytes)
	require.Equal(t, "[10.0.0.0/8 192.0.2.1/32]", fmt.Sprint(c.TrustedProxies))
	o.trustedProxies = "10.0.0.0/40"
	_, err = o.config()
	require.ErrorContains(t, err, "--trusted-proxies")
	var out bytes.Buffer
	require.Equal(t, 0, run([]string{"--help"}, &out))
	for _, want := range []string{"-max-conns", "-max-conns-per-ip", "-max-body", "-max-conn-buffer", "-trusted-proxies"} {
		require.Contains(t, out.String(), want)
	}
}

// runnerdFixture builds runnerd and the test app's image into a new
// directory (readable by the app's own UID) and writes a specs directory
// with one app, "site" on site.example.
func runnerdFixture(t *testing.T) (dir, bin, specs string) {
	t.Helper()
	dir = t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))
	bin = filepath.Join(dir, "runnerd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, string(out))
	image := filepath.Join(dir, "image")
	require.NoError(t, os.Mkdir(image, 0o755))
	build := exec.Command("go", "build", "-o", filepath.Join(image, "app"), "github.com/paaskit/paaskit/internal/testapp")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err = build.CombinedOutput()
	require.NoError(t, err, string(out))
	specs = filepath.Join(dir, "specs")
	require.NoError(t, os.Mkdir(specs, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(specs, "site.json"), []byte(fmt.Sprintf(
		`{"name": "site", "hosts": ["site.example"], "image": %q, "command": ["/app/app"], "limits": {"memory": "128M"}}`, image)), 0o644))
	return dir, bin, specs
}
