package runner

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// CommandOptions adjust a one-off command (Runner.CommandWith). The zero
// value gives the command what the app's instances get.
type CommandOptions struct {
	// Dir is the working directory inside the sandbox (absolute); ""
	// means the spec's WorkDir (/app by default).
	Dir string
	// Env entries ("KEY=value") are added to the app's environment,
	// replacing a variable of the same name; the runner's own PAASKIT_*
	// variables cannot be set.
	Env []string
	// Mounts are host directories that appear in the command's sandbox,
	// as the operator's program chooses them (never name a directory an
	// app controls: the runner mounts it as root).
	Mounts []Mount
	// Network, when not nil, replaces the spec's network policy for this
	// command, validated and resolved as a spec's is.
	Network *Network
	// NoDataDir leaves the app's data directory out of the sandbox (no
	// /data): for commands that must write nowhere that outlives them
	// but their Mounts (a build of untrusted code, say).
	NoDataDir bool
}

// Mount is a host directory that appears in a command's sandbox.
type Mount struct {
	// Host is the host directory (absolute; symbolic links resolved when
	// the command is built).
	Host string
	// Path is where it appears in the sandbox (absolute); "" means the
	// same path as Host, which lets programs that wrote host paths into
	// files (a virtualenv, say) find them. It may not be or lie beneath
	// the sandbox's own directories (/, /app, /data, /run/paaskit,
	// /proc, /dev, /etc) nor the system directories (Config.SystemDirs).
	Path string
	// Writable mounts it read-write (nosuid, nodev); otherwise it is
	// read-only. A writable directory must be writable by the app's UID
	// (Runner.AppUser) for the command to write there.
	Writable bool
}

// checkMounts validates ms and returns them as the init helper takes them.
func (r *Runner) checkMounts(ms []Mount) ([]sandboxMount, error) {
	if len(ms) > 16 {
		return nil, fmt.Errorf("%d mounts: at most 16", len(ms))
	}
	reserved := []string{sandboxApp, sandboxData, sandboxSock, "/proc", "/dev", "/etc"}
	reserved = append(reserved, r.cfg.SystemDirs...)
	out := make([]sandboxMount, 0, len(ms))
	for _, m := range ms {
		if !filepath.IsAbs(m.Host) {
			return nil, fmt.Errorf("mount host directory %q is not absolute", m.Host)
		}
		host, err := filepath.EvalSymlinks(m.Host)
		if err != nil {
			return nil, fmt.Errorf("mount host directory %q: %w", m.Host, err)
		}
		if fi, err := os.Stat(host); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("mount host directory %q is not a directory", m.Host)
		}
		p := m.Path
		if p == "" {
			p = m.Host
		}
		if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
			return nil, fmt.Errorf("mount path %q: want an absolute, clean path other than /", p)
		}
		for _, res := range reserved {
			if p == res || strings.HasPrefix(p, res+"/") {
				return nil, fmt.Errorf("mount path %q: %s belongs to the sandbox", p, res)
			}
			if strings.HasPrefix(res, p+"/") {
				return nil, fmt.Errorf("mount path %q would hide the sandbox's %s", p, res)
			}
		}
		out = append(out, sandboxMount{Host: host, Path: p, Writable: m.Writable})
	}
	return out, nil
}

// mergeEnv adds extra ("KEY=value") to env, replacing variables of the
// same name. PAASKIT_* variables and malformed entries are refused.
func mergeEnv(env, extra []string) ([]string, error) {
	if len(extra) == 0 {
		return env, nil
	}
	set := map[string]int{}
	out := append([]string(nil), env...)
	for i, kv := range out {
		k, _, _ := strings.Cut(kv, "=")
		set[k] = i
	}
	for _, kv := range extra {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsRune(kv, 0) {
			return nil, fmt.Errorf("environment entry %q: want KEY=value", kv)
		}
		if strings.HasPrefix(k, "PAASKIT_") {
			return nil, fmt.Errorf("environment entry %q: PAASKIT_* variables are the runner's", kv)
		}
		if i, ok := set[k]; ok {
			out[i] = kv
		} else {
			set[k] = len(out)
			out = append(out, kv)
		}
	}
	return out, nil
}

// Command returns an *exec.Cmd that runs argv in app's sandbox as a
// one-off command; it is CommandWith with the zero CommandOptions.
func (r *Runner) Command(name string, argv []string) (*exec.Cmd, error) {
	return r.CommandWith(name, argv, CommandOptions{})
}

// AppUser returns the UID and GID app name's instances and commands run as
// (the runner's own where apps do not get users of their own), assigning
// them if the app has none yet: what a caller chowns a writable Mount to.
func (r *Runner) AppUser(name string) (uid, gid int, err error) {
	a, err := r.app(name)
	if err != nil {
		return 0, 0, err
	}
	return r.appUser(a)
}
