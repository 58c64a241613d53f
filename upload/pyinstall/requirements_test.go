package pyinstall

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseRequirementsFileEverything(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sub", "base.txt"), []byte("# base deps\nsix==1.16.0\n-c ../constraints.txt\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "constraints.txt"), []byte("urllib3<2 ; python_version >= '3'\n"), 0o644))
	main := `# the app's requirements
-r sub/base.txt
--index-url http://127.0.0.1:9/simple/
--extra-index-url=http://127.0.0.1:10/simple/
-f ./wheels
Django>=4.2,<5   # comment after a requirement
requests[socks, security] ~= 2.31 ; python_version >= "3.8" and sys_platform != "win32"
flask (>=2.0)
pkg_with.dots==1.0 \
    --hash=sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa \
    --hash=sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
mylib @ https://example.com/mylib-1.0-py3-none-any.whl
https://example.com/other_lib-2.0.tar.gz
./vendor/local_pkg-0.1-py3-none-any.whl
file:///srv/wheels/abs_pkg-3.0-py3-none-any.whl
./src/tree
`
	p := filepath.Join(dir, "requirements.txt")
	require.NoError(t, os.WriteFile(p, []byte(main), 0o644))
	r, err := ParseRequirementsFile(p)
	require.NoError(t, err)
	require.Equal(t, "http://127.0.0.1:9/simple/", r.IndexURL)
	require.Equal(t, []string{"http://127.0.0.1:10/simple/"}, r.ExtraIndexURLs)
	require.Equal(t, []string{filepath.Join(dir, "wheels")}, r.FindLinks)
	require.Len(t, r.Constraints, 1)
	require.Equal(t, "urllib3", r.Constraints[0].Name)
	require.Equal(t, "<2", r.Constraints[0].Specifier)

	var got []string
	for _, q := range r.Requirements {
		got = append(got, q.String())
	}
	require.Equal(t, []string{
		"six==1.16.0",
		"Django>=4.2,<5",
		`requests[security,socks]~=2.31; python_version >= "3.8" and sys_platform != "win32"`,
		"flask>=2.0",
		"pkg_with.dots==1.0",
		"mylib @ https://example.com/mylib-1.0-py3-none-any.whl",
		"other_lib @ https://example.com/other_lib-2.0.tar.gz",
		"local_pkg @ " + filepath.Join(dir, "vendor", "local_pkg-0.1-py3-none-any.whl"),
		"abs_pkg @ /srv/wheels/abs_pkg-3.0-py3-none-any.whl",
		" @ " + filepath.Join(dir, "src", "tree"),
	}, got)
	require.Equal(t, "pkg-with-dots", r.Requirements[4].Key())
	require.Equal(t, []string{"sha256:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("b", 64)}, r.Requirements[4].Hashes)
	require.Equal(t, p+":9", r.Requirements[4].Source)
	require.Equal(t, filepath.Join(dir, "sub", "base.txt")+":2", r.Requirements[0].Source[len(r.Requirements[0].Source)-len(filepath.Join(dir, "sub", "base.txt")+":2"):])
}

func TestRequirementsSyntaxErrorsHaveLineNumbers(t *testing.T) {
	cases := []struct {
		name, text string
		line       int
		msg        string
	}{
		{"bad specifier", "ok==1\n\nbroken >>= 1.0\n", 3, "specifier"},
		{"no name", "ok\n==1.0\n", 2, "project name"},
		{"unclosed extras", "# c\nfoo[bar\n", 2, "unclosed ["},
		{"bad marker", "foo; python_versio == '3'\n", 1, "marker"},
		{"empty marker", "foo ;\n", 1, "empty environment marker"},
		{"unknown option", "foo\n--frobnicate\n", 2, "unknown option"},
		{"editable", "-e ./src\n", 1, "editable"},
		{"bad hash", "foo==1 --hash=md5:abc\n", 1, "malformed hash"},
		{"hash alone", "--hash=sha256:aa\n", 1, "--hash must follow"},
		{"garbage after name", "foo bar\n", 1, "version specifier"},
		{"continued line counts from its start", "a\nb==1 \\\n  --hash=sha256:zz\n", 2, "malformed hash"},
		{"vcs url without a name", "git+https://example.com/x.git\n", 1, "add #egg=name"},
		{"hg url", "hg+https://example.com/x#egg=x\n", 1, "hg+ requirements are not supported"},
		{"git option injection", "x @ git+https://example.com/x.git@--upload-pack=evil\n", 1, "bad git revision"},
		{"git subdirectory escapes", "git+https://example.com/x.git#egg=x&subdirectory=../..\n", 1, "leaves the repository"},
		{"bad --only-binary", "--only-binary\n", 1, "needs a value"},
		{"missing option value", "-r\n", 1, "needs a value"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseRequirements(strings.NewReader(c.text), "requirements.txt", t.TempDir())
			require.Error(t, err)
			var se *SyntaxError
			require.ErrorAs(t, err, &se)
			require.Equal(t, c.line, se.Line, "%v", err)
			require.Equal(t, "requirements.txt", se.File)
			require.Contains(t, err.Error(), c.msg)
			require.Contains(t, err.Error(), "requirements.txt:"+itoa(c.line)+":")
		})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestRequirementsIncludeErrors(t *testing.T) {
	dir := t.TempDir()
	// A syntax error in an included file names that file and line.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "inc.txt"), []byte("fine\nnot valid!\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.txt"), []byte("-r inc.txt\n"), 0o644))
	_, err := ParseRequirementsFile(filepath.Join(dir, "main.txt"))
	var se *SyntaxError
	require.ErrorAs(t, err, &se)
	require.Equal(t, 2, se.Line)
	require.True(t, strings.HasSuffix(se.File, "inc.txt"))
	// A missing include names the including line.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main2.txt"), []byte("a\n-r nope.txt\n"), 0o644))
	_, err = ParseRequirementsFile(filepath.Join(dir, "main2.txt"))
	require.Error(t, err)
	require.Contains(t, err.Error(), "main2.txt:2")
	// An include loop is refused.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "loop.txt"), []byte("-r loop.txt\n"), 0o644))
	_, err = ParseRequirementsFile(filepath.Join(dir, "loop.txt"))
	require.ErrorContains(t, err, "loop")
	// Constraints cannot carry extras.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "c.txt"), []byte("x[y]<2\n"), 0o644))
	_, err = ParseRequirements(strings.NewReader("-c c.txt\n"), "m.txt", dir)
	require.ErrorAs(t, err, &se)
}

func TestMarkers(t *testing.T) {
	env := Env{"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux", "platform_system": "Linux",
		"os_name": "posix", "implementation_name": "cpython", "platform_machine": "x86_64"}
	cases := []struct {
		m     string
		extra string
		want  bool
	}{
		{`python_version >= "3.8"`, "", true},
		{`python_version < "3.10"`, "", false},
		{`python_version > "3.9"`, "", true}, // a version comparison, not a string one
		{`python_full_version == "3.11.*"`, "", true},
		{`"3.6" < python_version`, "", true},
		{`sys_platform == "win32" or os_name == "posix"`, "", true},
		{`sys_platform == "linux" and (platform_machine == "aarch64" or platform_machine == "x86_64")`, "", true},
		{`"linux" in sys_platform`, "", true},
		{`"win" not in sys_platform`, "", true},
		{`extra == "Fast_Path"`, "fast-path", true},
		{`extra == "fast"`, "", false},
		{`os.name == 'posix'`, "", true},
		{`platform_system != "Windows" and extra == "cli"`, "cli", true},
	}
	for _, c := range cases {
		m, err := ParseMarker(c.m)
		require.NoError(t, err, c.m)
		require.Equal(t, c.want, m.Eval(env, c.extra), c.m)
	}
	m, err := ParseMarker(`extra == "a" or (extra == 'B_b' and python_version > "3")`)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b-b"}, m.Extras())
	for _, bad := range []string{`python_version >=`, `nonsense == "1"`, `"a" == "b"`, `(python_version == "3"`, `python_version = "3"`, `os_name == "x" and`} {
		_, err := ParseMarker(bad)
		require.Error(t, err, bad)
	}
}

func TestParseRequirementsFileInRefusesOutsidePaths(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret.txt")
	require.NoError(t, os.WriteFile(secret, []byte("hunter2-password\n"), 0o600))
	require.NoError(t, os.Symlink(secret, filepath.Join(root, "sneaky.txt")))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "wheels"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "base.txt"), []byte("six\n"), 0o644))
	cases := map[string]string{
		"absolute include":  "-r " + secret,
		"relative include":  "-r ../" + filepath.Base(outside) + "/secret.txt",
		"symlinked include": "-r sneaky.txt",
		"constraint":        "-c /etc/passwd",
		"find-links":        "-f /etc",
		"local path":        "/etc/some_pkg-1.0-py3-none-any.whl",
		"file URL":          "file:///etc/some_pkg-1.0-py3-none-any.whl",
		"git file URL":      "other @ git+file://" + outside + "/repo.git@main",
		"git localhost URL": "git+file://localhost" + outside + "/repo.git#egg=other",
	}
	for name, line := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(root, "requirements.txt")
			require.NoError(t, os.WriteFile(p, []byte("flask\n"+line+"\n"), 0o644))
			_, err := ParseRequirementsFileIn(root, p)
			require.ErrorIs(t, err, ErrOutsideRoot)
			require.NotContains(t, err.Error(), "hunter2")
			require.Contains(t, err.Error(), "requirements.txt:2")
		})
	}
	// Inside the tree is fine.
	p := filepath.Join(root, "requirements.txt")
	require.NoError(t, os.WriteFile(p, []byte("-r base.txt\n-f wheels\nflask\n"), 0o644))
	r, err := ParseRequirementsFileIn(root, p)
	require.NoError(t, err)
	require.Len(t, r.Requirements, 2)
}

