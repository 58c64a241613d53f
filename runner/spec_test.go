package runner

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "64K": 64 << 10, "256M": 256 << 20, "2G": 2 << 30, "2gb": 2 << 30, " 3 ": 3, "512MiB": 512 << 20} {
		got, err := ParseBytes(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "M", "-1", "1T", "abc", "99999999999G"} {
		_, err := ParseBytes(in)
		require.Error(t, err, in)
	}
}

func TestDurationAndBytesJSON(t *testing.T) {
	var s struct {
		D Duration `json:"d"`
		N Duration `json:"n"`
		B Bytes    `json:"b"`
		C Bytes    `json:"c"`
	}
	require.NoError(t, json.Unmarshal([]byte(`{"d": "90s", "n": 1.5, "b": "1M", "c": 42}`), &s))
	require.Equal(t, Duration(90*time.Second), s.D)
	require.Equal(t, Duration(1500*time.Millisecond), s.N)
	require.Equal(t, Bytes(1<<20), s.B)
	require.Equal(t, Bytes(42), s.C)
	require.Error(t, json.Unmarshal([]byte(`{"d": "soon"}`), &s))
	require.Error(t, json.Unmarshal([]byte(`{"b": "lots"}`), &s))
	require.Error(t, json.Unmarshal([]byte(`{"b": true}`), &s))
	out, err := json.Marshal(Duration(time.Minute))
	require.NoError(t, err)
	require.Equal(t, `"1m0s"`, string(out))
}

func TestSpecValidate(t *testing.T) {
	img := t.TempDir()
	file := filepath.Join(img, "f")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	good := Spec{Name: "app-1", Hosts: []string{"a.example"}, Image: img, Command: []string{"/app/run"}}
	require.NoError(t, good.Validate())
	cases := map[string]func(s *Spec){
		"name":          func(s *Spec) { s.Name = "-bad" },
		"upper name":    func(s *Spec) { s.Name = "Bad" },
		"long name":     func(s *Spec) { s.Name = "a123456789012345678901234567890123456789012345678" },
		"no hosts":      func(s *Spec) { s.Hosts = nil },
		"bad host":      func(s *Spec) { s.Hosts = []string{"a b"} },
		"no command":    func(s *Spec) { s.Command = nil },
		"no image":      func(s *Spec) { s.Image = "" },
		"rel image":     func(s *Spec) { s.Image = "img" },
		"missing image": func(s *Spec) { s.Image = "/nonexistent/img" },
		"file image":    func(s *Spec) { s.Image = file },
		"rel workdir":   func(s *Spec) { s.WorkDir = "app" },
		"rel data":      func(s *Spec) { s.DataDir = "data" },
		"listen":        func(s *Spec) { s.Listen = "udp" },
		"env":           func(s *Spec) { s.Env = map[string]string{"A=B": "x"} },
		"memory":        func(s *Spec) { s.Limits.Memory = 1024 },
		"neg procs":     func(s *Spec) { s.Limits.Processes = -1 },
		"weight":        func(s *Spec) { s.Limits.CPUWeight = 10001 },
		"neg idle":      func(s *Spec) { s.IdleTimeout = -1 },
	}
	for name, mutate := range cases {
		s := good.clone()
		mutate(&s)
		err := s.Validate()
		require.Error(t, err, name)
		require.True(t, errors.Is(err, ErrBadSpec), name)
		var se *SpecError
		require.True(t, errors.As(err, &se), name)
	}
}

func TestLoadSpecFile(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "s.json")
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return p
	}
	p := write(`{"name": "x", "hosts": ["x.example"], "image": "` + dir + `", "command": ["/app/x"], "limits": {"memory": "64M", "processes": 10}, "idle_timeout": "5m"}`)
	s, err := LoadSpecFile(p)
	require.NoError(t, err)
	require.Equal(t, Bytes(64<<20), s.Limits.Memory)
	require.Equal(t, Duration(5*time.Minute), s.IdleTimeout)
	for body, want := range map[string]string{
		`{"name": `:                   "malformed JSON",
		`{"name": "x"} {"name": "y"}`: "more than one value",
		`{"nmae": "x"}`:               `unknown field "nmae"`,
		`{"name": "x", "hosts": ["x"], "image": "/nonexistent", "command": ["/x"]}`: "/nonexistent",
	} {
		_, err := LoadSpecFile(write(body))
		require.ErrorIs(t, err, ErrBadSpec, body)
		require.Contains(t, err.Error(), want)
		require.Contains(t, err.Error(), p, "the error names the file")
	}
	_, err = LoadSpecFile(filepath.Join(dir, "missing.json"))
	require.Error(t, err)
}

func TestUIDTablePersistsAtomically(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "uids.json")
	tb, err := openUIDTable(p, 100, 102)
	require.NoError(t, err)
	seen := map[int]bool{}
	for _, n := range []string{"a", "b", "c"} {
		u, err := tb.get(n)
		require.NoError(t, err)
		require.False(t, seen[u])
		seen[u] = true
	}
	_, err = tb.get("d")
	require.ErrorIs(t, err, ErrNoFreeUID)
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1, "no temp files left behind")
	tb2, err := openUIDTable(p, 100, 102)
	require.NoError(t, err)
	for _, n := range []string{"a", "b", "c"} {
		u1, _ := tb.get(n)
		u2, err := tb2.get(n)
		require.NoError(t, err)
		require.Equal(t, u1, u2)
	}
	require.NoError(t, os.WriteFile(p, []byte("{"), 0o600))
	_, err = openUIDTable(p, 100, 102)
	require.ErrorContains(t, err, "corrupt")
	require.NoError(t, os.WriteFile(p, []byte(`{"a": 100, "b": 100}`), 0o600))
	_, err = openUIDTable(p, 100, 102)
	require.ErrorContains(t, err, "both")
}

func TestNormHost(t *testing.T) {
	for in, want := range map[string]string{"Example.COM": "example.com", "a.example:8080": "a.example", "a.example.": "a.example", "[::1]:80": "[::1]", " x ": "x"} {
		require.Equal(t, want, normHost(in), in)
	}
}
