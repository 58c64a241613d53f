package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	require.Equal(t, 0, run([]string{"--help"}, &out))
	for _, s := range []string{"git push", "rollback APP", "run APP --", "user=\"alice\"", "-max-push"} {
		require.Contains(t, out.String(), s)
	}
}

func TestBadFlagsAndKeys(t *testing.T) {
	var out bytes.Buffer
	require.Equal(t, 2, run([]string{"extra"}, &out))
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	require.NoError(t, os.WriteFile(keys, []byte("not a key\n"), 0o600))
	out.Reset()
	require.Equal(t, 2, run([]string{"--state", dir, "--keys", keys}, &out))
	require.Contains(t, out.String(), "key file")
}
