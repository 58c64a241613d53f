package zmqloop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseKeyFile(t *testing.T) {
	ring, err := ParseKeyFile(strings.NewReader("# rotated 2026-12\n\nk2 0123456789abcdef0123\n  k1   fedcba9876543210fedc  \n"), "keys")
	require.NoError(t, err)
	require.Equal(t, "k2", ring.SigningKeyID(), "the first key signs")
	require.ElementsMatch(t, []string{"k1", "k2"}, ring.KeyIDs())

	_, err = ParseKeyFile(strings.NewReader("k1\n"), "keys")
	require.ErrorContains(t, err, `keys:1: want "ID SECRET"`)
	_, err = ParseKeyFile(strings.NewReader("k1 short\n"), "keys")
	require.Error(t, err, "a secret under MinSecretLen")
	_, err = ParseKeyFile(strings.NewReader("# nothing\n"), "keys")
	require.Error(t, err, "no key at all")

	p := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(p, []byte("k1 0123456789abcdef0123\n"), 0o600))
	ring, err = ReadKeyFile(p)
	require.NoError(t, err)
	require.Equal(t, "k1", ring.SigningKeyID())
	_, err = ReadKeyFile(filepath.Join(t.TempDir(), "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
}
