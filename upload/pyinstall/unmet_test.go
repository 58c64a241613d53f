package pyinstall

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// _unmet, which every build child runs after get_requires_for_build_wheel,
// imports no packaging (setuptools' or pip's, which cost hundreds of
// milliseconds of CPU a child) and not importlib.metadata (tens) when
// nothing asked for is new, and still
// reports what the environment lacks.
func TestUnmetBuildRequiresImportsNothingWhenNothingIsNew(t *testing.T) {
	t.Parallel()
	py, err := exec.LookPath("/usr/bin/python3")
	require.NoError(t, err)
	script := unmetRequiresPy + `
import json, sys
cases = json.loads(sys.argv[1])
out = []
for asked, have in cases:
    before = set(sys.modules)
    unmet = _unmet(asked, have)
    new = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in ("setuptools", "pip", "packaging") or m == "importlib.metadata")
    out.append({"unmet": unmet, "imported": new})
print(json.dumps(out))
`
	cases := [][2][]string{
		{{}, {}},
		{{"build-helper >= 1"}, {"build-helper>=1"}},
		{{"surely-not-installed-xyz"}, {}},
	}
	arg, err := json.Marshal(cases)
	require.NoError(t, err)
	out, err := exec.Command(py, "-I", "-c", script, string(arg)).CombinedOutput()
	require.NoError(t, err, string(out))
	var got []struct {
		Unmet    []string `json:"unmet"`
		Imported []string `json:"imported"`
	}
	require.NoError(t, json.Unmarshal([]byte(strings.TrimSpace(string(out))), &got), string(out))
	require.Len(t, got, 3)
	require.Empty(t, got[0].Unmet)
	require.Empty(t, got[0].Imported, "nothing asked for: no packaging import")
	require.Empty(t, got[1].Unmet)
	require.Empty(t, got[1].Imported, "all asked for already in the environment: no packaging import")
	require.Equal(t, []string{"surely-not-installed-xyz"}, got[2].Unmet)
}
