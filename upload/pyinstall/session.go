package pyinstall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"deps.dev/util/resolve"
	"deps.dev/util/resolve/dep"
	"deps.dev/util/resolve/pypi"
	"deps.dev/util/semver"
)

// Sentinels matched by errors.Is on a *ResolutionError.
var (
	// ErrPackageMissing: no index or find-links location has the project.
	ErrPackageMissing = errors.New("package not found on any index")
	// ErrConflict: the requirements cannot all be satisfied.
	ErrConflict = errors.New("conflicting requirements")
)

// ResolutionError says why no set of versions satisfies the requirements.
type ResolutionError struct {
	// Package is the project the resolver could not pin.
	Package string
	// Missing is true when no source has the project at all.
	Missing bool
	// Requirements lists every requirement on Package the resolver saw,
	// each with who asked for it, e.g. `corelib<2 (from netio 3.2)`.
	Requirements []string
	// Detail is the resolver's own explanation.
	Detail string
}

func (e *ResolutionError) Error() string {
	if e.Missing {
		return fmt.Sprintf("package %s not found on any index (required by: %s)", e.Package, strings.Join(e.Requirements, "; "))
	}
	return fmt.Sprintf("conflicting requirements for %s: %s", e.Package, strings.Join(e.Requirements, "; "))
}

// Is matches ErrPackageMissing or ErrConflict.
func (e *ResolutionError) Is(target error) bool {
	return target == ErrPackageMissing && e.Missing || target == ErrConflict && !e.Missing
}

// future is a value computed once in the background.
type future[T any] struct {
	done chan struct{}
	v    T
	err  error
}

