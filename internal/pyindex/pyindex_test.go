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

func TestServerCachingHeadersAndJSON(t *testing.T) {
	ix, err := New([]Dist{{Name: "a", Version: "1"}})
	require.NoError(t, err)
	srv, err := Serve(ix, ServerConfig{MaxAge: 10 * time.Minute, JSON: true, Metadata: true})
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Close()) }()
	get := func(accept, inm string) *http.Response {
		req, err := http.NewRequest(http.MethodGet, srv.URL()+"a/", nil)
		require.NoError(t, err)
		req.Header.Set("Accept", accept)
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp
	}
	html := get("text/html", "")
	require.Equal(t, "text/html", html.Header.Get("Content-Type"))
	require.Equal(t, "max-age=600, public", html.Header.Get("Cache-Control"))
	etag := html.Header.Get("ETag")
	require.NotEmpty(t, etag)
	require.Equal(t, http.StatusNotModified, get("text/html", etag).StatusCode)
	require.Equal(t, int64(1), srv.NotModified())
	js := get("application/vnd.pypi.simple.v1+json, text/html;q=0.01", "")
	require.Equal(t, "application/vnd.pypi.simple.v1+json", js.Header.Get("Content-Type"))
	require.NotEqual(t, etag, js.Header.Get("ETag"))
	require.Equal(t, "text/html", get("application/vnd.pypi.simple.v1+json;q=0.1, text/html", "").Header.Get("Content-Type"))
}

func TestGitRepoCommitsAndTags(t *testing.T) {
	dir := t.TempDir()
	r, err := NewGitRepo(context.Background(), filepath.Join(dir, "p.git"), Dist{Name: "p", Version: "1.0", Kind: Sdist})
	require.NoError(t, err)
	c2, err := r.Commit(context.Background(), Dist{Name: "p", Version: "2.0", Kind: Sdist})
	require.NoError(t, err)
	require.Len(t, r.Commits, 2)
	require.Equal(t, c2, r.Commits[1])
	require.True(t, strings.HasPrefix(r.URL, "file://localhost/"))
}
