package pyinstall

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzParseRequirement checks that the PEP 508 parser never panics and that
// what it accepts renders to a string it parses back to the same thing.
func FuzzParseRequirement(f *testing.F) {
	for _, s := range []string{
		"Django>=4.2,<5", `requests[socks]~=2.31; python_version >= "3.8"`, "x @ https://h/x-1.0.tar.gz",
		"flask (>=2.0)", `a; extra == "b" or (os_name == 'nt' and python_version < "3")`, "a[", "a;", "==1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRequirement(s)
		if err != nil {
			return
		}
		again, err := ParseRequirement(r.String())
		if err != nil {
			t.Fatalf("%q parsed to %q, which does not parse: %v", s, r.String(), err)
		}
		if again.Key() != r.Key() || again.Specifier != r.Specifier || again.URL != r.URL || strings.Join(again.Extras, ",") != strings.Join(r.Extras, ",") {
			t.Fatalf("round trip of %q changed it: %+v vs %+v", s, r, again)
		}
	})
}

// FuzzParseRequirementsFile checks the file parser never panics and that
// every syntax error carries a line number within the input.
func FuzzParseRequirementsFile(f *testing.F) {
	f.Add("a==1\n# c\nb>=2 \\\n --hash=sha256:" + strings.Repeat("a", 64) + "\n-i http://x/simple/\n")
	f.Add("-e .\n")
	f.Add("x[y]; python_version\n")
	f.Fuzz(func(t *testing.T, s string) {
		_, err := ParseRequirements(strings.NewReader(s), "r.txt", t.TempDir())
		if se, ok := err.(*SyntaxError); ok {
			if se.Line < 1 || se.Line > strings.Count(s, "\n")+1 {
				t.Fatalf("line %d out of range for %q", se.Line, s)
			}
		}
	})
}

// FuzzParseMarker checks that markers never panic on parse or evaluation.
func FuzzParseMarker(f *testing.F) {
	f.Add(`python_version >= "3.8" and (extra == "a" or sys_platform != 'win32')`)
	f.Add(`"linux" in sys_platform`)
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMarker(s)
		if err != nil {
			return
		}
		env := Env{"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux"}
		m.Eval(env, "")
		for _, e := range m.Extras() {
			m.Eval(env, e)
		}
	})
}

// FuzzParseLinks checks the index-page parser never panics and only returns
// links with a project and a version.
func FuzzParseLinks(f *testing.F) {
	f.Add(`<a href="../../files/a-1.0-py3-none-any.whl#sha256=00" data-requires-python="&gt;=3.8" data-yanked>a</a>`)
	f.Add(`<A HREF='b-2.0.tar.gz' data-core-metadata="sha256=ab">`)
	base, _ := url.Parse("http://127.0.0.1/simple/a/")
	f.Fuzz(func(t *testing.T, page string) {
		for _, l := range parseLinks([]byte(page), base) {
			if l.Project == "" || l.Version == "" {
				t.Fatalf("link without project or version: %+v", l)
			}
		}
	})
}

// FuzzParseJSONLinks checks the PEP 691 parser never panics and returns
// only links with a project, a version and a plain filename.
func FuzzParseJSONLinks(f *testing.F) {
	f.Add(`{"meta":{"api-version":"1.0"},"name":"a","files":[{"filename":"a-1.0-py3-none-any.whl","url":"../../files/a-1.0-py3-none-any.whl","hashes":{"sha256":"AB"},"yanked":"bad","core-metadata":{"sha256":"cd"}}]}`)
	f.Add(`{"meta":{"api-version":"1.1"},"files":[{"filename":"b-2.0.tar.gz","url":"https://x/b-2.0.tar.gz","hashes":{},"requires-python":">=3","dist-info-metadata":true}]}`)
	f.Add(`{"meta":{"api-version":"2.0"},"files":[]}`)
	base, _ := url.Parse("http://127.0.0.1/simple/a/")
	f.Fuzz(func(t *testing.T, page string) {
		links, err := parseJSONLinks([]byte(page), base)
		if err != nil {
			return
		}
		for _, l := range links {
			if l.Project == "" || l.Version == "" || strings.ContainsAny(l.Filename, "/\\") {
				t.Fatalf("bad link: %+v", l)
			}
		}
	})
}

// FuzzParseVCS checks the git URL parser never panics and never yields a
// revision git would take for an option or a subdirectory that leaves the
// checkout.
func FuzzParseVCS(f *testing.F) {
	f.Add("git+https://example.com/x.git@v1.0#egg=x&subdirectory=pkg")
	f.Add("git+ssh://git@example.com/x.git@main")
	f.Add("git+file:///srv/x.git")
	f.Add("hg+https://example.com/x")
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := parseVCS(raw)
		if err != nil {
			return
		}
		if strings.HasPrefix(v.rev, "-") || strings.HasPrefix(v.repo, "-") {
			t.Fatalf("option-like revision or repository: %+v", v)
		}
		if strings.Contains("/"+v.subdir+"/", "/../") || strings.HasPrefix(v.subdir, "/") {
			t.Fatalf("subdirectory escapes: %+v", v)
		}
	})
}
