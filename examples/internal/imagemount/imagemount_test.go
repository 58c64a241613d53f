package imagemount

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestProcfileWeb(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "Procfile")
	require.NoError(t, os.WriteFile(p, []byte("worker: x\nweb: /app/venv/bin/gunicorn  app:wsgi\n"), 0o644))
	argv, err := ProcfileWeb(p)
	require.NoError(t, err)
	require.Equal(t, []string{"/app/venv/bin/gunicorn", "app:wsgi"}, argv)

	// No web: line, an empty one, or no file at all: an error, never an
	// empty command.
	for _, body := range []string{"worker: x\n", "web:   \n", ""} {
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		_, err = ProcfileWeb(p)
		require.Error(t, err, "Procfile %q", body)
	}
	_, err = ProcfileWeb(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
}