func (f *future[T]) wait(ctx context.Context) (T, error) {
	select {
	case <-f.done:
		return f.v, f.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// start returns the future for key, starting fn in the background the
// first time.
func start[T any](s *session, m map[string]*future[T], key string, fn func() (T, error)) *future[T] {
	s.mu.Lock()
	f, ok := m[key]
	if !ok {
		f = &future[T]{done: make(chan struct{})}
		m[key] = f
	}
	s.mu.Unlock()
	if !ok {
		s.goBackground(func() {
			f.v, f.err = fn()
			close(f.done)
		})
	}
	return f
}

type release struct {
	name, version string
	wheel, sdist  *link
	// tree is a git checkout (a VCS requirement), built like an sdist.
	tree *gitTree
}

type projectInfo struct {
	versions []resolve.Version // ascending, yanked ones left out
	releases map[string]*release
	// yanked are releases whose every file is yanked (PEP 592): used only
	// for an exact == or === pin, as pip does.
	yanked map[string]*release
}

type wheelResult struct {
	path     string
	filename string
}

// session is the state of one Resolve or Install call.
type session struct {
	in *Installer
	// ctx is the call's context, kept so that prefetches started from
	// resolver callbacks (which get their own ctx) stop with the call.
	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup

	interp    *Interpreter
	ranks     map[string]int
	f         *fetcher
	indexes   []string
	findLinks []string

	root      resolve.VersionKey
	rootDeps  []Requirement
	requested map[string]bool
	cons      map[string][]*semver.Constraint
	hashes    map[string]map[string]bool
	hashMode  bool
	direct    map[string]link
	vcs       map[string]vcsRef // git requirements by project

	tags         string // TagsKey of the interpreter
	pre          bool
	preferBinary bool
	binary       BinaryPolicy

	dlSem, buildSem chan struct{}

	mu        sync.Mutex
	projects  map[string]*future[*projectInfo]
	metas     map[string]*future[*coreMetadata]
	downloads map[string]*future[string]
	wheels    map[string]*future[wheelResult]
	missing   map[string]bool
	reqFrom   map[string][]string
	hits      map[string]bool // URLs found in the cache
	buildEnvs map[string]*future[string]
	commits   map[string]*future[string]
	sources   map[string]*future[*preparedSource]
	// hookMeta is the metadata the resolver used for a source (by build
	// key) when it came from prepare_metadata_for_build_wheel: the built
	// wheel must agree with it.
	hookMeta map[string]*coreMetadata
	// runs are the metadata hooks' processes, which go on to build the
	// wheel, by build key, with when they started.
	runs     map[string]*hookRun
	runStart map[string]time.Time
	servers  map[string]*future[*buildServer] // by interpreter
	builtNow map[string]wheelResult           // wheels built to learn their metadata
	tmpDirs  []string
	depth    int // build-environment nesting: 0 for an app's install

	built, cacheHits, downloaded, hooks, cloned int
}

func (in *Installer) newSession(ctx context.Context, reqs *Requirements, depth int) (*session, error) {
	if reqs == nil {
		return nil, errors.New("pyinstall: no requirements")
	}
	if err := in.checkAllowed(reqs); err != nil {
		return nil, err
	}
	// Every build of this install works beneath one directory of its
	// own (BuildDir), which a sandbox mounts and nothing else.
	buildDir, err := in.cache.TempDir("install-")
	if err == nil {
		err = in.forBuild(buildDir, false, 0o711)
	}
	if err != nil {
		return nil, fmt.Errorf("pyinstall: build directory: %w", err)
	}
	sctx, cancel := context.WithCancel(context.WithValue(ctx, buildDirKey{}, buildDir))
	f := &fetcher{client: in.client, retries: in.cfg.Retries, pages: map[string]*pageCall{}, cache: in.cache, now: in.cfg.Now}
	f.onRetry = func(u string, attempt int, err error) {
		in.emit(Event{Stage: StageRetry, Detail: u, Err: err})
	}
	var indexes []string
	if !in.cfg.NoIndex && !reqs.NoIndex {
		idx := in.cfg.IndexURL
		if reqs.IndexURL != "" {
			idx = reqs.IndexURL
		}
		for _, u := range append(append([]string{idx}, in.cfg.ExtraIndexURLs...), reqs.ExtraIndexURLs...) {
			indexes = append(indexes, strings.TrimSuffix(u, "/")+"/")
		}
	}
	// A cold probe of the interpreter starts Python (about 100 ms): the
	// index pages of the requirements that need no marker evaluated are
	// fetched meanwhile (fetchProject then finds them done or on the
	// way).
	prefetch := prefetchPages(sctx, f, indexes, reqs)
	interp, err := in.Interpreter(ctx)
	if err != nil {
		cancel()
		prefetch.Wait()
		_ = os.RemoveAll(buildDir)
		return nil, err
	}
	s := &session{
		in: in, ctx: sctx, cancel: cancel, interp: interp, ranks: interp.tagRanks(),
		f: f, indexes: indexes,
		root:      resolve.VersionKey{PackageKey: resolve.PackageKey{System: resolve.PyPI, Name: "(app)"}, VersionType: resolve.Concrete, Version: "0"},
		requested: map[string]bool{}, cons: map[string][]*semver.Constraint{},
		hashes: map[string]map[string]bool{}, direct: map[string]link{}, vcs: map[string]vcsRef{},
		tags: TagsKey(interp), pre: reqs.Pre, preferBinary: reqs.PreferBinary, binary: reqs.Binary, hashMode: reqs.RequireHashes,
		dlSem: make(chan struct{}, in.cfg.Workers), buildSem: make(chan struct{}, in.cfg.BuildWorkers),
		commits: map[string]*future[string]{}, sources: map[string]*future[*preparedSource]{}, hookMeta: map[string]*coreMetadata{}, runs: map[string]*hookRun{}, runStart: map[string]time.Time{}, servers: map[string]*future[*buildServer]{}, builtNow: map[string]wheelResult{},
		projects: map[string]*future[*projectInfo]{}, metas: map[string]*future[*coreMetadata]{},
		downloads: map[string]*future[string]{}, wheels: map[string]*future[wheelResult]{},
		depth: depth, missing: map[string]bool{}, reqFrom: map[string][]string{}, hits: map[string]bool{}, buildEnvs: map[string]*future[string]{},
		tmpDirs: []string{buildDir},
	}
	s.goBackground(prefetch.Wait) // close waits for the prefetches too
	s.findLinks = append(append([]string{}, in.cfg.FindLinks...), reqs.FindLinks...)
	for _, c := range reqs.Constraints {
		if c.Marker != nil && !c.Marker.Eval(interp.Markers, "") {
			continue
		}
		con, err := semver.PyPI.ParseConstraint(c.Specifier)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("pyinstall: constraint %s (%s): %w", c, c.Source, err)
		}
		s.cons[c.Key()] = append(s.cons[c.Key()], con)
	}
	for _, r := range reqs.Requirements {
		if r.Marker != nil && !r.Marker.Eval(interp.Markers, "") {
			in.log.Debug("pyinstall: requirement skipped by its marker", "requirement", r.String(), "source", r.Source)
			continue
		}
		if v, err := parseVCS(r.URL); err == nil {
			if r.Name == "" {
				s.close()
				return nil, fmt.Errorf("pyinstall: %s (%s): cannot tell the project name; add #egg=name or write name @ git+…", r.URL, r.Source)
			}
			if reqs.RequireHashes || len(r.Hashes) > 0 {
				s.close()
				return nil, fmt.Errorf("pyinstall: %s (%s): --require-hashes: a git requirement cannot be checked against a hash (pin an sdist or wheel with --hash instead)", r.String(), r.Source)
			}
			if prev, ok := s.vcs[r.Key()]; ok && prev != v {
				s.close()
				return nil, &ResolutionError{Package: r.Key(), Requirements: []string{prev.repo + "@" + prev.rev, v.repo + "@" + v.rev}, Detail: "two git references"}
			}
			s.vcs[r.Key()] = v
			r.Specifier = ""
		} else if r.URL != "" {
			l, err := s.directLink(r)
			if err != nil {
				s.close()
				return nil, fmt.Errorf("pyinstall: %s (%s): %w", r.String(), r.Source, err)
			}
			r.Name = l.Project
			if prev, ok := s.direct[l.Project]; ok && prev.URL != l.URL {
				s.close()
				return nil, &ResolutionError{Package: l.Project, Requirements: []string{prev.URL, l.URL}, Detail: "two direct references"}
			}
			s.direct[l.Project] = l
			r.Specifier = ""
		}
		if len(r.Hashes) > 0 {
			s.hashMode = true
			set := s.hashes[r.Key()]
			if set == nil {
				set = map[string]bool{}
				s.hashes[r.Key()] = set
			}
			for _, h := range r.Hashes {
				algo, hex, _ := strings.Cut(h, ":")
				if algo != "sha256" {
					s.close()
					return nil, fmt.Errorf("pyinstall: %s (%s): only sha256 hashes are supported", r.String(), r.Source)
				}
				set[hex] = true
			}
		}
		if reqs.RequireHashes {
			if len(r.Hashes) == 0 {
				s.close()
				return nil, fmt.Errorf("pyinstall: --require-hashes: %s (%s) has no --hash", r.String(), r.Source)
			}
			if r.URL == "" && (!strings.HasPrefix(r.Specifier, "==") || strings.Contains(r.Specifier, ",") || strings.HasSuffix(r.Specifier, "*")) {
				s.close()
				return nil, fmt.Errorf("pyinstall: --require-hashes: %s (%s) is not pinned with ==", r.String(), r.Source)
			}
		}
		s.requested[r.Key()] = true
		s.rootDeps = append(s.rootDeps, r)
	}
	return s, nil
}

// prefetchPages starts fetching, from every index, the project page of each
// requirement that is a plain name (no URL, no marker), and returns what
// waits for them. Errors are kept in f's page calls for whoever asks.
//
// In hash-checking mode nothing is prefetched: a requirement without a
// hash, or not pinned, must be refused before any request.
func prefetchPages(ctx context.Context, f *fetcher, indexes []string, reqs *Requirements) *sync.WaitGroup {
	var wg sync.WaitGroup
	if reqs.RequireHashes {
		return &wg
	}
	for _, r := range reqs.Requirements {
		if len(r.Hashes) > 0 {
			return &wg
		}
	}
	for _, r := range reqs.Requirements {
		if r.URL != "" || r.Marker != nil || r.Name == "" {
			continue
		}
		name := r.Key()
		for _, idx := range indexes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = f.links(ctx, idx+name+"/", name)
			}()
		}
	}
	return &wg
}

