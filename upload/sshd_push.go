package upload

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/paaskit/paaskit/upload/extract"
	"github.com/paaskit/paaskit/upload/pyinstall"
)

// ErrTooLarge is wrapped when a push or archive is over its size limit.
var ErrTooLarge = errors.New("over the size limit")

// ErrSymlinkRepo is wrapped when an app's repository path is a symbolic
// link: the server never follows one there.
var ErrSymlinkRepo = errors.New("repository path is a symbolic link")

type vcs int

const (
	vcsGit vcs = iota
	vcsHg
)

// lockApp takes app's push lock in arrival order, telling the client if
// it has to wait. It returns false if the client went away meanwhile.
func (sess *session) lockApp(ctx context.Context, app string) (*fifoLock, bool) {
	l := sess.srv.appLock(app)
	err := l.lock(ctx, func(ahead int) {
		sess.say("waiting: %d push(es) of %s ahead of this one", ahead, app)
	})
	return l, err == nil
}

// subEnv is the environment of git and hg: no user configuration, no
// hooks from the server's home, no locale surprises.
func (s *Server) subEnv(extra ...string) []string {
	return append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + s.cfg.RepoDir,
		"LC_ALL=C",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0",
		"HGRCPATH=",
		"HGPLAIN=1",
	}, extra...)
}

// ErrNoRepo is wrapped when a fetch names an app that has no repository.
var ErrNoRepo = errors.New("no repository yet (push to create it)")

// repoPath returns app's repository, creating it (bare, no templates) if
// missing and create is set. A symbolic link there, or anything that is
// not a directory, is refused.
func (s *Server) repoPath(ctx context.Context, app string, kind vcs, create bool) (string, error) {
	name := app + ".git"
	if kind == vcsHg {
		name = app + ".hg"
	}
	p := filepath.Join(s.cfg.RepoDir, name)
	fi, err := os.Lstat(p)
	switch {
	case err == nil && fi.Mode()&os.ModeSymlink != 0:
		return "", fmt.Errorf("%s: %w; refusing it", name, ErrSymlinkRepo)
	case err == nil && !fi.IsDir():
		return "", fmt.Errorf("%s is not a directory; refusing it", name)
	case err == nil:
		return p, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("repository %s: %w", name, err)
	case !create:
		return "", fmt.Errorf("%s: %w", app, ErrNoRepo)
	}
	// Made under a temporary name and renamed, so a half-made
	// repository is never served.
	tmp, err := os.MkdirTemp(s.cfg.RepoDir, "."+name+".new-")
	if err != nil {
		return "", fmt.Errorf("create repository %s: %w", name, err)
	}
	defer os.RemoveAll(tmp)
	var cmd *exec.Cmd
	if kind == vcsGit {
		// HEAD names the deploy branch, so a clone checks it out.
		head := s.cfg.Branch
		if head == "" {
			head = "main"
		}
		cmd = exec.CommandContext(ctx, s.git, "init", "--quiet", "--bare", "--template=", "--initial-branch="+head, tmp)
	} else {
		cmd = exec.CommandContext(ctx, s.hg, "init", tmp)
	}
	cmd.Env = s.subEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("create repository %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", fmt.Errorf("create repository %s: %w", name, err)
	}
	return p, nil
}

// limitedCopy copies from the client into a VCS server's stdin, closing it
// at EOF, or as soon as more than limit bytes came (then over is set): the
// server sees a truncated stream, aborts its transaction, and nothing is
// stored.
type limitedCopy struct {
	mu   sync.Mutex
	over bool
}

func (lc *limitedCopy) run(dst io.WriteCloser, src io.Reader, limit int64) {
	n, _ := io.Copy(dst, io.LimitReader(src, limit+1))
	if n > limit {
		lc.mu.Lock()
		lc.over = true
		lc.mu.Unlock()
	}
	dst.Close()
}

func (lc *limitedCopy) exceeded() bool {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.over
}

// serveVCS runs a VCS's server side (git receive-pack, git upload-pack,
// hg serve --stdio) on the session's streams, with its input bounded by
// MaxPushSize.
func (sess *session) serveVCS(ctx context.Context, log *slog.Logger, cmd *exec.Cmd) (code int, tooLarge bool) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		sess.say("failed: %v", err)
		return 1, false
	}
	cmd.Stdout = sess.ch
	cmd.Stderr = sess.ch.Stderr()
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		sess.say("failed to start %s: %v", filepath.Base(cmd.Path), err)
		return 1, false
	}
	var lc limitedCopy
	go lc.run(stdin, sess.ch, sess.srv.cfg.MaxPushSize)
	err = cmd.Wait()
	if err != nil {
		log.Info("upload: vcs server failed", "argv", cmd.Args, "err", err)
	}
	// If the copy cut the stream it has set over before closing stdin,
	// which is what ended the server.
	return exitCode(err), lc.exceeded()
}

