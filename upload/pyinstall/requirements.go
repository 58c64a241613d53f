package pyinstall

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"deps.dev/util/semver"
)

// Requirement is one PEP 508 requirement, from a requirements file or a
// distribution's Requires-Dist.
type Requirement struct {
	// Name is the project name as written; Key() normalizes it.
	Name string
	// Extras are the requested extras, normalized and sorted.
	Extras []string
	// Specifier is the version specifier, for example ">=1.0,<2" ("" for
	// any version).
	Specifier string
	// Marker is the environment marker, nil when there is none.
	Marker *Marker
	// URL is a direct reference: an http(s) or file URL, or an absolute
	// local path (a wheel, an sdist or a source directory).
	URL string
	// Hashes are the allowed "sha256:<hex>" digests from --hash options.
	Hashes []string
	// Source says where it came from: "file:line".
	Source string
}

// Key is the normalized project name.
func (r Requirement) Key() string { return NormalizeName(r.Name) }

// String renders the requirement in PEP 508 form.
func (r Requirement) String() string {
	var b strings.Builder
	b.WriteString(r.Name)
	if len(r.Extras) > 0 {
		b.WriteString("[" + strings.Join(r.Extras, ",") + "]")
	}
	if r.URL != "" {
		b.WriteString(" @ " + r.URL)
	} else {
		b.WriteString(r.Specifier)
	}
	if r.Marker != nil {
		b.WriteString("; " + r.Marker.String())
	}
	return b.String()
}

// Requirements is a parsed requirements file with its includes.
type Requirements struct {
	// Requirements are the packages to install, in file order.
	Requirements []Requirement
	// Constraints (from -c files) restrict versions without asking for
	// installation.
	Constraints []Requirement
	// IndexURL, ExtraIndexURLs, FindLinks and NoIndex are the index
	// options found in the files ("" / nil / false when absent).
	IndexURL       string
	ExtraIndexURLs []string
	FindLinks      []string
	NoIndex        bool
	// Pre allows pre-releases and development releases (--pre).
	Pre bool
	// PreferBinary prefers an older version with a wheel to a newer one
	// with only an sdist (--prefer-binary).
	PreferBinary bool
	// RequireHashes demands a --hash for every distribution installed and
	// an == pin for every requirement (--require-hashes); it is also on
	// when any requirement has a --hash.
	RequireHashes bool
	// Binary is --no-binary and --only-binary.
	Binary BinaryPolicy
}

// BinaryPolicy is pip's --no-binary and --only-binary: which projects may be
// installed from wheels and which from sdists. The zero value allows both
// for every project. Names are normalized; ":all:" stands for every project.
type BinaryPolicy struct {
	NoBinary, OnlyBinary map[string]bool
}

// SetNoBinary applies a --no-binary value: a comma-separated list of
// project names, ":all:" or ":none:", as pip does (a name given to one
// option is removed from the other; ":all:" clears both first; ":none:"
// clears this option's list).
func (b *BinaryPolicy) SetNoBinary(value string) error {
	return b.set(value, &b.NoBinary, &b.OnlyBinary, "--no-binary")
}

// SetOnlyBinary applies an --only-binary value, as SetNoBinary does.
func (b *BinaryPolicy) SetOnlyBinary(value string) error {
	return b.set(value, &b.OnlyBinary, &b.NoBinary, "--only-binary")
}

func (b *BinaryPolicy) set(value string, target, other *map[string]bool, opt string) error {
	if *target == nil {
		*target = map[string]bool{}
	}
	if *other == nil {
		*other = map[string]bool{}
	}
	if value == "" || strings.HasPrefix(value, "-") {
		return fmt.Errorf("%s needs a comma-separated list of project names, :all: or :none:, got %q", opt, value)
	}
	for _, name := range strings.Split(value, ",") {
		name = strings.TrimSpace(name)
		switch name {
		case ":all:":
			clear(*target)
			clear(*other)
			(*target)[":all:"] = true
		case ":none:":
			clear(*target)
		case "":
		default:
			if !extraRe.MatchString(name) {
				return fmt.Errorf("%s: bad project name %q", opt, name)
			}
			n := NormalizeName(name)
			delete(*other, n)
			(*target)[n] = true
		}
	}
	return nil
}