// IndexNotAllowedError is a requirements file that names a remote location
// outside Config.AllowedIndexes.
type IndexNotAllowedError struct {
	// URL is the location, Option how the file named it (--index-url,
	// --extra-index-url, --find-links, or the requirement).
	URL, Option string
	Allowed     []string
}

func (e *IndexNotAllowedError) Error() string {
	return fmt.Sprintf("%s %s is not an allowed index (allowed: %s)", e.Option, e.URL, strings.Join(e.Allowed, ", "))
}

// checkAllowed refuses, before any request, a Requirements value that names
// a remote location outside Config.AllowedIndexes.
func (in *Installer) checkAllowed(reqs *Requirements) error {
	if len(in.cfg.AllowedIndexes) == 0 {
		return nil
	}
	allowed := func(u string) bool {
		for _, a := range in.cfg.AllowedIndexes {
			a = strings.TrimSuffix(a, "/")
			if u == a || strings.HasPrefix(u, a+"/") || strings.HasPrefix(u, a+"?") || strings.HasSuffix(a, "/") && strings.HasPrefix(u, a) {
				return true
			}
		}
		return false
	}
	check := func(u, opt string) error {
		if !strings.Contains(u, "://") || strings.HasPrefix(u, "file:") {
			return nil // local: ParseRequirementsFileIn keeps it in the app's tree
		}
		if !allowed(u) {
			return fmt.Errorf("pyinstall: %w", &IndexNotAllowedError{URL: u, Option: opt, Allowed: in.cfg.AllowedIndexes})
		}
		return nil
	}
	if reqs.IndexURL != "" {
		if err := check(reqs.IndexURL, "--index-url"); err != nil {
			return err
		}
	}
	for _, u := range reqs.ExtraIndexURLs {
		if err := check(u, "--extra-index-url"); err != nil {
			return err
		}
	}
	for _, u := range reqs.FindLinks {
		if err := check(u, "--find-links"); err != nil {
			return err
		}
	}
	for _, r := range append(append([]Requirement(nil), reqs.Requirements...), reqs.Constraints...) {
		u := r.URL
		if v, err := parseVCS(u); err == nil {
			u = v.repo
		}
		if err := check(u, "requirement "+r.Name+" ("+r.Source+")"); err != nil {
			return err
		}
	}
	return nil
}

func (s *session) goBackground(fn func()) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		fn()
	}()
}

// close stops every prefetch, waits for them and removes build
// environments.
func (s *session) close() {
	s.mu.Lock()
	for _, f := range s.servers {
		select {
		case <-f.done:
			if f.v != nil {
				f.v.close()
			}
		default:
		}
	}
	s.mu.Unlock()
	s.cancel()
	s.bg.Wait()
	for _, d := range s.tmpDirs {
		_ = os.RemoveAll(d)
	}
}

// maxBuildDepth bounds build environments that need build environments.
const maxBuildDepth = 3

// buildEnv returns the interpreter of a private virtualenv with requires
// installed by this installer (from the same indexes), made once per session
// for each distinct set: pip's build isolation.
func (s *session) buildEnv(ctx context.Context, requires []string) (string, error) {
	if s.depth >= maxBuildDepth {
		return "", fmt.Errorf("build requirements nested more than %d deep (%s)", maxBuildDepth, strings.Join(requires, ", "))
	}
	sorted := append([]string(nil), requires...)
	sort.Strings(sorted)
	f := start(s, s.buildEnvs, strings.Join(sorted, "\n"), func() (string, error) {
		reqs := &Requirements{NoIndex: len(s.indexes) == 0, FindLinks: s.findLinks}
		if len(s.indexes) > 0 {
			reqs.IndexURL, reqs.ExtraIndexURLs = s.indexes[0], s.indexes[1:]
		}
		for _, r := range requires {
			req, err := ParseRequirement(r)
			if err != nil {
				return "", fmt.Errorf("build requirement %q: %w", r, err)
			}
			req.Source = "build-system.requires"
			reqs.Requirements = append(reqs.Requirements, req)
		}
		dir, err := s.in.buildTemp(s.ctx, "buildenv-")
		if err == nil {
			err = s.in.forBuild(dir, false, 0o755)
		}
		if err != nil {
			return "", err
		}
		s.mu.Lock()
		s.tmpDirs = append(s.tmpDirs, dir)
		s.mu.Unlock()
		venv := filepath.Join(dir, "venv")
		if _, err := s.in.install(s.ctx, reqs, venv, InstallOptions{}, s.depth+1); err != nil {
			return "", err
		}
		return filepath.Join(venv, "bin", "python"), nil
	})
	return f.wait(ctx)
}

// directLink turns a direct reference into a link; a source directory is
// built into a wheel first.
func (s *session) directLink(r Requirement) (link, error) {
	l := link{URL: r.URL}
	if strings.Contains(r.URL, "://") {
		u, err := url.Parse(r.URL)
		if err != nil {
			return l, err
		}
		if h, ok := strings.CutPrefix(u.Fragment, "sha256="); ok {
			l.SHA256 = strings.ToLower(h)
		}
		u.Fragment = ""
		l.URL = u.String()
		l.Filename = filepath.Base(u.Path)
	} else {
		fi, err := os.Stat(r.URL)
		if err != nil {
			return l, err
		}
		if fi.IsDir() {
			wheel, cleanup, err := s.in.buildWheel(s.ctx, r.URL, r.Name, "", true, s.buildEnv)
			if err != nil {
				return l, err
			}
			defer cleanup()
			p, sha, err := s.in.cache.PutFile(wheel)
			if err != nil {
				return l, err
			}
			s.built++
			l = link{URL: p, Filename: filepath.Base(wheel), SHA256: sha}
		} else {
			l.Filename = filepath.Base(r.URL)
		}
	}
	if !l.parseFilename() {
		return l, fmt.Errorf("cannot tell project and version from %q", l.Filename)
	}
	if r.Name != "" && NormalizeName(r.Name) != l.Project {
		return l, fmt.Errorf("%s is a distribution of %s, not %s", l.Filename, l.Project, r.Name)
	}
	return l, nil
}

// --- resolve.Client ---------------------------------------------------

// Version implements resolve.Client.
func (s *session) Version(ctx context.Context, vk resolve.VersionKey) (resolve.Version, error) {
	return resolve.Version{VersionKey: vk}, nil
}