func (sess *session) git(ctx context.Context, log *slog.Logger, id Identity, c *command) int {
	s := sess.srv
	// A push holds the app's lock from before its refs are read until
	// its image is live; a fetch needs none (git's refs are atomic).
	if c.kind == cmdGitReceive {
		l, ok := sess.lockApp(ctx, c.app)
		if !ok {
			return 1
		}
		defer l.unlock()
	}
	repo, err := s.repoPath(ctx, c.app, vcsGit, c.kind == cmdGitReceive)
	if err != nil {
		sess.say("refused: %v", err)
		log.Warn("upload: repository", "err", err)
		return 1
	}
	sess.mu.Lock()
	proto := sess.gitProto
	sess.mu.Unlock()
	env := s.subEnv()
	if proto != "" {
		env = append(env, "GIT_PROTOCOL="+proto)
	}
	if c.kind == cmdGitUpload {
		cmd := exec.CommandContext(ctx, s.git, "upload-pack", "--strict", repo)
		cmd.Env = env
		code, _ := sess.serveVCS(ctx, log, cmd)
		return code
	}
	before, err := s.gitHeads(ctx, repo)
	if err != nil {
		sess.say("failed: %v", err)
		return 1
	}
	// receive.maxInputSize makes git itself refuse an oversized pack
	// before any ref moves; the copy's own bound is a backstop.
	cmd := exec.CommandContext(ctx, s.git, "-c", "receive.maxInputSize="+strconv.FormatInt(s.cfg.MaxPushSize, 10),
		"-c", "receive.fsckObjects=true", "receive-pack", repo)
	cmd.Env = env
	code, tooLarge := sess.serveVCS(ctx, log, cmd)
	after, herr := s.gitHeads(context.WithoutCancel(ctx), repo)
	if tooLarge || code != 0 {
		if tooLarge {
			sess.say("refused: the push is %v of %d bytes; nothing was stored", ErrTooLarge, s.cfg.MaxPushSize)
		}
		if code == 0 {
			code = 1
		}
		return code
	}
	if herr != nil {
		sess.say("failed: %v", herr)
		return 1
	}
	ref := s.deployRef(before, after, vcsGit)
	if ref == "" {
		if !mapsEqual(before, after) {
			sess.say("pushed; only %s deploys, so nothing was built", s.branchDesc(vcsGit))
		}
		return 0
	}
	rev := after[ref]
	archive := exec.CommandContext(ctx, s.git, "archive", "--format=tar", rev)
	archive.Dir = repo
	archive.Env = s.subEnv("GIT_DIR=" + repo)
	return sess.deployFrom(ctx, log, id, c.app, rev, archive)
}

func (sess *session) hgServe(ctx context.Context, log *slog.Logger, id Identity, c *command) int {
	s := sess.srv
	if s.hg == "" {
		sess.say("refused: hg is not installed on this server")
		return 1
	}
	l, ok := sess.lockApp(ctx, c.app)
	if !ok {
		return 1
	}
	defer l.unlock()
	// hg serve is both push and pull: the repository is made on first
	// use either way (an empty one serves an empty pull).
	repo, err := s.repoPath(ctx, c.app, vcsHg, true)
	if err != nil {
		sess.say("refused: %v", err)
		log.Warn("upload: repository", "err", err)
		return 1
	}
	before, err := s.hgHeads(ctx, repo)
	if err != nil {
		sess.say("failed: %v", err)
		return 1
	}
	cmd := exec.CommandContext(ctx, s.hg, "-R", repo, "serve", "--stdio")
	cmd.Env = s.subEnv()
	code, tooLarge := sess.serveVCS(ctx, log, cmd)
	after, herr := s.hgHeads(context.WithoutCancel(ctx), repo)
	if tooLarge {
		sess.say("refused: the push is %v of %d bytes; nothing was stored", ErrTooLarge, s.cfg.MaxPushSize)
		return 1
	}
	if code != 0 {
		return code
	}
	if herr != nil {
		sess.say("failed: %v", herr)
		return 1
	}
	ref := s.deployRef(before, after, vcsHg)
	if ref == "" {
		// hg serve also serves pulls: only a push that moved the branch
		// deploys.
		return 0
	}
	rev := after[ref]
	archive := exec.CommandContext(ctx, s.hg, "-R", repo, "archive", "--config", "ui.archivemeta=false", "-r", rev, "-t", "tar", "-p", ".", "-")
	archive.Env = s.subEnv()
	return sess.deployFrom(ctx, log, id, c.app, rev, archive)
}

