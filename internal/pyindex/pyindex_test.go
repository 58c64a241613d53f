package pyindex

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPipInstallsBenchSet(t *testing.T) {
	ds, reqs := BenchSet(0)
	ds = append(ds, Dist{Name: "tool", Version: "1.0", ConsoleScripts: map[string]string{"tool": "tool:main"}})
	reqs = append(reqs, "tool")
	ix, err := New(ds)
	require.NoError(t, err)
	srv, err := Serve(ix, ServerConfig{Latency: time.Millisecond, Metadata: true})
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Close()) }()

	dir := t.TempDir()
	ctx := context.Background()
	pip, err := NewPip(ctx, filepath.Join(dir, "venv"))
	require.NoError(t, err)
	reqFile := filepath.Join(dir, "requirements.txt")
	require.NoError(t, os.WriteFile(reqFile, []byte(strings.Join(reqs, "\n")+"\n"), 0o644))
	out, err := pip.Install(ctx, srv.URL(), "-r", reqFile)
	require.NoError(t, err, "%s", out)
	got, err := Installed(pip.Venv)
	require.NoError(t, err)
	require.Len(t, got, 23, "%v", got)
	require.Contains(t, got, "corelib==1.5")
	require.Contains(t, got, "fastjson==4.0")
	require.NotContains(t, got, "oldcompat==1.0")
	script, err := os.ReadFile(filepath.Join(pip.Venv, "bin", "tool"))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(script), "#!"+pip.Venv), "%s", script)
}

func TestServerDropsConnection(t *testing.T) {
	ix, err := New([]Dist{{Name: "a", Version: "1"}})
	require.NoError(t, err)
	fn := ix.Files()[0].Filename
	srv, err := Serve(ix, ServerConfig{Drop: map[string]int{fn: 1}})
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Close()) }()
	resp, err := http.Get(srv.FileURL(fn))
	require.NoError(t, err)
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Error(t, err)
	resp, err = http.Get(srv.FileURL(fn))
	require.NoError(t, err)
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, ix.Files()[0].Data, data)
}
