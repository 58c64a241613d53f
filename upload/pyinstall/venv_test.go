package pyinstall

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The venv copied from the template is what python -m venv makes at that
// path, file for file.
func TestVenvFromTemplateSameAsPython(t *testing.T) {
	dir := t.TempDir()
	in, err := New(Config{CacheDir: filepath.Join(dir, "cache"), IndexURL: "http://127.0.0.1:1/simple/"})
	require.NoError(t, err)
	for _, name := range []string{"first", "second"} {
		mine := filepath.Join(dir, "mine", name)
		require.NoError(t, in.makeVenv(context.Background(), mine))
		ref := filepath.Join(dir, "ref", name)
		require.NoError(t, in.runVenv(context.Background(), ref))
		require.Equal(t, venvFiles(t, ref, ref), venvFiles(t, mine, mine), name)
		out, err := exec.Command(filepath.Join(mine, "bin", "python"), "-c", "import sys; print(sys.prefix)").CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Equal(t, mine, strings.TrimSpace(string(out)))
	}
}

// venvFiles lists a venv's entries with their contents (paths in them
// written as VENV).
func venvFiles(t *testing.T, root, venv string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		require.NoError(t, err)
		rel, _ := filepath.Rel(root, p)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out[rel] = "-> " + l
		case fi.IsDir():
			out[rel] = "dir"
		default:
			b, _ := os.ReadFile(p)
			out[rel] = fi.Mode().Perm().String() + " " + strings.ReplaceAll(string(b), venv, "VENV")
		}
		return nil
	}))
	return out
}
