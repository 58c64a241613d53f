package runner

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDetectCgroupsOnThisHost checks detection against the host's real
// mounts: v2 where the unified mount offers the memory controller, v1
// otherwise (as on a hybrid host whose cgroup2 mount has no controllers).
func TestDetectCgroupsOnThisHost(t *testing.T) {
	m, err := detectCgroups("paaskit-detect-test")
	require.NoError(t, err, "the runner needs a memory cgroup controller (v1 or v2)")
	want := 1
	for _, p := range []string{"/sys/fs/cgroup/cgroup.controllers", "/sys/fs/cgroup/unified/cgroup.controllers"} {
		if b, err := os.ReadFile(p); err == nil && hasWord(string(b), "memory") {
			want = 2
		}
	}
	require.Equal(t, want, m.version)
	for _, d := range m.dirs("x") {
		require.True(t, strings.HasSuffix(d, "/paaskit-detect-test/x"), d)
	}
	if m.version == 1 {
		require.Contains(t, m.v1, "memory")
		// cpu and cpuacct may share a mount; each directory appears once.
		seen := map[string]bool{}
		for _, d := range m.dirs("x") {
			require.False(t, seen[d], d)
			seen[d] = true
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	require.Equal(t, "/mnt/with space", unescapeMount(`/mnt/with\040space`))
	require.Equal(t, "/plain", unescapeMount("/plain"))
	require.Equal(t, `/odd\x`, unescapeMount(`/odd\x`))
}