// gitHeads maps refs/heads/* to their commits.
func (s *Server) gitHeads(ctx context.Context, repo string) (map[string]string, error) {
	cmd := exec.CommandContext(ctx, s.git, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/")
	cmd.Env = s.subEnv("GIT_DIR=" + repo)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git for-each-ref in %s: %w", filepath.Base(repo), err)
	}
	heads := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if sha, ref, ok := strings.Cut(sc.Text(), " "); ok {
			heads[ref] = sha
		}
	}
	return heads, nil
}

// hgHeads maps the deploy branch to its newest head.
func (s *Server) hgHeads(ctx context.Context, repo string) (map[string]string, error) {
	branch := s.cfg.Branch
	if branch == "" {
		branch = "default"
	}
	// A pattern, so a branch that does not exist yet is not an error (a
	// literal name would be). Branch names are checked by NewServer.
	cmd := exec.CommandContext(ctx, s.hg, "-R", repo, "log", "-r", "max(head() and branch('re:^"+regexp.QuoteMeta(branch)+"$'))", "-T", "{node}")
	cmd.Env = s.subEnv()
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("hg log in %s: %w", filepath.Base(repo), err)
	}
	heads := map[string]string{}
	if n := strings.TrimSpace(string(out)); n != "" {
		heads[branch] = n
	}
	return heads, nil
}

// deployRef is the branch whose head the push moved and that deploys, or
// "".
func (s *Server) deployRef(before, after map[string]string, kind vcs) string {
	var candidates []string
	switch {
	case kind == vcsHg && s.cfg.Branch == "":
		candidates = []string{"default"}
	case kind == vcsHg:
		candidates = []string{s.cfg.Branch}
	case s.cfg.Branch != "":
		candidates = []string{"refs/heads/" + s.cfg.Branch}
	default:
		candidates = []string{"refs/heads/main", "refs/heads/master"}
	}
	for _, ref := range candidates {
		if rev, ok := after[ref]; ok && rev != before[ref] {
			return ref
		}
	}
	return ""
}

