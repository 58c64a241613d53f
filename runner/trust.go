package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// This file holds the runner's distrust of its own state directory and
// of specs: what root does on their word (chown, run as a UID) must stay
// inside what the operator configured.

// subIDFiles are the subordinate ID files checked against the UID range.
var subIDFiles = []string{"/etc/subuid", "/etc/subgid"}

// subIDOverlaps lists, one sentence each, the ranges of a subordinate-ID
// file (name:first:count per line) that overlap [min, max]: an app would
// share its UID with a user namespace of another user. A missing file
// has none.
func subIDOverlaps(path string, min, max int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, ":")
		if len(parts) != 3 {
			continue
		}
		first, err1 := strconv.Atoi(parts[1])
		count, err2 := strconv.Atoi(parts[2])
		if err1 != nil || err2 != nil || count <= 0 {
			continue
		}
		last := first + count - 1
		if first <= max && last >= min {
			out = append(out, fmt.Sprintf("%s line %d gives %s IDs %d-%d, which overlap the apps' UID range %d-%d: set Config.UIDMin/UIDMax apart", path, n, parts[0], first, last, min, max))
		}
	}
	return out
}

// checkStateDir refuses a state directory others could write: everything
// in it (the UID table, the sandbox root, sockets) is trusted by root.
func checkStateDir(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Lstat(d)
		if err != nil {
			return fmt.Errorf("runner: state directory %s: %w", dir, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok && d == dir && int(st.Uid) != os.Geteuid() {
			return fmt.Errorf("runner: state directory %s is owned by UID %d, not by the runner (UID %d)", dir, st.Uid, os.Geteuid())
		}
		// A sticky directory (/tmp) above it is fine: others cannot
		// rename what the runner owns there.
		if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 && fi.Mode()&os.ModeSymlink == 0 {
			return fmt.Errorf("runner: state directory %s: %s is writable by group or others (mode %v): anyone could replace the runner's state", dir, d, fi.Mode().Perm())
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}

// checkSpec checks what in a spec depends on the runner's configuration:
// the data directory must lie beneath the data root.
//
// An egress spec is refused where egress cannot be given (it would be a
// silent widening to the host's network or a silent narrowing to none),
// and so is one whose allowed destinations do not resolve.
func (r *Runner) checkSpec(s *Spec) error {
	if s.DataDir != "" {
		if _, err := r.dataRel(s.DataDir); err != nil {
			return &SpecError{App: s.Name, Err: err}
		}
	}
	if s.Network.egress() && r.iso.Network {
		if !r.iso.Egress {
			return &SpecError{App: s.Name, Err: fmt.Errorf("network.policy %q is unavailable on this runner: %s", s.Network.Policy, r.egressWhy())}
		}
		if _, err := resolveDestinations(context.Background(), s.Network.Allow); err != nil {
			return &SpecError{App: s.Name, Err: err}
		}
	}
	return nil
}

// egressWhy says why egress is unavailable.
func (r *Runner) egressWhy() string {
	for _, m := range r.iso.Missing {
		if strings.HasPrefix(m, "egress:") {
			return m
		}
	}
	return "egress is off"
}

// dataRel returns the path of data directory d relative to the data
// root, refusing one outside it or the root itself.
func (r *Runner) dataRel(d string) (string, error) {
	root := r.cfg.DataRoot
	rel, err := filepath.Rel(root, filepath.Clean(d))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("data_dir %s is outside the data root %s (Config.DataRoot): refused", d, root)
	}
	return rel, nil
}

// ErrDataDirRefused is wrapped by errors about a data directory the
// runner will not hand to an app.
var ErrDataDirRefused = errors.New("runner: data directory refused")

// prepareDataDir creates the app's data directory beneath the data root
// without following any symlink, and gives it to uid. Every directory
// between the root and it must be a real directory owned by the runner (so
// no app can swap one for a link); the data directory itself must not be
// a link and must not belong to another app's UID.
func (r *Runner) prepareDataDir(d string, uid, gid int, chown bool) error {
	rel, err := r.dataRel(d)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDataDirRefused, err)
	}
	parts := strings.Split(rel, string(filepath.Separator))
	cur := r.cfg.DataRoot
	for k, p := range parts {
		cur = filepath.Join(cur, p)
		last := k == len(parts)-1
		fi, err := os.Lstat(cur)
		if errors.Is(err, os.ErrNotExist) {
			mode := os.FileMode(0o711)
			if last {
				mode = 0o750
			}
			if err := os.Mkdir(cur, mode); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("create data directory %s: %w", cur, err)
			}
			if fi, err = os.Lstat(cur); err != nil {
				return fmt.Errorf("create data directory %s: %w", cur, err)
			}
		} else if err != nil {
			return fmt.Errorf("data directory %s: %w", cur, err)
		}
		if fi.Mode()&os.ModeSymlink != 0 || !fi.IsDir() {
			return fmt.Errorf("%w: %s is not a directory (a symlink or file is never followed)", ErrDataDirRefused, cur)
		}
		st := fi.Sys().(*syscall.Stat_t)
		owner := int(st.Uid)
		switch {
		case !last && owner != os.Geteuid():
			return fmt.Errorf("%w: %s, above the data directory %s, is owned by UID %d, not by the runner", ErrDataDirRefused, cur, d, owner)
		case !last && fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0:
			return fmt.Errorf("%w: %s, above the data directory %s, is writable by group or others (mode %v)", ErrDataDirRefused, cur, d, fi.Mode().Perm())
		case last && chown && owner != uid && owner != os.Geteuid() && owner >= r.cfg.UIDMin && owner <= r.cfg.UIDMax:
			return fmt.Errorf("%w: %s belongs to UID %d, another app's", ErrDataDirRefused, cur, owner)
		}
	}
	if chown {
		if err := os.Lchown(cur, uid, gid); err != nil {
			return fmt.Errorf("chown data directory %s: %w", cur, err)
		}
	}
	return nil
}
