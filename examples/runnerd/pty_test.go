package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRunnerdRemoteSession runs the real runnerd as root with an app and
// its remote command server, and the real paasctl against it: a shell in
// the app's sandbox is typed `tty` and `exit 3`; the output names the
// session's terminal and paasctl exits with 3.
func TestRunnerdRemoteSession(t *testing.T) {
	dir, bin, specs := runnerdFixture(t)
	paasctl := filepath.Join(dir, "paasctl")
	out, err := exec.Command("go", "build", "-o", paasctl, "github.com/paaskit/paaskit/examples/paasctl").CombinedOutput()
	require.NoError(t, err, string(out))
	serverKeys := filepath.Join(dir, "runnerd.keys")
	require.NoError(t, os.WriteFile(serverKeys, []byte("runnerd runnerd-secret-0123456789abcdef\nops ops-secret-0123456789abcdef0123\n"), 0o600))
	opsKeys := filepath.Join(dir, "ops.keys")
	require.NoError(t, os.WriteFile(opsKeys, []byte("ops ops-secret-0123456789abcdef0123\nrunnerd runnerd-secret-0123456789abcdef\n"), 0o600))
	state, err := os.MkdirTemp("", "rd")
	require.NoError(t, err)
	defer os.RemoveAll(state)

	front, admin, ctl := freeAddr(t), freeAddr(t), freeAddr(t)
	endpoint := "tcp://" + ctl
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-listen", front, "-admin", admin, "-specs", specs, "-state", state,
		"-cgroup-root", fmt.Sprintf("paaskit-runnerd-pty-test-%d", os.Getpid()), "-stop-grace", "2s",
		"-pty-bind", endpoint, "-pty-keys", serverKeys)
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()

	paas := func(stdin string, args ...string) (string, string, int) {
		c := exec.Command(paasctl, append([]string{"-endpoint", endpoint, "-keys", opsKeys}, args...)...)
		c.Stdin = strings.NewReader(stdin)
		var o, e bytes.Buffer
		c.Stdout, c.Stderr = &o, &e
		err := c.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("paasctl %v: %v", args, err)
		}
		return o.String(), e.String(), code
	}
	require.Eventually(t, func() bool {
		_, _, code := paas("", "list")
		return code == 0
	}, 20*time.Second, 50*time.Millisecond, "runnerd's command server answers; stderr:\n%s", &stderr)

	// The shell reads its input from the pipe through the terminal; it
	// runs as the app's user in the app's sandbox.
	stdout, errOut, code := paas("tty\nexit 3\n", "run", "site", "--", "/bin/sh")
	require.Equal(t, 3, code, "paasctl's exit status is the shell's; stdout %q, stderr %q, runnerd:\n%s", stdout, errOut, &stderr)
	require.Regexp(t, regexp.MustCompile(`(?m)^(\$ )?/dev/pts/[0-9]+\r?$`), stdout, "tty names the session's terminal")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("runnerd did not stop within 30s of SIGTERM; stderr:\n%s", &stderr)
	}
}