func (s *Server) branchDesc(kind vcs) string {
	if s.cfg.Branch != "" {
		return "branch " + s.cfg.Branch
	}
	if kind == vcsHg {
		return "branch default"
	}
	return "branch main (or master)"
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// deployFrom builds the tar archive that archive writes to its stdout (a
// checkout of the pushed revision) and activates it.
func (sess *session) deployFrom(ctx context.Context, log *slog.Logger, id Identity, app, rev string, archive *exec.Cmd) int {
	out, err := archive.StdoutPipe()
	if err != nil {
		sess.say("failed: %v", err)
		return 1
	}
	var stderr bytes.Buffer
	archive.Stderr = &stderr
	short := rev
	if len(short) > 12 {
		short = short[:12]
	}
	sess.say("-----> checking out %s", short)
	if err := archive.Start(); err != nil {
		sess.say("failed: check out %s: %v", short, err)
		return 1
	}
	code, buildErr := sess.build(ctx, log, id, app, rev, out, extract.FormatTar)
	// A failed build may leave the archiver blocked on a full pipe.
	_, _ = io.Copy(io.Discard, out)
	if err := archive.Wait(); err != nil && buildErr == nil && code == 0 {
		// Only possible if the build did not need the whole stream.
		log.Warn("upload: archive", "rev", rev, "err", err, "stderr", stderr.String())
	}
	return code
}

func (sess *session) deployArchive(ctx context.Context, log *slog.Logger, id Identity, c *command) int {
	s := sess.srv
	l, ok := sess.lockApp(ctx, c.app)
	if !ok {
		return 1
	}
	defer l.unlock()
	in := &capReader{r: sess.ch, left: s.cfg.MaxArchiveSize}
	code, err := sess.build(ctx, log, id, c.app, "archive", in, extract.FormatAuto)
	if errors.Is(err, ErrTooLarge) || in.over {
		sess.say("refused: the archive is %v of %d bytes; nothing changed", ErrTooLarge, s.cfg.MaxArchiveSize)
		return 1
	}
	return code
}

// capReader fails with ErrTooLarge after left bytes.
type capReader struct {
	r    io.Reader
	left int64
	over bool
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// One more byte decides between EOF at the limit and too much.
		var one [1]byte
		n, err := c.r.Read(one[:])
		if n > 0 {
			c.over = true
			return 0, ErrTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// progressLine formats an installer event for the client.
func progressLine(ev pyinstall.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "       %-10s %s", ev.Stage, ev.Package)
	if ev.Version != "" {
		b.WriteString(" " + ev.Version)
	}
	if ev.Elapsed > 0 {
		fmt.Fprintf(&b, " (%s)", ev.Elapsed.Round(time.Millisecond))
	}
	if ev.Err != nil {
		fmt.Fprintf(&b, ": %v", ev.Err)
	}
	return b.String()
}

// build builds bundle into an image, streaming the steps and the
// installer's progress to the client, then activates and records it. On
// any failure the live image stays as it was. The returned error is the
// build's own, for callers that tell a cause apart.
func (sess *session) build(ctx context.Context, log *slog.Logger, id Identity, app, rev string, bundle io.Reader, format extract.Format) (int, error) {
	s := sess.srv
	t0 := time.Now()
	var sayMu sync.Mutex
	say := func(format string, a ...any) {
		sayMu.Lock()
		defer sayMu.Unlock()
		sess.say(format, a...)
	}
	prev, hadPrev, err := s.releases.Live(app)
	if err != nil {
		say("failed: %v", err)
		return 1, err
	}
	keepMsg := "nothing was live before, nothing is now"
	if hadPrev {
		keepMsg = "the live image is still " + prev.Image.ID
	}
	s.releases.beginBuild()
	ended := false
	endBuild := func() {
		if !ended {
			ended = true
			s.releases.endBuild()
			s.releases.Prune()
		}
	}
	defer endBuild()
	builder, err := s.newBuilder(func(ev pyinstall.Event) { say("%s", progressLine(ev)) })
	if err != nil {
		say("failed: %v", err)
		return 1, err
	}
	say("-----> building %s (extract, install requirements, pack the image)", app)
	img, err := builder.Build(ctx, bundle, format)
	if err != nil {
		if ctx.Err() != nil {
			log.Info("upload: build cancelled (client gone)", "rev", rev, "err", err)
		} else {
			log.Info("upload: build failed", "rev", rev, "err", err)
		}
		if errors.Is(err, ErrTooLarge) {
			return 1, err
		}
		say("-----> build failed: %v\n       %s", err, keepMsg)
		return 1, err
	}
	say("-----> image %s (%d bytes) built in %s", img.ID, img.Size, time.Since(t0).Round(time.Millisecond))
	// Activation and its record run to the end even if the client goes
	// away now: a half-activated release would be worse than either.
	actx := context.WithoutCancel(ctx)
	switch {
	case hadPrev && prev.Image.ID == img.ID:
		// The same tree as the live image: nothing to activate.
		say("-----> the image is the live one; nothing to activate")
	case s.cfg.Activate != nil:
		say("-----> activating")
		if err := s.cfg.Activate(actx, app, img); err != nil {
			log.Warn("upload: activation failed", "image", img.ID, "err", err)
			say("-----> activation failed: %v\n       %s", err, keepMsg)
			return 1, err
		}
	}
	if err := s.releases.Record(app, Release{Image: *img, Revision: rev, User: id.User, Time: time.Now().UTC()}); err != nil {
		say("failed: %v", err)
		return 1, err
	}
	endBuild()
	log.Info("upload: deployed", "rev", rev, "image", img.ID, "elapsed", time.Since(t0).Round(time.Millisecond))
	say("-----> %s is live: %s (%s) in %s", app, img.ID, rev, time.Since(t0).Round(time.Millisecond))
	return 0, nil
}

func (sess *session) rollback(ctx context.Context, log *slog.Logger, id Identity, c *command) int {
	s := sess.srv
	l, ok := sess.lockApp(ctx, c.app)
	if !ok {
		return 1
	}
	defer l.unlock()
	target, err := s.releases.RollbackTarget(c.app, c.rollbackTo)
	if err != nil {
		sess.say("refused: %v", err)
		return 1
	}
	if _, err := os.Stat(target.Image.Path); err != nil {
		sess.say("failed: image %s: %v", target.Image.ID, err)
		return 1
	}
	actx := context.WithoutCancel(ctx)
	if s.cfg.Activate != nil {
		if err := s.cfg.Activate(actx, c.app, &target.Image); err != nil {
			sess.say("-----> activation failed: %v; the live image is unchanged", err)
			return 1
		}
	}
	if err := s.releases.SetLive(c.app, target.Image.ID); err != nil {
		sess.say("failed: %v", err)
		return 1
	}
	log.Info("upload: rolled back", "image", target.Image.ID, "by", id.User)
	sess.say("-----> %s rolled back: %s (%s) is live", c.app, target.Image.ID, target.Revision)
	return 0
}

func (sess *session) listReleases(c *command) int {
	rels, live, err := sess.srv.releases.List(c.app)
	if err != nil {
		sess.say("failed: %v", err)
		return 1
	}
	var b strings.Builder
	for _, r := range rels {
		mark := " "
		if r.Image.ID == live {
			mark = "*"
		}
		fmt.Fprintf(&b, "%s %s %s %s %s\n", mark, r.Image.ID, r.Time.Format(time.RFC3339), r.User, r.Revision)
	}
	_, _ = io.WriteString(sess.ch, b.String())
	return 0
}