// Versions implements resolve.Client: every usable version, ascending.
func (s *session) Versions(ctx context.Context, pk resolve.PackageKey) ([]resolve.Version, error) {
	if pk == s.root.PackageKey {
		return []resolve.Version{{VersionKey: s.root}}, nil
	}
	p, err := s.project(pk.Name).wait(ctx)
	if err != nil {
		return nil, err
	}
	return append([]resolve.Version(nil), p.versions...), nil
}

// MatchingVersions implements resolve.Client.
func (s *session) MatchingVersions(ctx context.Context, vk resolve.VersionKey) ([]resolve.Version, error) {
	vs, err := s.Versions(ctx, vk.PackageKey)
	if err != nil {
		return nil, err
	}
	var m []resolve.Version
	if s.pre && vk.PackageKey != s.root.PackageKey {
		m = matchWithPre(vk, vs)
	} else {
		m = resolve.MatchRequirement(vk, vs)
	}
	if len(m) == 0 && vk.PackageKey != s.root.PackageKey {
		m = s.matchYanked(ctx, vk)
	}
	if len(m) > 0 && vk.PackageKey != s.root.PackageKey {
		// The resolver will most likely try the highest match next:
		// have its metadata on the way.
		s.prefetchMeta(vk.Name, m[len(m)-1].Version)
	}
	return m, nil
}

// matchWithPre is MatchRequirement with pre-releases allowed (--pre),
// keeping the order of vs.
func matchWithPre(vk resolve.VersionKey, vs []resolve.Version) []resolve.Version {
	var c *semver.Constraint
	if spec := strings.TrimSpace(vk.Version); spec != "" {
		var err error
		if c, err = semver.PyPI.ParseConstraint(spec); err != nil {
			return nil
		}
	}
	var out []resolve.Version
	for _, v := range vs {
		pv, err := semver.PyPI.Parse(v.Version)
		if err != nil {
			continue
		}
		if c == nil || c.MatchVersionPrerelease(pv) {
			out = append(out, v)
		}
	}
	return out
}

// matchYanked returns the yanked release an exact pin names, if any.
func (s *session) matchYanked(ctx context.Context, vk resolve.VersionKey) []resolve.Version {
	spec := vk.Version
	if !strings.HasPrefix(spec, "==") || strings.Contains(spec, ",") || strings.HasSuffix(spec, "*") {
		return nil
	}
	p, err := s.project(vk.Name).wait(ctx)
	if err != nil {
		return nil
	}
	var out []resolve.Version
	for v := range p.yanked {
		cand := []resolve.Version{{VersionKey: resolve.VersionKey{PackageKey: vk.PackageKey, VersionType: resolve.Concrete, Version: v}}}
		out = append(out, resolve.MatchRequirement(vk, cand)...)
	}
	resolve.SortVersions(out)
	return out
}

// Requirements implements resolve.Client: a version's dependencies with
// environment markers evaluated for the target interpreter. Markers that
// depend on extras are reduced to `extra == "x" or ...` for the resolver.
func (s *session) Requirements(ctx context.Context, vk resolve.VersionKey) ([]resolve.RequirementVersion, error) {
	if vk == s.root {
		return s.toResolve(s.rootDeps, "the requirements"), nil
	}
	md, err := s.meta(vk.Name, vk.Version).wait(ctx)
	if err != nil {
		return nil, err
	}
	reqs, err := parseRequiresDist(md)
	if err != nil {
		return nil, fmt.Errorf("pyinstall: %s %s: %w", vk.Name, vk.Version, err)
	}
	return s.toResolve(reqs, vk.Name+" "+vk.Version), nil
}

