package pyinstall

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// vcsRef is a parsed VCS requirement URL, pip's form
// git+<scheme>://<repo>[@<rev>][#egg=<name>][&subdirectory=<dir>].
type vcsRef struct {
	repo   string // the URL git is given
	rev    string // branch, tag or commit; "" for the default branch
	egg    string
	subdir string
}

var (
	fullCommitRe = regexp.MustCompile(`^[0-9a-f]{40}$`)
	hexRevRe     = regexp.MustCompile(`^[0-9a-f]{7,40}$`)
)

// parseVCS parses a git+ URL. Other VCSs pip knows (hg, svn, bzr) are
// refused by name.
func parseVCS(raw string) (vcsRef, error) {
	var v vcsRef
	scheme, rest, ok := strings.Cut(raw, "+")
	if !ok || !vcsRe.MatchString(raw) {
		return v, fmt.Errorf("not a VCS URL: %q", raw)
	}
	if scheme != "git" {
		return v, fmt.Errorf("%s+ requirements are not supported (only git+): %q", scheme, raw)
	}
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		q, err := url.ParseQuery(rest[i+1:])
		if err != nil {
			return v, fmt.Errorf("bad fragment in %q: %w", raw, err)
		}
		v.egg, v.subdir = q.Get("egg"), q.Get("subdirectory")
		rest = rest[:i]
		if v.egg != "" && !extraRe.MatchString(v.egg) {
			return v, fmt.Errorf("bad #egg= name %q in %q", v.egg, raw)
		}
		if v.subdir != "" && (filepath.IsAbs(v.subdir) || strings.Contains("/"+filepath.ToSlash(v.subdir)+"/", "/../")) {
			return v, fmt.Errorf("subdirectory %q in %q leaves the repository", v.subdir, raw)
		}
	}
	u, err := url.Parse(rest)
	if err != nil {
		return v, fmt.Errorf("bad git URL %q: %w", raw, err)
	}
	switch u.Scheme {
	case "https", "http", "ssh", "git", "file":
	default:
		return v, fmt.Errorf("unsupported git URL scheme %q in %q", u.Scheme, raw)
	}
	if i := strings.LastIndexByte(u.Path, '@'); i >= 0 {
		v.rev = u.Path[i+1:]
		u.Path = u.Path[:i]
		u.RawPath = ""
		if v.rev == "" || strings.HasPrefix(v.rev, "-") || strings.ContainsAny(v.rev, " \t\\:~^?*[") {
			return v, fmt.Errorf("bad git revision %q in %q", v.rev, raw)
		}
	}
	if u.Path == "" || u.Path == "/" {
		return v, fmt.Errorf("git URL %q names no repository", raw)
	}
	v.repo = u.String()
	return v, nil
}

// GitError is a git requirement that could not be fetched: a repository
// that does not exist or cannot be reached, or a revision it does not have.
type GitError struct {
	// Repo is the repository URL, Rev the revision asked for.
	Repo, Rev string
	// Op is what failed ("ls-remote", "clone", "checkout").
	Op     string
	Err    error
	Output string
}

func (e *GitError) Error() string {
	rev := e.Rev
	if rev == "" {
		rev = "(default branch)"
	}
	return fmt.Sprintf("git %s of %s at %s: %v: %s", e.Op, e.Repo, rev, e.Err, e.Output)
}

func (e *GitError) Unwrap() error { return e.Err }

// ErrRevisionNotFound is wrapped by a *GitError for a branch, tag or commit
// the repository does not have (any more).
var ErrRevisionNotFound = errors.New("revision not found")

// gitTree is a git requirement checked out in the cache.
type gitTree struct {
	ref    vcsRef
	commit string
	dir    string // the project directory (subdirectory applied)
	key    string // build-cache key: SHA-256 of repo, commit and subdirectory
}

func (in *Installer) git(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, in.cfg.Git, args...)
	// No prompt for credentials (an install has no terminal), no user or
	// system configuration that could redirect URLs.
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/nonexistent", "LANG=C.UTF-8",
		"GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_ASKPASS=/bin/false", "SSH_ASKPASS=/bin/false"}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil && errors.Is(err, exec.ErrNotFound) {
		err = fmt.Errorf("%w (apt-get install git)", err)
	}
	return out.Bytes(), err
}