// Allowed reports which kinds of file the project may be installed from,
// with pip's precedence (a project named in either option, then :all:).
func (b BinaryPolicy) Allowed(project string) (wheel, sdist bool) {
	n := NormalizeName(project)
	switch {
	case b.OnlyBinary[n]:
		return true, false
	case b.NoBinary[n]:
		return false, true
	case b.OnlyBinary[":all:"]:
		return true, false
	case b.NoBinary[":all:"]:
		return false, true
	}
	return true, true
}

// SyntaxError is a requirements-file line that could not be parsed.
type SyntaxError struct {
	File string
	Line int
	Text string
	Msg  string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("%s:%d: %s: %q", e.File, e.Line, e.Msg, e.Text)
}

// NormalizeName is the PEP 503 normalized form of a project or extra name.
func NormalizeName(name string) string {
	return strings.ToLower(normRe.ReplaceAllString(name, "-"))
}

var normRe = regexp.MustCompile(`[-_.]+`)

// ParseRequirementsFile parses a pip requirements file and the files it
// includes with -r and -c (relative to the including file). It understands
// pins, ranges, extras, environment markers, comments, line continuations,
// --hash options, direct URLs and local paths, and the -i/--index-url,
// --extra-index-url, -f/--find-links and --no-index options. Anything else
// is a *SyntaxError naming the file and line.
func ParseRequirementsFile(path string) (*Requirements, error) {
	out := &Requirements{}
	if err := parseFile(path, false, out, map[string]bool{}, ""); err != nil {
		return nil, err
	}
	return out, nil
}

// ErrOutsideRoot is returned by ParseRequirementsFileIn for an include, a
// find-links directory or a local path outside the allowed root.
var ErrOutsideRoot = errors.New("path outside the app's tree")

// ParseRequirementsFileIn is ParseRequirementsFile for an untrusted file
// (one that came in an upload): every -r/-c include, -f directory and local
// path must resolve, symbolic links followed, inside root. Anything else is
// an error wrapping ErrOutsideRoot that does not reveal the file's content.
func ParseRequirementsFileIn(root, path string) (*Requirements, error) {
	r, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("pyinstall: requirements root %s: %w", root, err)
	}
	if err := checkInside(r, path); err != nil {
		return nil, fmt.Errorf("pyinstall: requirements %s: %w", path, err)
	}
	out := &Requirements{}
	if err := parseFile(path, false, out, map[string]bool{}, r); err != nil {
		return nil, err
	}
	return out, nil
}

// checkInside reports an error unless p (resolved through symbolic links,
// as far as it exists) is root or below it.
func checkInside(root, p string) error {
	if root == "" {
		return nil
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		real = filepath.Clean(abs)
	}
	if real != root && !strings.HasPrefix(real, root+string(filepath.Separator)) {
		return ErrOutsideRoot
	}
	return nil
}

// ParseRequirements parses requirements from r; name is used in errors and
// dir resolves relative includes and paths.
func ParseRequirements(r io.Reader, name, dir string) (*Requirements, error) {
	out := &Requirements{}
	if err := parse(r, name, dir, false, out, map[string]bool{}, ""); err != nil {
		return nil, err
	}
	return out, nil
}

func parseFile(path string, constraint bool, out *Requirements, seen map[string]bool, root string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("pyinstall: requirements %s: %w", path, err)
	}
	if seen[abs] {
		return fmt.Errorf("pyinstall: requirements %s: included twice (a loop of -r/-c)", path)
	}
	seen[abs] = true
	f, err := os.Open(abs)
	if err != nil {
		return fmt.Errorf("pyinstall: requirements: %w", err)
	}
	defer f.Close()
	return parse(f, path, filepath.Dir(abs), constraint, out, seen, root)
}

