package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// get sends a request for host through the balancer at addr.
func get(t *testing.T, addr, host string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+"/", nil)
	require.NoError(t, err)
	req.Host = host
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(b)
}

// uidsInRange lists processes whose real UID is in the platform's range.
func uidsInRange(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var found []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
				if uid, _ := strconv.Atoi(f[1]); uid >= 400000 && uid < 410000 {
					found = append(found, e.Name())
				}
			}
		}
	}
	return found
}

// TestPlatformEndToEnd runs the real binary, as make demo does: requests
// through the balancer start sandboxed gunicorn apps on demand on the node
// the host hashes to; SIGTERM stops everything, leaving no app process.
func TestPlatformEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the platform's sandboxes need root: run the tests as root, as make test does")
	}
	if _, err := os.Stat("/usr/bin/gunicorn"); err != nil {
		t.Fatal("the sample apps need gunicorn: apt-get install gunicorn, or run make test")
	}
	bin := filepath.Join(t.TempDir(), "platform")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, string(out))

	front, admin := freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin, "-listen", front, "-admin", admin, "-state", t.TempDir(), "-idle-timeout", "1m")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()
	logs := make(chan string, 1000)
	go func() {
		defer close(logs)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case logs <- sc.Text():
			default:
			}
		}
	}()
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + admin + "/loops")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	}, 30*time.Second, 20*time.Millisecond)

	code, _, body := get(t, front, "hello.localhost")
	require.Equal(t, 200, code, body)
	assert.Contains(t, body, "Hello from hello, instance 1!")
	assert.Contains(t, body, "a new PID namespace")

	code, _, body = get(t, front, "NOTES.localhost.")
	require.Equal(t, 200, code, body)
	assert.Contains(t, body, "visit 1 ")
	assert.Contains(t, body, "the code directory is read-only")
	_, _, body = get(t, front, "notes.localhost")
	assert.Contains(t, body, "visit 2 ", "data survives in /data")

	code, _, body = get(t, front, "sandbox.localhost")
	require.Equal(t, 200, code, body)
	assert.Contains(t, body, "/ holds: app bin data dev etc lib")

	code, hdr, _ := get(t, front, "nobody-runs-this.localhost")
	assert.Equal(t, 404, code)
	assert.Equal(t, "1", hdr.Get("X-Paaskit-Miss"))

	// Each app started once, on the node its host hashes to.
	resp, err := http.Get("http://" + admin + "/apps")
	require.NoError(t, err)
	var apps map[string]struct {
		Apps []struct {
			Name   string
			Starts int
		}
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&apps))
	resp.Body.Close()
	starts := map[string]int{}
	for _, node := range apps {
		for _, a := range node.Apps {
			starts[a.Name] += a.Starts
		}
	}
	assert.Equal(t, map[string]int{"hello": 1, "notes": 1, "sandbox": 1}, starts)
	assert.NotEmpty(t, uidsInRange(t), "the apps run under their own UIDs")
	// The apps' output reaches the stats collector's files (stats.go).
	assert.Eventually(t, func() bool {
		resp, err := http.Get("http://" + admin + "/stats/logs/hello?n=50")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), "Booting worker")
	}, 30*time.Second, 50*time.Millisecond, "gunicorn's output in /stats/logs/hello")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "exit status 0 after SIGTERM")
	assert.Empty(t, uidsInRange(t), "no app process outlives the platform")
	var all []string
	for l := range logs {
		all = append(all, l)
	}
	assert.Contains(t, strings.Join(all, "\n"), "daemon stopped")
}

func TestFlags(t *testing.T) {
	var buf strings.Builder
	assert.Equal(t, 0, run([]string{"-help"}, &buf))
	assert.Contains(t, buf.String(), "http://hello.localhost:8080/")
	assert.Equal(t, 2, run([]string{"-nodes", "0"}, &buf))
	assert.Equal(t, 2, run([]string{"extra"}, &buf))
	assert.Equal(t, 2, run([]string{"-no-such-flag"}, &buf))
}