func parseRequiresDist(md *coreMetadata) ([]Requirement, error) {
	var out []Requirement
	for _, rd := range md.RequiresDist {
		r, err := ParseRequirement(rd)
		if err != nil {
			return nil, fmt.Errorf("Requires-Dist %q: %w", rd, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func (s *session) toResolve(reqs []Requirement, parent string) []resolve.RequirementVersion {
	var out []resolve.RequirementVersion
	env := s.interp.Markers
	for _, r := range reqs {
		var t dep.Type
		if r.Marker != nil {
			if !r.Marker.Eval(env, "") {
				var ok []string
				for _, e := range r.Marker.Extras() {
					if r.Marker.Eval(env, e) {
						ok = append(ok, fmt.Sprintf("extra == %q", e))
					}
				}
				if len(ok) == 0 {
					continue
				}
				t.AddAttr(dep.Environment, strings.Join(ok, " or "))
			}
		}
		if len(r.Extras) > 0 {
			t.AddAttr(dep.EnabledDependencies, strings.Join(r.Extras, ","))
		}
		key := r.Key()
		s.mu.Lock()
		desc := r.Name
		if len(r.Extras) > 0 {
			desc += "[" + strings.Join(r.Extras, ",") + "]"
		}
		desc += r.Specifier + " (from " + parent + ")"
		if !contains(s.reqFrom[key], desc) {
			s.reqFrom[key] = append(s.reqFrom[key], desc)
		}
		s.mu.Unlock()
		out = append(out, resolve.RequirementVersion{
			VersionKey: resolve.VersionKey{
				PackageKey:  resolve.PackageKey{System: resolve.PyPI, Name: key},
				VersionType: resolve.Requirement,
				Version:     r.Specifier,
			},
			Type: t,
		})
		if !t.HasAttr(dep.Environment) {
			s.project(key) // prefetch the index page
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var failedPkgRe = regexp.MustCompile(`(?m)(?:requirements conflict|no candidates at all for): ([^\s:"]+)`)

func (s *session) resolve() ([]Pin, error) {
	g, err := pypi.NewResolver(s).Resolve(s.ctx, s.root)
	if err != nil {
		return nil, fmt.Errorf("pyinstall: resolve: %w", err)
	}
	if g.Error != "" {
		re := &ResolutionError{Detail: strings.TrimSpace(g.Error)}
		if m := failedPkgRe.FindStringSubmatch(g.Error); m != nil {
			re.Package = m[1]
		}
		s.mu.Lock()
		re.Missing = s.missing[re.Package]
		re.Requirements = append([]string(nil), s.reqFrom[re.Package]...)
		s.mu.Unlock()
		return nil, fmt.Errorf("pyinstall: resolve: %w", re)
	}
	var pins []Pin
	for _, n := range g.Nodes {
		if n.Version.PackageKey == s.root.PackageKey {
			continue
		}
		pins = append(pins, Pin{Name: n.Version.Name, Version: n.Version.Version, Requested: s.requested[n.Version.Name]})
	}
	sortPins(pins)
	if s.hashMode {
		for _, p := range pins {
			if len(s.hashes[p.Name]) == 0 {
				return nil, fmt.Errorf("pyinstall: hash-checking mode (--require-hashes, or some requirement has --hash): %s has no --hash; pin it with its hashes", p)
			}
		}
	}
	for _, p := range pins {
		s.in.emit(Event{Package: p.Name, Version: p.Version, Stage: StageResolved})
	}
	return pins, nil
}

// --- projects, metadata, downloads, builds -------------------------------

func (s *session) project(name string) *future[*projectInfo] {
	return start(s, s.projects, name, func() (*projectInfo, error) { return s.fetchProject(name) })
}

func (s *session) fetchProject(name string) (*projectInfo, error) {
	if ref, ok := s.vcs[name]; ok {
		return s.gitProject(name, ref)
	}
	var links []link
	if l, ok := s.direct[name]; ok {
		links = []link{l}
	} else {
		pages := make([]string, 0, len(s.indexes)+len(s.findLinks))
		for _, idx := range s.indexes {
			pages = append(pages, idx+name+"/")
		}
		pages = append(pages, s.findLinks...)
		results := make([][]link, len(pages))
		errs := make([]error, len(pages))
		var wg sync.WaitGroup
		for i, p := range pages {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = s.f.links(s.ctx, p, name)
			}()
		}
		wg.Wait()
		for i := range pages {
			if errs[i] != nil && !errors.Is(errs[i], ErrNotFound) {
				return nil, fmt.Errorf("pyinstall: project %s: %w", name, errs[i])
			}
			links = append(links, results[i]...)
		}
		if len(links) == 0 {
			s.mu.Lock()
			s.missing[name] = true
			s.mu.Unlock()
		}
	}
	pyver, _ := semver.PyPI.Parse(s.interp.Markers["python_full_version"])
	p := &projectInfo{releases: map[string]*release{}, yanked: map[string]*release{}}
	bestRank := map[string]int{}
	hasLive := map[string]bool{}
	wheelOK, sdistOK := s.binary.Allowed(name)
	_, isDirect := s.direct[name]
	hashSet := s.hashes[name]
	anyHashMatch := false
	usable := links[:0:0]
	for _, l := range links {
		if !isDirect && (l.Wheel && !wheelOK || !l.Wheel && !sdistOK) {
			continue // --no-binary / --only-binary
		}
		usable = append(usable, l)
		anyHashMatch = anyHashMatch || hashSet[l.SHA256]
	}
	links = usable
	for _, l := range links {
		if !l.Yanked {
			hasLive[l.Version] = true
		}
	}
	for i := range links {
		l := links[i]
		if l.Yanked && hasLive[l.Version] {
			// A release keeps only its files that are not yanked.
			continue
		}
		if l.RequiresPython != "" && pyver != nil {
			if c, err := semver.PyPI.ParseConstraint(strings.ReplaceAll(l.RequiresPython, " ", "")); err == nil && !c.MatchVersion(pyver) {
				continue
			}
		}
		if len(hashSet) > 0 && anyHashMatch && l.SHA256 != "" && !hashSet[l.SHA256] {
			// As pip does: files whose index hash is not allowed are
			// left out if some file matches; if none does, the
			// download fails with a hash mismatch.
			continue
		}
		if cs := s.cons[name]; len(cs) > 0 {
			ok := true
			for _, c := range cs {
				ok = ok && c.Match(l.Version)
			}
			if !ok {
				continue
			}
		}
		rel := p.releases[l.Version]
		if rel == nil {
			rel = &release{name: name, version: l.Version}
		}
		if l.Wheel {
			r := s.interp.tagRank(s.ranks, l.Tags)
			if r < 0 {
				continue
			}
			if old, ok := bestRank[l.Version]; !ok || r < old {
				bestRank[l.Version] = r
				rel.wheel = &l
			}
		} else if rel.sdist == nil || strings.HasSuffix(l.Filename, ".tar.gz") && !strings.HasSuffix(rel.sdist.Filename, ".tar.gz") {
			rel.sdist = &l
		}
		p.releases[l.Version] = rel
	}
	for v, rel := range p.releases {
		if !hasLive[v] {
			p.yanked[v] = rel
			delete(p.releases, v)
			continue
		}
		p.versions = append(p.versions, resolve.Version{VersionKey: resolve.VersionKey{
			PackageKey: resolve.PackageKey{System: resolve.PyPI, Name: name}, VersionType: resolve.Concrete, Version: v}})
	}
	resolve.SortVersions(p.versions)
	if s.preferBinary {
		// --prefer-binary: the resolver tries candidates from the end
		// of the list, so versions with a wheel go last (each group
		// still ascending).
		sort.SliceStable(p.versions, func(i, j int) bool {
			return p.releases[p.versions[i].Version].wheel == nil && p.releases[p.versions[j].Version].wheel != nil
		})
	}
	// Prefetch the metadata of the newest final release: the resolver
	// usually tries it first.
	for i := len(p.versions) - 1; i >= 0; i-- {
		if v, err := semver.PyPI.Parse(p.versions[i].Version); err == nil && (s.pre || !v.IsPrerelease()) {
			s.prefetchMeta(name, p.versions[i].Version)
			break
		}
	}
	return p, nil
}

func (s *session) release(name, version string) (*release, error) {
	p, err := s.project(name).wait(s.ctx)
	if err != nil {
		return nil, err
	}
	rel := p.releases[version]
	if rel == nil {
		rel = p.yanked[version]
	}
	if rel == nil {
		return nil, fmt.Errorf("pyinstall: %s %s: no such release", name, version)
	}
	return rel, nil
}

func (s *session) prefetchMeta(name, version string) { s.meta(name, version) }

func (s *session) meta(name, version string) *future[*coreMetadata] {
	return start(s, s.metas, name+"=="+version, func() (*coreMetadata, error) {
		rel, err := s.release(name, version)
		if err != nil {
			return nil, err
		}
		md, err := s.fetchMeta(rel)
		if err != nil {
			return nil, err
		}
		if NormalizeName(md.Name) != name {
			return nil, fmt.Errorf("pyinstall: %s %s: its metadata names %q", name, version, md.Name)
		}
		if !sameVersion(md.Version, version) {
			// pip's MetadataInconsistent: the file says one version,
			// its metadata another.
			return nil, fmt.Errorf("pyinstall: %w", &MetadataMismatchError{Package: name, Version: version, Field: "Version", Hook: md.Version, Wheel: version, Other: "the file name"})
		}
		// Prefetch the index pages of the dependencies it can have here,
		// those of its extras too (a page is cheap, and waiting for
		// the resolver to ask for an extra costs a round trip per
		// level).
		if reqs, err := parseRequiresDist(md); err == nil {
			for _, r := range reqs {
				if r.Marker == nil || r.Marker.Eval(s.interp.Markers, "") {
					s.project(r.Key())
					continue
				}
				for _, e := range r.Marker.Extras() {
					if r.Marker.Eval(s.interp.Markers, e) {
						s.project(r.Key())
						break
					}
				}
			}
		}
		return md, nil
	})
}

func (s *session) fetchMeta(rel *release) (*coreMetadata, error) {
	if w := rel.wheel; w != nil {
		if set := s.hashes[rel.name]; len(set) > 0 && w.SHA256 != "" && !set[w.SHA256] {
			_, err := s.download(*w).wait(s.ctx) // the --hash mismatch
			return nil, err
		}
		if w.SHA256 != "" {
			if p, ok := s.in.cache.Blob(w.SHA256); ok {
				return wheelMetadata(p)
			}
		}
		if w.HasMetadata && strings.Contains(w.URL, "://") {
			// PEP 658: one small request; the wheel itself comes
			// in the background.
			s.download(*w)
			var buf bytes.Buffer
			if err := s.f.get(s.ctx, w.URL+".metadata", &buf, func() error { buf.Reset(); return nil }); err == nil {
				if w.MetadataSHA256 == "" || sha256Hex(buf.Bytes()) == w.MetadataSHA256 {
					return parseCoreMetadata(buf.Bytes())
				}
			}
		}
		p, err := s.download(*w).wait(s.ctx)
		if err != nil {
			return nil, err
		}
		md, err := wheelMetadata(p)
		if err != nil {
			return nil, fmt.Errorf("pyinstall: %s: %w", w.Filename, err)
		}
		return md, nil
	}
	if rel.sdist == nil {
		return nil, fmt.Errorf("pyinstall: %s %s has no usable file", rel.name, rel.version)
	}
	// Have the build server start while the sdist downloads.
	s.goBackground(func() { _, _ = s.buildServer(s.interp.Path) })
	md, err := s.sourceMeta(rel)
	if err != nil {
		return nil, err
	}
	// The build starts now, in the background: it will most likely be
	// installed.
	s.wheel(rel)
	return md, nil
}

// source returns the build-cache key of a release's source (an sdist's
// SHA-256, or its git tree's key) and its path, downloading the sdist.
func (s *session) source(rel *release) (key, path string, isDir bool, err error) {
	if rel.tree != nil {
		return rel.tree.key, rel.tree.dir, true, nil
	}
	sp, err := s.download(*rel.sdist).wait(s.ctx)
	if err != nil {
		return "", "", false, err
	}
	return filepath.Base(sp), sp, false, nil
}

// sourceMeta learns a source's core metadata the cheapest way there is: the
// wheel already built from it (for this interpreter), PEP 643 static
// PKG-INFO, the metadata hook's answer kept from an earlier install, or the
// PEP 517 prepare_metadata_for_build_wheel hook in the build's isolated
// environment; only a backend without that hook gets a whole build now.
func (s *session) sourceMeta(rel *release) (*coreMetadata, error) {
	key, path, isDir, err := s.source(rel)
	if err != nil {
		return nil, err
	}
	if _, p, ok := s.in.cache.Built(s.tags, key); ok {
		if md, err := wheelMetadata(p); err == nil {
			return md, nil
		}
	}
	if !isDir {
		if md, err := sdistMetadata(path, rel.sdist.Filename); err == nil && md.staticDeps() {
			return md, nil
		}
	}
	if data, ok := s.in.cache.hookMetadata(s.tags, key); ok {
		if md, err := parseCoreMetadata(data); err == nil {
			s.mu.Lock()
			s.hookMeta[key] = md
			s.mu.Unlock()
			return md, nil
		}
		s.in.cache.removeHookMetadata(s.tags, key)
	}
	// One process asks the hook and then goes on to build the wheel
	// (the build the install will most likely need), so the build
	// overlaps the rest of the resolution; it holds a build slot until it
	// exits.
	select {
	case s.buildSem <- struct{}{}:
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
	ps, err := s.prepared(rel, key, path, isDir)
	if err != nil {
		<-s.buildSem
		return nil, err
	}
	t := time.Now()
	run, err := s.submitBuild(ps)
	if err != nil {
		<-s.buildSem
		return nil, err
	}
	s.mu.Lock()
	s.runs[key] = run
	s.runStart[key] = t
	s.mu.Unlock()
	s.goBackground(func() {
		<-run.done
		<-s.buildSem
	})
	select {
	case <-run.metaDone:
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
	if run.metaErr != nil {
		return nil, run.metaErr
	}
	r := run.meta
	if r.wheel != "" {
		// The backend has no metadata hook: the wheel was built.
		w, err := s.storeBuilt(rel, key, r.wheel, nil, t)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.builtNow[key] = w
		s.mu.Unlock()
		return wheelMetadata(w.path)
	}
	data, err := os.ReadFile(filepath.Join(r.metadataDir, "METADATA"))
	if err != nil {
		return nil, fmt.Errorf("pyinstall: %s %s: metadata hook: %w", rel.name, rel.version, err)
	}
	md, err := parseCoreMetadata(data)
	if err != nil {
		return nil, &BuildError{Package: rel.name, Version: rel.version, Source: ps.source, Step: "prepare_metadata_for_build_wheel", Err: err, StderrTail: tail(data, 10)}
	}
	s.mu.Lock()
	s.hooks++
	s.hookMeta[key] = md
	s.mu.Unlock()
	if err := s.in.cache.setHookMetadata(s.tags, key, data); err != nil {
		s.in.log.Warn("pyinstall: cannot cache prepared metadata", "package", rel.name, "err", err)
	}
	s.in.emit(Event{Package: rel.name, Version: md.Version, Stage: StageMetadata, Detail: "prepare_metadata_for_build_wheel", Elapsed: time.Since(t)})
	return md, nil
}

// buildServer returns the session's build server for an interpreter,
// starting it the first time.
func (s *session) buildServer(python string) (*buildServer, error) {
	f := start(s, s.servers, python, func() (*buildServer, error) {
		s.in.log.Debug("pyinstall: starting build server")
		srv, err := s.in.startBuildServer(s.ctx, python)
		if err != nil {
			return nil, err
		}
		s.goBackground(srv.serve)
		return srv, nil
	})
	return f.wait(s.ctx)
}

// submitBuild has the build server of ps's build environment prepare its
// metadata and build its wheel. The run it returns follows the source to a
// second environment and server when the backend's
// get_requires_for_build_wheel asks for requirements the first lacks.
func (s *session) submitBuild(ps *preparedSource) (*hookRun, error) {
	python, _ := ps.env()
	srv, err := s.buildServer(python)
	if err != nil {
		return nil, err
	}
	run, err := srv.submit(ps)
	if err != nil {
		return nil, err
	}
	follow := &hookRun{metaDone: make(chan struct{}), done: make(chan struct{})}
	s.goBackground(func() { s.followBuild(ps, python, run, follow) })
	return follow, nil
}

// followBuild forwards run's results to follow, submitting ps again (to the
// server of its extended environment) as long as its backend asks for
// dynamic build requirements (addBuildRequires allows that once).
func (s *session) followBuild(ps *preparedSource, python string, run, follow *hookRun) {
	fail := func(err error) {
		follow.metaErr, follow.err = err, err
		close(follow.metaDone)
		close(follow.done)
	}
	for {
		<-run.metaDone
		var dyn *dynamicRequiresError
		if !errors.As(run.metaErr, &dyn) {
			break
		}
		<-run.done
		if err := s.in.addBuildRequires(s.ctx, ps, python, dyn.asked); err != nil {
			fail(err)
			return
		}
		python, _ = ps.env()
		srv, err := s.buildServer(python)
		if err == nil {
			run, err = srv.submit(ps)
		}
		if err != nil {
			fail(err)
			return
		}
	}
	follow.meta, follow.metaErr = run.meta, run.metaErr
	close(follow.metaDone)
	<-run.done
	follow.wheel, follow.err = run.wheel, run.err
	close(follow.done)
}

// prepared unpacks (once per session) a source for its hooks and build.
func (s *session) prepared(rel *release, key, path string, isDir bool) (*preparedSource, error) {
	f := start(s, s.sources, key, func() (*preparedSource, error) {
		p, err := s.in.prepareSource(s.ctx, path, rel.name, rel.version, isDir, s.buildEnv)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.tmpDirs = append(s.tmpDirs, p.work)
		s.mu.Unlock()
		return p, nil
	})
	return f.wait(s.ctx)
}

// storeBuilt checks a freshly built wheel against the release and the
// metadata the resolver used (hook, when not nil), and puts it in the
// cache under the source's key for this interpreter.
func (s *session) storeBuilt(rel *release, key, wheel string, hook *coreMetadata, t time.Time) (wheelResult, error) {
	wmd, err := wheelMetadata(wheel)
	if err != nil {
		return wheelResult{}, fmt.Errorf("pyinstall: %s %s: built %s: %w", rel.name, rel.version, filepath.Base(wheel), err)
	}
	if NormalizeName(wmd.Name) != rel.name {
		return wheelResult{}, &MetadataMismatchError{Package: rel.name, Version: rel.version, Field: "Name", Hook: rel.name, Wheel: wmd.Name, Other: "the built wheel " + filepath.Base(wheel)}
	}
	if rel.version != "" && wmd.Version != rel.version {
		return wheelResult{}, &MetadataMismatchError{Package: rel.name, Version: rel.version, Field: "Version", Hook: rel.version, Wheel: wmd.Version, Other: "the built wheel " + filepath.Base(wheel)}
	}
	if hook != nil {
		if err := checkSameMetadata(rel.name, rel.version, hook, wmd); err != nil {
			s.in.cache.removeHookMetadata(s.tags, key)
			return wheelResult{}, err
		}
	}
	p, sum, err := s.in.cache.PutFile(wheel)
	if err != nil {
		return wheelResult{}, fmt.Errorf("pyinstall: cache built wheel: %w", err)
	}
	fn := filepath.Base(wheel)
	if err := s.in.cache.SetBuilt(s.tags, key, fn, sum); err != nil {
		return wheelResult{}, fmt.Errorf("pyinstall: record built wheel: %w", err)
	}
	s.mu.Lock()
	s.built++
	s.mu.Unlock()
	s.in.emit(Event{Package: rel.name, Version: wmd.Version, Stage: StageBuilt, Detail: fn, Elapsed: time.Since(t)})
	return wheelResult{path: p, filename: fn}, nil
}

// gitProject is the single release a git requirement offers: its commit
// (a branch or tag resolved once per install), checked out in the cache,
// with metadata from its backend.
func (s *session) gitProject(name string, ref vcsRef) (*projectInfo, error) {
	cf := start(s, s.commits, ref.repo+"@"+ref.rev, func() (string, error) { return s.in.resolveRev(s.ctx, ref) })
	commit, err := cf.wait(s.ctx)
	if err != nil {
		return nil, fmt.Errorf("pyinstall: %s: %w", name, err)
	}
	t0 := time.Now()
	tree, cloned, err := s.in.checkout(s.ctx, ref, commit)
	if err != nil {
		return nil, fmt.Errorf("pyinstall: %s: %w", name, err)
	}
	if cloned {
		s.mu.Lock()
		s.cloned++
		s.mu.Unlock()
		s.in.emit(Event{Package: name, Stage: StageCloned, Detail: ref.repo + "@" + tree.commit, Elapsed: time.Since(t0)})
	}
	rel := &release{name: name, tree: tree}
	md, err := s.sourceMeta(rel)
	if err != nil {
		return nil, err
	}
	if NormalizeName(md.Name) != name {
		return nil, fmt.Errorf("pyinstall: %s at %s is the project %q, not %s", ref.repo, tree.commit, md.Name, name)
	}
	rel.version = md.Version
	mf := &future[*coreMetadata]{done: make(chan struct{}), v: md}
	close(mf.done)
	s.mu.Lock()
	if _, ok := s.metas[name+"=="+md.Version]; !ok {
		s.metas[name+"=="+md.Version] = mf
	}
	s.mu.Unlock()
	s.wheel(rel)
	return &projectInfo{
		releases: map[string]*release{md.Version: rel},
		yanked:   map[string]*release{},
		versions: []resolve.Version{{VersionKey: resolve.VersionKey{PackageKey: resolve.PackageKey{System: resolve.PyPI, Name: name}, VersionType: resolve.Concrete, Version: md.Version}}},
	}, nil
}

// download fetches a file into the cache (once per session).
func (s *session) download(l link) *future[string] {
	return start(s, s.downloads, l.URL, func() (string, error) {
		if set := s.hashes[l.Project]; len(set) > 0 && l.SHA256 != "" && !set[l.SHA256] {
			// The index's hash already says this file is not one
			// the requirements allow (--hash): no download needed
			// to refuse it.
			return "", fmt.Errorf("pyinstall: %w", &HashMismatchError{What: l.Filename + " (--hash)", Want: strings.Join(keys(set), " or "), Got: l.SHA256})
		}
		if l.SHA256 != "" {
			if p, ok := s.in.cache.Blob(l.SHA256); ok {
				s.mu.Lock()
				s.hits[l.URL] = true
				s.mu.Unlock()
				return p, nil
			}
		}
		select {
		case s.dlSem <- struct{}{}:
		case <-s.ctx.Done():
			return "", s.ctx.Err()
		}
		defer func() { <-s.dlSem }()
		t := time.Now()
		w, err := s.in.cache.Writer()
		if err != nil {
			return "", err
		}
		if err := s.f.get(s.ctx, l.URL, w, w.Reset); err != nil {
			w.Abort()
			return "", fmt.Errorf("pyinstall: download %s: %w", l.Filename, err)
		}
		p, sum, err := w.Commit(l.SHA256, "download "+l.URL)
		if err != nil {
			return "", fmt.Errorf("pyinstall: %w", err)
		}
		if set := s.hashes[l.Project]; len(set) > 0 && !set[sum] {
			return "", fmt.Errorf("pyinstall: %w", &HashMismatchError{What: l.Filename + " (--hash)", Want: strings.Join(keys(set), " or "), Got: sum})
		}
		s.mu.Lock()
		if strings.Contains(l.URL, "://") {
			s.downloaded++
		}
		s.mu.Unlock()
		s.in.emit(Event{Package: l.Project, Version: l.Version, Stage: StageDownloaded, Detail: l.Filename, Elapsed: time.Since(t)})
		return p, nil
	})
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// wheel gets the release's wheel into the cache: downloaded, or built from
// its sdist (once per session; a build done by any process before is
// reused).
func (s *session) wheel(rel *release) *future[wheelResult] {
	return start(s, s.wheels, rel.name+"=="+rel.version, func() (wheelResult, error) {
		if w := rel.wheel; w != nil {
			p, err := s.download(*w).wait(s.ctx)
			if err != nil {
				return wheelResult{}, err
			}
			s.mu.Lock()
			cached := s.hits[w.URL]
			s.mu.Unlock()
			if cached {
				s.mu.Lock()
				s.cacheHits++
				s.mu.Unlock()
				s.in.emit(Event{Package: rel.name, Version: rel.version, Stage: StageCached, Detail: w.Filename})
			}
			return wheelResult{path: p, filename: w.Filename}, nil
		}
		if rel.sdist == nil && rel.tree == nil {
			return wheelResult{}, fmt.Errorf("pyinstall: %s %s has no usable file", rel.name, rel.version)
		}
		key, path, isDir, err := s.source(rel)
		if err != nil {
			return wheelResult{}, err
		}
		s.mu.Lock()
		w, builtNow := s.builtNow[key]
		s.mu.Unlock()
		if builtNow {
			return w, nil // built for its metadata, this session
		}
		if fn, p, ok := s.in.cache.Built(s.tags, key); ok {
			s.mu.Lock()
			s.cacheHits++
			s.mu.Unlock()
			s.in.emit(Event{Package: rel.name, Version: rel.version, Stage: StageCached, Detail: fn})
			return wheelResult{path: p, filename: fn}, nil
		}
		s.mu.Lock()
		hook := s.hookMeta[key]
		run, t := s.runs[key], s.runStart[key]
		s.mu.Unlock()
		var wheel string
		if run != nil {
			// The metadata hook's process is building it.
			select {
			case <-run.done:
			case <-s.ctx.Done():
				return wheelResult{}, s.ctx.Err()
			}
			if run.err != nil {
				return wheelResult{}, run.err
			}
			wheel = run.wheel
		} else {
			select {
			case s.buildSem <- struct{}{}:
			case <-s.ctx.Done():
				return wheelResult{}, s.ctx.Err()
			}
			defer func() { <-s.buildSem }()
			t = time.Now()
			ps, err := s.prepared(rel, key, path, isDir)
			if err != nil {
				return wheelResult{}, err
			}
			r, err := s.in.runHook(s.ctx, ps, "wheel")
			if err != nil {
				return wheelResult{}, err
			}
			wheel = r.wheel
		}
		ps, err := s.prepared(rel, key, path, isDir)
		if err != nil {
			return wheelResult{}, err
		}
		w, err = s.storeBuilt(rel, key, wheel, hook, t)
		// The unpacked source is needed no more.
		_ = os.RemoveAll(ps.work)
		return w, err
	})
}

// sameVersion compares two PEP 440 versions (so "1.0" and "1.0.0" agree).
func sameVersion(a, b string) bool {
	va, err1 := semver.PyPI.Parse(a)
	vb, err2 := semver.PyPI.Parse(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	return va.Compare(vb) == 0
}
