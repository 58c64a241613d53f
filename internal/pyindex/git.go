package pyindex

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// GitRepo is a bare git repository holding a generated project's source tree
// (what `git+file://…` and `name @ git+file://…` requirements point at).
type GitRepo struct {
	// Dir is the bare repository.
	Dir string
	// URL is its file:// URL, with host "localhost" (pip, through
	// packaging, refuses "name @ git+file:///…" with an empty host).
	URL string
	// Commits are the commits made so far, oldest first; the last is the
	// tip of branch "main".
	Commits []string
}

// NewGitRepo creates a bare repository at dir (which must not exist) with
// one commit on branch main holding d's source tree (the sdist's files
// without PKG-INFO, as a checkout has), tagged "v"+d.Version. It runs
// Debian's git (apt-get install git).
func NewGitRepo(ctx context.Context, dir string, d Dist) (*GitRepo, error) {
	if _, err := exec.LookPath("git"); err != nil {
		return nil, fmt.Errorf("pyindex: git is missing (apt-get install git): %w", err)
	}
	if err := runGit(ctx, "", "init", "--quiet", "--bare", "--initial-branch=main", dir); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	r := &GitRepo{Dir: abs, URL: "file://localhost" + abs}
	if _, err := r.Commit(ctx, d); err != nil {
		return nil, err
	}
	return r, nil
}

// Commit replaces the tree on main with d's source tree, commits it, tags it
// "v"+d.Version (moving the tag if it exists) and returns the commit.
func (r *GitRepo) Commit(ctx context.Context, d Dist) (string, error) {
	if !nameRe.MatchString(d.Name) || d.Version == "" {
		return "", fmt.Errorf("pyindex: invalid distribution %q %q", d.Name, d.Version)
	}
	work, err := os.MkdirTemp("", "pyindex-git-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	if len(r.Commits) > 0 {
		if err := runGit(ctx, "", "clone", "--quiet", r.Dir, work); err != nil {
			return "", err
		}
		if err := runGit(ctx, work, "rm", "--quiet", "-r", "."); err != nil {
			return "", err
		}
	} else if err := runGit(ctx, work, "init", "--quiet", "--initial-branch=main"); err != nil {
		return "", err
	}
	if err := writeTree(work, d); err != nil {
		return "", err
	}
	steps := [][]string{
		{"add", "-A"},
		{"-c", "user.name=pyindex", "-c", "user.email=pyindex@localhost", "commit", "--quiet", "-m", d.Name + " " + d.Version},
		{"tag", "-f", "v" + d.Version},
		{"push", "--quiet", "--force", "--tags", r.Dir, "main"},
	}
	for _, s := range steps {
		if err := runGit(ctx, work, s...); err != nil {
			return "", err
		}
	}
	out, err := exec.CommandContext(ctx, "git", "-C", work, "rev-parse", "HEAD").Output()
	if err != nil {
		return "", fmt.Errorf("pyindex: git rev-parse: %w", err)
	}
	c := strings.TrimSpace(string(out))
	r.Commits = append(r.Commits, c)
	return c, nil
}

func runGit(ctx context.Context, dir string, args ...string) error {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pyindex: git %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// WriteSourceTree writes d's source tree, as a checkout of its project has it
// (the sdist's files without PKG-INFO), into dir, for a requirement that
// names a local project directory.
func WriteSourceTree(dir string, d Dist) error {
	if !nameRe.MatchString(d.Name) || d.Version == "" {
		return fmt.Errorf("pyindex: invalid distribution %q %q", d.Name, d.Version)
	}
	return writeTree(dir, d)
}

func writeTree(dir string, d Dist) error {
	root, files := sourceTree(d)
	for _, f := range files {
		rel := strings.TrimPrefix(f.name, root+"/")
		if rel == "PKG-INFO" {
			continue
		}
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
