package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paaskit/paaskit/internal/testserver"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// TestOncePerPeriodAcrossTwoNodes runs two cron nodes with one job every
// 200ms against one Redis; each period's job runs on exactly one node.
func TestOncePerPeriodAcrossTwoNodes(t *testing.T) {
	out := filepath.Join(t.TempDir(), "runs")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	args := []string{"-job", "j-" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", ""), "-every", "200ms",
		"-lock", "redis:" + testserver.Redis(t), "-log-level", "error", "--",
		"sh", "-c", `echo "$PAASKIT_LOCK_NAME $PAASKIT_LOCK_TOKEN $NODE" >> ` + out}
	var wg sync.WaitGroup
	for _, node := range []string{"n1", "n2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each node's command says which node ran it.
			a := append([]string{}, args...)
			a[len(a)-1] = strings.Replace(a[len(a)-1], "$NODE", node, 1)
			require.Equal(t, 0, run(ctx, a, &bytes.Buffer{}, true))
		}()
	}
	wg.Wait()
	raw, err := os.ReadFile(out)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	require.GreaterOrEqual(t, len(lines), 3, "runs: %q", lines)
	seen := map[string]string{}
	for _, line := range lines {
		f := strings.Fields(line)
		require.Len(t, f, 3, "line %q", line)
		require.NotContains(t, seen, f[0], "period %s ran twice: %q and %q", f[0], seen[f[0]], line)
		seen[f[0]] = line
	}
	require.Equal(t, 2, run(context.Background(), []string{"-job", "x", "-lock", "nope:1", "--", "true"}, &bytes.Buffer{}, true))
	require.Equal(t, 2, run(context.Background(), []string{"-job", "x"}, &bytes.Buffer{}, true))
}
