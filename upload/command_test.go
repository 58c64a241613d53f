package upload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
)

func TestSplitWords(t *testing.T) {
	for in, want := range map[string][]string{
		"":                             nil,
		"  a  b\tc ":                   {"a", "b", "c"},
		`git-receive-pack '/blog.git'`: {"git-receive-pack", "/blog.git"},
		`a 'b c' "d e" f\ g`:           {"a", "b c", "d e", "f g"},
		`'it'\''s'`:                    {"it's"},
		`"a\"b" "x\\y"`:                {`a"b`, `x\y`},
		`'a;b' '$(x)' "|"`:             {"a;b", "$(x)", "|"},
		`''`:                           {""},
	} {
		got, err := splitWords(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"a;b", "a | b", "a && b", "$(id)", "`id`", "a > f", "a\nb", "'open", `"open`, `trail\`, `"$HOME"`, "a\x00b", "(a)"} {
		_, err := splitWords(in)
		require.ErrorIs(t, err, ErrBadCommand, in)
	}
}

func TestParseCommand(t *testing.T) {
	ok := map[string]command{
		"git-receive-pack 'blog.git'":                        {kind: cmdGitReceive, app: "blog"},
		"git-receive-pack '/blog.git'":                       {kind: cmdGitReceive, app: "blog"},
		"git receive-pack '/blog'":                           {kind: cmdGitReceive, app: "blog"},
		"git-upload-pack '~/blog.git'":                       {kind: cmdGitUpload, app: "blog"},
		"hg -R blog serve --stdio":                           {kind: cmdHgServe, app: "blog"},
		"hg -R /blog.hg serve --stdio":                       {kind: cmdHgServe, app: "blog"},
		"deploy blog":                                        {kind: cmdDeployArchive, app: "blog"},
		"rollback blog":                                      {kind: cmdRollback, app: "blog"},
		"rollback blog abc":                                  {kind: cmdRollback, app: "blog", rollbackTo: "abc"},
		"releases blog":                                      {kind: cmdReleases, app: "blog"},
		"run blog -- python -c 'print(1)'":                   {kind: cmdRun, app: "blog", argv: []string{"python", "-c", "print(1)"}},
		"run blog ls":                                        {kind: cmdRun, app: "blog", argv: []string{"ls"}},
		"rsync --server -logDtpre.iLsfxCIvu . blog/x/":       {kind: cmdRsync, app: "blog", argv: []string{"rsync", "--server", "-logDtpre.iLsfxCIvu", ".", "x/"}},
		"rsync --server --sender -logDtpre.iLsfxCIvu . blog": {kind: cmdRsync, app: "blog", argv: []string{"rsync", "--server", "--sender", "-logDtpre.iLsfxCIvu", ".", "."}},
		"scp -t -- blog/a.txt":                               {kind: cmdScp, app: "blog", argv: []string{"scp", "-t", "--", "a.txt"}},
		"scp -r -t blog/":                                    {kind: cmdScp, app: "blog", argv: []string{"scp", "-r", "-t", "--", "."}},
		"help":                                               {kind: cmdHelp},
		"":                                                   {kind: cmdHelp},
	}
	for line, want := range ok {
		got, err := parseCommand(line)
		require.NoError(t, err, line)
		require.Equal(t, want, *got, line)
	}
	for _, line := range []string{
		"ls", "sh -c id", "bash", "git-receive-pack", "git-receive-pack a b", "git-receive-pack '../x.git'",
		"git-receive-pack 'a/b.git'", "git-receive-pack 'Blog.git'", "git config core.hooksPath /tmp",
		"hg -R blog serve", "hg -R blog --config hooks.x=y serve --stdio", "hg -R ../x serve --stdio",
		"deploy", "deploy ../x", "deploy 'a b'", "rollback", "run blog", "run blog --", "run ../x -- id",
		"rsync --server --log-file=/tmp/l . blog/", "rsync --server -T/tmp . blog/", "rsync --server . /etc/",
		"rsync --server . blog/../x", "rsync --server . blog/a other/b", "rsync --daemon", "rsync --server .",
		"scp -t /etc/passwd", "scp -f ../x", "scp blog/x", "scp -t a b", "scp -S prog -t blog/",
	} {
		_, err := parseCommand(line)
		require.ErrorIs(t, err, ErrBadCommand, line)
		var ce *CommandError
		require.True(t, errors.As(err, &ce), line)
		require.NotEmpty(t, ce.Reason)
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"git-receive-pack 'blog.git'", "run a -- b 'c d'", "rsync --server -e.x . a/b", "scp -t -- a/b", `"a\"b"`, "hg -R a serve --stdio"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		c, err := parseCommand(line)
		if err != nil {
			return
		}
		if c.kind == cmdHelp {
			return
		}
		if ValidAppName(c.app) != nil {
			t.Fatalf("%q: accepted app %q", line, c.app)
		}
		if c.kind == cmdRsync || c.kind == cmdScp {
			for _, a := range c.argv[1:] {
				if strings.HasPrefix(a, "/") || strings.Contains("/"+a+"/", "/../") {
					t.Fatalf("%q: path %q escapes", line, a)
				}
			}
		}
	})
}

func TestValidAppName(t *testing.T) {
	for _, n := range []string{"blog", "a", "a-b", "0x", strings.Repeat("a", 63)} {
		require.NoError(t, ValidAppName(n))
	}
	for _, n := range []string{"", "-a", "A", "a_b", "a.b", "..", "a/b", "a b", "a;b", strings.Repeat("a", 64)} {
		require.ErrorIs(t, ValidAppName(n), ErrBadAppName, n)
	}
}

func TestFileKeyStore(t *testing.T) {
	dir := t.TempDir()
	k1 := writeClientKey(t, filepath.Join(dir, "k1"))
	k2 := writeClientKey(t, filepath.Join(dir, "k2"))
	line := func(opts string, k ssh.PublicKey) string {
		return opts + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " comment\n"
	}
	path := filepath.Join(dir, "keys")
	require.NoError(t, os.WriteFile(path, []byte("# keys\n\n"+line(`user="alice",deploy="blog,shop",run="blog"`, k1)), 0o600))
	ks, err := OpenFileKeyStore(path)
	require.NoError(t, err)
	id, err := ks.Lookup(k1)
	require.NoError(t, err)
	require.Equal(t, "alice", id.User)
	require.True(t, id.Can(RightDeploy, "shop"))
	require.True(t, id.Can(RightRun, "blog"))
	require.False(t, id.Can(RightRun, "shop"))
	require.False(t, id.Can(RightData, "blog"))
	_, err = ks.Lookup(k2)
	require.ErrorIs(t, err, ErrUnknownKey)

	// A change is picked up; a broken file keeps the last good keys.
	time.Sleep(10 * time.Millisecond) // a distinct mtime
	require.NoError(t, os.WriteFile(path, []byte(line(`user="ops",deploy="*"`, k2)), 0o600))
	id, err = ks.Lookup(k2)
	require.NoError(t, err)
	require.True(t, id.Can(RightDeploy, "anything"))
	_, err = ks.Lookup(k1)
	require.ErrorIs(t, err, ErrUnknownKey)
	require.NoError(t, os.WriteFile(path, []byte("garbage line\n"), 0o600))
	require.Error(t, ks.Reload())
	_, err = ks.Lookup(k2)
	require.NoError(t, err)

	for name, body := range map[string]string{
		"no user":        line(`deploy="blog"`, k1),
		"bad app":        line(`user="a",deploy="../x"`, k1),
		"unknown option": line(`user="a",command="sh"`, k1),
		"unquoted":       line(`user=a`, k1),
		"bad user":       line(`user="a b"`, k1),
		"duplicate":      line(`user="a"`, k1) + line(`user="b"`, k1),
	} {
		_, err := ParseKeyStore([]byte(body))
		require.Error(t, err, name)
	}
}

func TestReleasesKeepAndRollback(t *testing.T) {
	dir := t.TempDir()
	r, err := OpenReleases(dir, 2)
	require.NoError(t, err)
	img := func(n string) Image {
		p := filepath.Join(dir, n+".squashfs")
		require.NoError(t, os.WriteFile(p, []byte(n), 0o444))
		return Image{ID: "sha256:" + n, Path: p}
	}
	_, err = r.RollbackTarget("blog", "")
	require.ErrorIs(t, err, ErrNoRelease)
	for _, n := range []string{"aaaa", "bbbb", "cccc"} {
		require.NoError(t, r.Record("blog", Release{Image: img(n), Revision: n}))
	}
	rels, live, err := r.List("blog")
	require.NoError(t, err)
	require.Equal(t, "sha256:cccc", live)
	require.Len(t, rels, 2)
	// The third-newest image file is gone; another app keeping the same
	// image would have kept it.
	_, err = os.Stat(filepath.Join(dir, "aaaa.squashfs"))
	require.True(t, os.IsNotExist(err))
	tgt, err := r.RollbackTarget("blog", "")
	require.NoError(t, err)
	require.Equal(t, "sha256:bbbb", tgt.Image.ID)
	require.NoError(t, r.SetLive("blog", tgt.Image.ID))
	_, err = r.RollbackTarget("blog", "")
	require.ErrorIs(t, err, ErrNoRelease)
	_, err = r.RollbackTarget("blog", "bbbb")
	require.ErrorContains(t, err, "already live")
	tgt, err = r.RollbackTarget("blog", "cccc")
	require.NoError(t, err)
	require.Equal(t, "sha256:cccc", tgt.Image.ID)
	require.Error(t, r.SetLive("blog", "sha256:zzzz"))

	// Shared images survive while any app keeps them.
	require.NoError(t, r.Record("shop", Release{Image: img("dddd")}))
	require.NoError(t, r.Record("blog", Release{Image: img("dddd")}))
	require.NoError(t, r.Record("blog", Release{Image: img("eeee")}))
	require.NoError(t, r.Record("blog", Release{Image: img("ffff")}))
	_, err = os.Stat(filepath.Join(dir, "dddd.squashfs"))
	require.NoError(t, err)
	_, err = OpenReleases(dir, 0)
	require.Error(t, err)
}

func TestFIFOLockOrder(t *testing.T) {
	var l fifoLock
	require.NoError(t, l.lock(t.Context(), nil))
	order := make(chan int, 3)
	queued := make(chan struct{}, 3)
	for i := 0; i < 3; i++ {
		go func() {
			_ = l.lock(t.Context(), func(int) { queued <- struct{}{} })
			order <- i
			l.unlock()
		}()
		<-queued // in order of arrival
	}
	l.unlock()
	for i := 0; i < 3; i++ {
		require.Equal(t, i, <-order)
	}
	// A waiter that gives up takes nothing.
	require.NoError(t, l.lock(t.Context(), nil))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- l.lock(ctx, func(int) { cancel() }) }()
	require.ErrorIs(t, <-done, context.Canceled)
	l.unlock()
	require.NoError(t, l.lock(t.Context(), nil))
	l.unlock()
}
