package upload

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paaskit/paaskit/internal/pyindex"
	"github.com/paaskit/paaskit/upload/extract"
	"github.com/paaskit/paaskit/upload/pyinstall"
)

func tgz(t *testing.T, files [][2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: f[0], Mode: 0o644, Size: int64(len(f[1])), Typeflag: tar.TypeReg}))
		_, err := tw.Write([]byte(f[1]))
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	require.NoError(t, gz.Close())
	return buf.Bytes()
}

func TestBuilderBundleToImage(t *testing.T) {
	ix, err := pyindex.New([]pyindex.Dist{
		{Name: "helper", Version: "1.2", Kind: pyindex.Sdist, ConsoleScripts: map[string]string{"helper": "helper:main"}},
	})
	require.NoError(t, err)
	srv, err := pyindex.Serve(ix, pyindex.ServerConfig{Latency: 5 * time.Millisecond})
	require.NoError(t, err)
	defer srv.Close()
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	in, err := pyinstall.New(pyinstall.Config{IndexURL: srv.URL(), CacheDir: filepath.Join(dir, "cache"), Logger: quiet})
	require.NoError(t, err)
	store := filepath.Join(dir, "store")
	b, err := NewBuilder(BuilderConfig{WorkDir: dir, StoreDir: store, Installer: in, Logger: quiet})
	require.NoError(t, err)
	ctx := context.Background()

	bundle := tgz(t, [][2]string{{"app.py", "import helper\nprint(helper.VERSION)\n"}, {"requirements.txt", "helper==1.2\n"}})
	img, err := b.Build(ctx, bytes.NewReader(bundle), extract.FormatAuto)
	require.NoError(t, err)
	// The same bundle again gives the same image.
	img2, err := b.Build(ctx, bytes.NewReader(bundle), extract.FormatAuto)
	require.NoError(t, err)
	require.Equal(t, img.ID, img2.ID)

	m, err := MountImage(ctx, img.Path, filepath.Join(dir, "mnt"), MountConfig{Logger: quiet})
	require.NoError(t, err)
	defer func() { require.NoError(t, m.Unmount(ctx)) }()
	out, err := exec.Command(filepath.Join(m.Dir, "venv", "bin", "python"), filepath.Join(m.Dir, "app.py")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, "1.2\n", string(out))
	script, err := os.ReadFile(filepath.Join(m.Dir, "venv", "bin", "helper"))
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(script, []byte("#!/app/venv/bin/python\n")), "%s", script)
}

func TestBuilderRefusesBadBundles(t *testing.T) {
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	in, err := pyinstall.New(pyinstall.Config{IndexURL: "http://127.0.0.1:1/simple/", CacheDir: filepath.Join(dir, "cache"), Logger: quiet})
	require.NoError(t, err)
	store := filepath.Join(dir, "store")
	b, err := NewBuilder(BuilderConfig{WorkDir: dir, StoreDir: store, Installer: in, Logger: quiet})
	require.NoError(t, err)
	ctx := context.Background()
	for name, files := range map[string][][2]string{
		"zip-slip":           {{"../../escape.py", "x"}},
		"requirements leak":  {{"requirements.txt", "-r /etc/passwd\n"}},
		"requirements error": {{"requirements.txt", "flask >>> 2\n"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := b.Build(ctx, bytes.NewReader(tgz(t, files)), extract.FormatAuto)
			require.Error(t, err)
			ents, _ := os.ReadDir(store)
			require.Empty(t, ents)
		})
	}
	_, err = NewBuilder(BuilderConfig{})
	require.Error(t, err)
	_, err = NewBuilder(BuilderConfig{StoreDir: store, AppRoot: "app"})
	require.Error(t, err)
	// Work directories are cleaned up.
	left, _ := filepath.Glob(filepath.Join(dir, "upload-build-*"))
	require.Empty(t, left)
}