func parse(r io.Reader, name, dir string, constraint bool, out *Requirements, seen map[string]bool, root string) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		start := lineNo
		line := sc.Text()
		// Join continuation lines.
		for strings.HasSuffix(line, `\`) && !strings.HasSuffix(line, `\\`) {
			line = strings.TrimSuffix(line, `\`)
			if !sc.Scan() {
				break
			}
			lineNo++
			line += sc.Text()
		}
		text := stripComment(line)
		if text == "" {
			continue
		}
		serr := func(msg string) error {
			return &SyntaxError{File: name, Line: start, Text: strings.TrimSpace(line), Msg: msg}
		}
		if strings.HasPrefix(text, "-") {
			if err := parseOption(text, name, dir, start, out, seen, serr, root); err != nil {
				return err
			}
			continue
		}
		req, err := parseRequirementLine(text, dir)
		if err != nil {
			return serr(err.Error())
		}
		if req.URL != "" && !strings.Contains(req.URL, "://") {
			if err := checkInside(root, req.URL); err != nil {
				return fmt.Errorf("%s:%d: local path: %w", name, start, err)
			}
		}
		if v, err := parseVCS(req.URL); err == nil && strings.HasPrefix(v.repo, "file:") && root != "" {
			u, _ := url.Parse(v.repo)
			if err := checkInside(root, u.Path); err != nil {
				return fmt.Errorf("%s:%d: git repository path: %w", name, start, err)
			}
		}
		req.Source = fmt.Sprintf("%s:%d", name, start)
		if constraint {
			if req.URL != "" || len(req.Extras) > 0 {
				return serr("constraints may not have URLs or extras")
			}
			out.Constraints = append(out.Constraints, req)
		} else {
			out.Requirements = append(out.Requirements, req)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("pyinstall: read %s: %w", name, err)
	}
	return nil
}

// stripComment removes a comment (a # at the start or after whitespace) and
// surrounding space.
func stripComment(line string) string {
	for i := 0; i < len(line); i++ {
		if line[i] == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t') {
			line = line[:i]
			break
		}
	}
	return strings.TrimSpace(line)
}

func splitOption(text string) (opt, val string) {
	if i := strings.IndexAny(text, " \t="); i >= 0 {
		return text[:i], strings.TrimSpace(strings.TrimLeft(text[i:], " \t="))
	}
	if len(text) > 2 && text[0] == '-' && text[1] != '-' {
		return text[:2], strings.TrimSpace(text[2:])
	}
	return text, ""
}

func parseOption(text, name, dir string, line int, out *Requirements, seen map[string]bool, serr func(string) error, root string) error {
	opt, val := splitOption(text)
	needVal := func() error {
		if val == "" {
			return serr("option " + opt + " needs a value")
		}
		return nil
	}
	switch opt {
	case "-r", "--requirement", "-c", "--constraint":
		if err := needVal(); err != nil {
			return err
		}
		p := val
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if err := checkInside(root, p); err != nil {
			return fmt.Errorf("%s:%d: %s: %w", name, line, opt, err)
		}
		err := parseFile(p, opt == "-c" || opt == "--constraint", out, seen, root)
		if err != nil {
			var se *SyntaxError
			if errors.As(err, &se) {
				return err
			}
			return fmt.Errorf("%s:%d: %w", name, line, err)
		}
	case "-i", "--index-url":
		if err := needVal(); err != nil {
			return err
		}
		out.IndexURL = val
	case "--extra-index-url":
		if err := needVal(); err != nil {
			return err
		}
		out.ExtraIndexURLs = append(out.ExtraIndexURLs, val)
	case "-f", "--find-links":
		if err := needVal(); err != nil {
			return err
		}
		if !strings.Contains(val, "://") && !filepath.IsAbs(val) {
			val = filepath.Join(dir, val)
		}
		if !strings.Contains(val, "://") {
			if err := checkInside(root, val); err != nil {
				return fmt.Errorf("%s:%d: %s: %w", name, line, opt, err)
			}
		}
		out.FindLinks = append(out.FindLinks, val)
	case "--no-index":
		out.NoIndex = true
	case "--pre":
		out.Pre = true
	case "--prefer-binary":
		out.PreferBinary = true
	case "--require-hashes":
		out.RequireHashes = true
	case "--no-binary", "--only-binary":
		if err := needVal(); err != nil {
			return err
		}
		var err error
		if opt == "--no-binary" {
			err = out.Binary.SetNoBinary(val)
		} else {
			err = out.Binary.SetOnlyBinary(val)
		}
		if err != nil {
			return serr(err.Error())
		}
	case "--trusted-host":
		// Accepted for compatibility: certificates are always
		// verified for https, and http indexes need no exception.
		if err := needVal(); err != nil {
			return err
		}
	case "--hash":
		return serr("--hash must follow a requirement on the same line")
	case "-e", "--editable":
		return serr("editable requirements are not supported in app images")
	default:
		return serr("unknown option " + opt)
	}
	return nil
}

var (
	nameStartRe = regexp.MustCompile(`^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)`)
	vcsRe       = regexp.MustCompile(`^(git|hg|svn|bzr)\+[a-z]+:`)
	hashRe      = regexp.MustCompile(`^(sha256|sha384|sha512):[0-9a-fA-F]+$`)
	extraRe     = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$`)
	distFileRe  = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9._]*?)-([0-9][^-]*?)(?:-[^-]+)?(?:-[^-]+-[^-]+-[^-]+\.whl|\.tar\.gz|\.zip)$`)
)

// parseRequirementLine parses a requirement with optional trailing
// --hash options, or a bare URL or path.
func parseRequirementLine(text, dir string) (Requirement, error) {
	var hashes []string
	// Split off --hash options (the only per-requirement option
	// supported).
	if i := strings.Index(text, " --"); i >= 0 || strings.HasPrefix(text, "--") {
		opts := strings.Fields(text[i:])
		text = strings.TrimSpace(text[:i])
		for j := 0; j < len(opts); j++ {
			o := opts[j]
			var v string
			switch {
			case strings.HasPrefix(o, "--hash="):
				v = strings.TrimPrefix(o, "--hash=")
			case o == "--hash" && j+1 < len(opts):
				j++
				v = opts[j]
			default:
				return Requirement{}, fmt.Errorf("unsupported per-requirement option %s", o)
			}
			if !hashRe.MatchString(v) {
				return Requirement{}, fmt.Errorf("malformed hash %q (want sha256:<hex>)", v)
			}
			hashes = append(hashes, strings.ToLower(v))
		}
	}
	if vcsRe.MatchString(text) {
		// A bare VCS URL: the name comes from #egg=.
		v, err := parseVCS(text)
		if err != nil {
			return Requirement{}, err
		}
		if v.egg == "" {
			return Requirement{}, fmt.Errorf("cannot tell the project name from %q; add #egg=name or write name @ %s", text, text)
		}
		return Requirement{Name: v.egg, URL: text, Hashes: hashes}, nil
	}
	// A bare URL or path: name and version come from the filename.
	if isPathOrURL(text) {
		u, err := directURL(text, dir)
		if err != nil {
			return Requirement{}, err
		}
		base := u
		if i := strings.LastIndexAny(base, "/#?"); i >= 0 {
			base = base[i+1:]
		}
		req := Requirement{URL: u, Hashes: hashes}
		if m := distFileRe.FindStringSubmatch(base); m != nil {
			req.Name = m[1]
		} else if strings.HasPrefix(u, "/") {
			// A source directory: its name is learned when it is
			// built.
			req.Name = ""
		} else {
			return Requirement{}, fmt.Errorf("cannot tell the project name from %q; write name @ url", text)
		}
		return req, nil
	}
	req, err := ParseRequirement(text)
	if err != nil {
		return Requirement{}, err
	}
	if req.URL != "" {
		if req.URL, err = directURL(req.URL, dir); err != nil {
			return Requirement{}, err
		}
	}
	req.Hashes = hashes
	return req, nil
}

func isPathOrURL(s string) bool {
	return strings.HasPrefix(s, ".") || strings.HasPrefix(s, "/") || strings.HasPrefix(s, "file:") ||
		strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// directURL turns a URL or a path into an http(s) URL or an absolute path.
func directURL(s, dir string) (string, error) {
	switch {
	case vcsRe.MatchString(s):
		if _, err := parseVCS(s); err != nil {
			return "", err
		}
		return s, nil
	case strings.HasPrefix(s, "http://"), strings.HasPrefix(s, "https://"):
		if _, err := url.Parse(s); err != nil {
			return "", fmt.Errorf("bad URL %q: %w", s, err)
		}
		return s, nil
	case strings.HasPrefix(s, "file:"):
		u, err := url.Parse(s)
		if err != nil || u.Path == "" {
			return "", fmt.Errorf("bad file URL %q", s)
		}
		return u.Path, nil
	case strings.Contains(s, "://"):
		return "", fmt.Errorf("unsupported URL scheme in %q", s)
	}
	if !filepath.IsAbs(s) {
		s = filepath.Join(dir, s)
	}
	return filepath.Clean(s), nil
}

// ParseRequirement parses one PEP 508 requirement string, for example
// `name[extra1,extra2]>=1.0,<2; python_version >= "3.8"` or
// `name @ https://host/name-1.0.tar.gz`.
func ParseRequirement(s string) (Requirement, error) {
	orig := s
	s = strings.TrimSpace(s)
	var req Requirement
	// The marker starts at the first ';' (URLs may not contain one
	// followed by a space in PEP 508; pip splits the same way).
	if i := strings.Index(s, ";"); i >= 0 {
		ms := strings.TrimSpace(s[i+1:])
		s = strings.TrimSpace(s[:i])
		if ms == "" {
			return req, fmt.Errorf("empty environment marker in %q", orig)
		}
		m, err := ParseMarker(ms)
		if err != nil {
			return req, err
		}
		req.Marker = m
	}
	name := nameStartRe.FindString(s)
	if name == "" {
		return req, fmt.Errorf("expected a project name in %q", orig)
	}
	req.Name = name
	s = strings.TrimSpace(s[len(name):])
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return req, fmt.Errorf("unclosed [ in %q", orig)
		}
		for _, e := range strings.Split(s[1:end], ",") {
			e = strings.TrimSpace(e)
			if e == "" {
				continue
			}
			if !extraRe.MatchString(e) {
				return req, fmt.Errorf("bad extra name %q in %q", e, orig)
			}
			req.Extras = append(req.Extras, NormalizeName(e))
		}
		sort.Strings(req.Extras)
		s = strings.TrimSpace(s[end+1:])
	}
	if strings.HasPrefix(s, "@") {
		u := strings.TrimSpace(s[1:])
		if u == "" || strings.ContainsAny(u, " \t") {
			return req, fmt.Errorf("bad URL in %q", orig)
		}
		req.URL = u
		return req, nil
	}
	if strings.HasPrefix(s, "(") {
		if !strings.HasSuffix(s, ")") {
			return req, fmt.Errorf("unclosed ( in %q", orig)
		}
		s = strings.TrimSpace(s[1 : len(s)-1])
	}
	if s != "" {
		spec := strings.Join(strings.Fields(s), "")
		if !strings.ContainsAny(spec[:1], "<>=!~") {
			return req, fmt.Errorf("expected a version specifier after %q in %q, got %q", name, orig, s)
		}
		for _, part := range strings.Split(spec, ",") {
			if _, err := semver.PyPI.ParseConstraint(part); err != nil || part == "" || !strings.ContainsAny(part, "0123456789") {
				return req, fmt.Errorf("bad version specifier %q in %q", part, orig)
			}
		}
		req.Specifier = spec
	}
	return req, nil
}
