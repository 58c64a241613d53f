package runner_test

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/paaskit/paaskit/runner"
	"github.com/stretchr/testify/require"
)

func newStateDir(t *testing.T) string {
	t.Helper()
	state, err := os.MkdirTemp("", "rt")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(state) })
	return state
}

func TestTamperedUIDTableIsRefused(t *testing.T) {
	for name, c := range map[string]struct{ table, want string }{
		"root":        {`{"evil": 0}`, `gives app "evil" UID 0 (root): refused`},
		"system user": {`{"evil": 33}`, `UID 33, outside the configured range 200000-299999: refused`},
		"above range": {`{"evil": 300000}`, `outside the configured range`},
		"negative":    {`{"evil": -1}`, `outside the configured range`},
		"bad name":    {`{"../x": 200001}`, `not a valid app name`},
	} {
		t.Run(name, func(t *testing.T) {
			state := newStateDir(t)
			require.NoError(t, os.WriteFile(filepath.Join(state, "uids.json"), []byte(c.table), 0o600))
			_, err := runner.New(runner.Config{StateDir: state, CgroupRoot: fmt.Sprintf("paaskit-test-%d-%d", os.Getpid(), cgroupSeq.Add(1)), Sink: &memSink{}})
			require.ErrorContains(t, err, c.want)
		})
	}
}

func TestStateDirectoryWritableByOthersIsRefused(t *testing.T) {
	state := newStateDir(t)
	require.NoError(t, os.Chmod(state, 0o777))
	_, err := runner.New(runner.Config{StateDir: state, Sink: &memSink{}, Isolation: runner.Isolation{Off: true}})
	require.ErrorContains(t, err, "writable by group or others")
}

func TestDataDirectoryOutsideTheDataRootIsRefused(t *testing.T) {
	e := newEnv(t, nil)
	var before syscall.Stat_t
	require.NoError(t, syscall.Stat("/etc", &before))
	for _, d := range []string{"/etc", "/", e.state, filepath.Join(e.state, "data"), filepath.Join(e.state, "data", "..", "run")} {
		s := spec("grabber")
		s.DataDir = d
		err := e.r.Put(s)
		require.ErrorIs(t, err, runner.ErrBadSpec, d)
		require.ErrorContains(t, err, "outside the data root", d)
	}
	// Beneath the root, a symlink out of it is never followed.
	link := filepath.Join(e.state, "data", "sneaky")
	require.NoError(t, os.Symlink("/etc", link))
	s := spec("sneaky")
	s.DataDir = link
	e.put(s)
	code, body, _ := e.get("sneaky.example", "/")
	require.Equal(t, 503, code)
	require.Contains(t, body, "is not a directory")
	// Nor is another app's data directory handed over.
	e.put(spec("owner"))
	e.mustGet("owner.example", "/")
	s = spec("thief")
	s.DataDir = filepath.Join(e.state, "data", "owner")
	e.put(s)
	code, body, _ = e.get("thief.example", "/")
	require.Equal(t, 503, code)
	require.Contains(t, body, "another app's")
	var after syscall.Stat_t
	require.NoError(t, syscall.Stat("/etc", &after))
	require.Equal(t, before.Uid, after.Uid, "/etc changed hands")
	// A nested data directory of the app's own works.
	s = spec("nested")
	s.DataDir = filepath.Join(e.state, "data", "tenants", "nested")
	e.put(s)
	require.Equal(t, "ok\n", e.mustGet("nested.example", "/write?path=/data/x"))
	_, err := os.Stat(filepath.Join(s.DataDir, "x"))
	require.NoError(t, err)
}

func TestFileSinkRotatesBySizeAndKeepsABoundedNumber(t *testing.T) {
	dir := t.TempDir()
	_, err := runner.NewRotatingFileSink(dir, 10, 2)
	require.ErrorContains(t, err, "at least 4096")
	fs, err := runner.NewRotatingFileSink(dir, 4096, 2)
	require.NoError(t, err)
	text := make([]byte, 100)
	for k := range text {
		text[k] = 'x'
	}
	for k := 0; k < 1000; k++ {
		require.NoError(t, fs.WriteLine(&runner.Line{App: "noisy", Instance: 1, Stream: runner.Stdout, Text: text}))
	}
	require.NoError(t, fs.Close())
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		fi, err := e.Info()
		require.NoError(t, err)
		require.LessOrEqual(t, fi.Size(), int64(4096), e.Name())
	}
	require.ElementsMatch(t, []string{"noisy.log", "noisy.log.1", "noisy.log.2"}, names)
}