func TestRequirementsFileOptions(t *testing.T) {
	r, err := ParseRequirements(strings.NewReader("--pre\n--prefer-binary\n--require-hashes\n--only-binary :all:\n--no-binary Pillow,lxml\ngit+https://example.com/x.git@v1#egg=X_Y&subdirectory=pkg\nz @ git+ssh://git@example.com/z.git@0123abc\n"), "requirements.txt", t.TempDir())
	require.NoError(t, err)
	require.True(t, r.Pre && r.PreferBinary && r.RequireHashes)
	w, sd := r.Binary.Allowed("pillow")
	require.Equal(t, []bool{false, true}, []bool{w, sd})
	w, sd = r.Binary.Allowed("flask")
	require.Equal(t, []bool{true, false}, []bool{w, sd})
	require.Equal(t, "x-y", r.Requirements[0].Key())
	v, err := parseVCS(r.Requirements[0].URL)
	require.NoError(t, err)
	require.Equal(t, vcsRef{repo: "https://example.com/x.git", rev: "v1", egg: "X_Y", subdir: "pkg"}, v)
	v, err = parseVCS(r.Requirements[1].URL)
	require.NoError(t, err)
	require.Equal(t, vcsRef{repo: "ssh://git@example.com/z.git", rev: "0123abc"}, v)
}

func TestPageFreshness(t *testing.T) {
	h := http.Header{}
	h.Set("Cache-Control", "public, max-age=600")
	h.Set("Age", "100")
	age, noCache, noStore := cacheControl(h)
	require.Equal(t, 500*time.Second, age)
	require.False(t, noCache || noStore)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := &cachedPage{Fetched: now, MaxAge: age}
	require.True(t, p.fresh(now.Add(499*time.Second)))
	require.False(t, p.fresh(now.Add(501*time.Second)))
	require.False(t, p.fresh(now.Add(-2*time.Minute)), "a clock that went back does not make a page fresh for ever")
	h.Set("Cache-Control", "no-cache, max-age=600")
	_, noCache, _ = cacheControl(h)
	require.True(t, noCache)
	require.False(t, (&cachedPage{Fetched: now, MaxAge: time.Hour, NoCache: true}).fresh(now))
	h.Set("Cache-Control", "no-store")
	_, _, noStore = cacheControl(h)
	require.True(t, noStore)
}