// resolveRev turns a branch or tag into a commit with one ls-remote. A
// commit id (or a prefix of one) is returned as it is, for checkout to
// verify.
func (in *Installer) resolveRev(ctx context.Context, ref vcsRef) (string, error) {
	out, err := in.git(ctx, "ls-remote", "--", ref.repo)
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", &GitError{Repo: ref.repo, Rev: ref.rev, Op: "ls-remote", Err: err, Output: tail(out, 5)}
	}
	refs := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		sha, name, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if ok {
			refs[name] = sha
		}
	}
	if ref.rev == "" {
		if c := refs["HEAD"]; c != "" {
			return c, nil
		}
		return "", &GitError{Repo: ref.repo, Op: "ls-remote", Err: ErrRevisionNotFound, Output: "the repository has no HEAD"}
	}
	for _, name := range []string{"refs/tags/" + ref.rev + "^{}", "refs/tags/" + ref.rev, "refs/heads/" + ref.rev, ref.rev} {
		if c := refs[name]; c != "" {
			return c, nil
		}
	}
	if hexRevRe.MatchString(ref.rev) {
		return ref.rev, nil
	}
	return "", &GitError{Repo: ref.repo, Rev: ref.rev, Op: "ls-remote", Err: ErrRevisionNotFound, Output: "no branch or tag of that name"}
}

// checkout returns the cached checkout of commit (cloning it the first
// time) and whether it cloned. Two processes cloning the same commit both
// clone into private directories and the first rename wins; the other's
// copy is removed.
func (in *Installer) checkout(ctx context.Context, ref vcsRef, commit string) (*gitTree, bool, error) {
	repoSum := sha256.Sum256([]byte(ref.repo))
	repoDir := filepath.Join(in.cache.Dir(), "vcs", hex.EncodeToString(repoSum[:12]))
	tree := func(c string) *gitTree {
		dir := filepath.Join(repoDir, c)
		ks := sha256.Sum256([]byte("git\x00" + ref.repo + "\x00" + c + "\x00" + ref.subdir))
		t := &gitTree{ref: ref, commit: c, dir: dir, key: hex.EncodeToString(ks[:])}
		if ref.subdir != "" {
			t.dir = filepath.Join(dir, filepath.FromSlash(ref.subdir))
		}
		return t
	}
	if fullCommitRe.MatchString(commit) {
		if _, err := os.Stat(filepath.Join(repoDir, commit, ".git")); err == nil {
			return tree(commit), false, nil
		}
	}
	tmp, err := in.cache.TempDir("git-")
	if err != nil {
		return nil, false, err
	}
	defer os.RemoveAll(tmp)
	work := filepath.Join(tmp, "checkout")
	if out, err := in.git(ctx, "clone", "--quiet", "--no-checkout", "--", ref.repo, work); err != nil {
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		return nil, false, &GitError{Repo: ref.repo, Rev: ref.rev, Op: "clone", Err: err, Output: tail(out, 5)}
	}
	out, err := in.git(ctx, "-C", work, "rev-parse", "--verify", "--quiet", commit+"^{commit}")
	if err != nil {
		return nil, false, &GitError{Repo: ref.repo, Rev: ref.rev, Op: "checkout", Err: ErrRevisionNotFound,
			Output: fmt.Sprintf("commit %s is not in the repository (gone, or never pushed)", commit)}
	}
	full := strings.TrimSpace(string(out))
	if out, err := in.git(ctx, "-C", work, "-c", "advice.detachedHead=false", "checkout", "--quiet", full); err != nil {
		return nil, false, &GitError{Repo: ref.repo, Rev: ref.rev, Op: "checkout", Err: err, Output: tail(out, 5)}
	}
	t := tree(full)
	if ref.subdir != "" {
		if fi, err := os.Stat(filepath.Join(work, filepath.FromSlash(ref.subdir))); err != nil || !fi.IsDir() {
			return nil, false, &GitError{Repo: ref.repo, Rev: ref.rev, Op: "checkout", Err: ErrRevisionNotFound, Output: "no subdirectory " + ref.subdir}
		}
	}
	if err := os.MkdirAll(repoDir, 0o755); err != nil {
		return nil, false, err
	}
	if err := os.Rename(work, filepath.Join(repoDir, full)); err != nil {
		if _, serr := os.Stat(filepath.Join(repoDir, full, ".git")); serr != nil {
			return nil, false, fmt.Errorf("pyinstall: cache git checkout: %w", err)
		}
		// Another installer put the same commit there first.
	}
	return t, true, nil
}
