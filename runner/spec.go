package runner

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Spec describes one app: what to run, where its code and data live, which
// host names route to it and what it may use. Spec files hold one Spec as
// JSON (see LoadSpecFile); the Go API takes the same struct (Runner.Put).
type Spec struct {
	// Name identifies the app: 1-48 characters of a-z, 0-9 and '-', not
	// starting with '-'. Required.
	Name string `json:"name"`
	// Hosts are the host names the node front routes to this app,
	// compared case-insensitively without port. Required, at least one.
	Hosts []string `json:"hosts"`
	// Image is the app's read-only root: a directory on the host (for a
	// SquashFS image, its mount point). It appears at /app in the sandbox.
	// Required; it must exist when the spec is put.
	Image string `json:"image"`
	// Command is the program and its arguments, as seen inside the
	// sandbox (for example ["/app/venv/bin/gunicorn", "app:wsgi"]).
	// Required.
	Command []string `json:"command"`
	// Env is added to the app's environment, after PATH, HOME and the
	// runner's own PAASKIT_* variables (which it cannot override).
	Env map[string]string `json:"env,omitempty"`
	// WorkDir is the working directory inside the sandbox; "" means /app.
	WorkDir string `json:"workdir,omitempty"`
	// DataDir is the host directory mounted writable at /data; "" means
	// <StateDir>/data/<name>. It is created if missing and owned by the
	// app's UID.
	DataDir string `json:"data_dir,omitempty"`
	// Listen is "unix" (the default: the app binds $PAASKIT_SOCKET) or
	// "tcp" (the app binds 127.0.0.1:$PORT, for apps that only speak TCP;
	// in its own network namespace the port is always 8000).
	Listen string `json:"listen,omitempty"`
	// Limits bound what one instance may use; zero fields take the
	// runner's defaults (Config.DefaultLimits).
	Limits Limits `json:"limits,omitempty"`
	// IdleTimeout is how long an instance with nothing in flight runs
	// before it is reaped; 0 means Config.DefaultIdleTimeout.
	IdleTimeout Duration `json:"idle_timeout,omitempty"`
	// Network is the app's network policy: its own namespace with
	// loopback only (the default), or egress.
	Network Network `json:"network,omitzero"`
	// StartTimeout is how long a start may take to bind its socket
	// before it fails (and its waiters get 503); 0 means
	// Config.DefaultStartTimeout.
	StartTimeout Duration `json:"start_timeout,omitempty"`
}

// Limits bound one instance. Zero means "the runner's default".
type Limits struct {
	// Memory is the cgroup memory limit in bytes ("256M" in JSON works).
	Memory Bytes `json:"memory,omitempty"`
	// Processes bounds tasks (processes and threads): the cgroup's
	// pids.max, and RLIMIT_NPROC for the app's UID (32 above it when
	// the cgroup is in force, as a backstop: the sandbox's init helper
	// runs as the app's UID too).
	Processes int `json:"processes,omitempty"`
	// OpenFiles is RLIMIT_NOFILE.
	OpenFiles int `json:"open_files,omitempty"`
	// CPUWeight is the relative CPU share, 1-10000 (cgroup v2 cpu.weight;
	// on v1 it is scaled to cpu.shares). 100 is the kernel's default.
	CPUWeight int `json:"cpu_weight,omitempty"`
	// CPUs is a hard bound on CPU time, in CPUs (1.5: one and a half
	// cores' worth per period; cgroup v2 cpu.max, v1 cpu.cfs_quota_us over
	// a 100 ms period). Zero means no bound beyond the weight.
	CPUs float64 `json:"cpus,omitempty"`
}

func (l Limits) withDefaults(d Limits) Limits {
	if l.Memory == 0 {
		l.Memory = d.Memory
	}
	if l.Processes == 0 {
		l.Processes = d.Processes
	}
	if l.OpenFiles == 0 {
		l.OpenFiles = d.OpenFiles
	}
	if l.CPUWeight == 0 {
		l.CPUWeight = d.CPUWeight
	}
	if l.CPUs == 0 {
		l.CPUs = d.CPUs
	}
	return l
}

func (l Limits) validate() error {
	switch {
	case l.Memory < 0:
		return fmt.Errorf("limits.memory %d is negative", l.Memory)
	case l.Memory != 0 && l.Memory < 4<<20:
		return fmt.Errorf("limits.memory %d is under 4 MiB", l.Memory)
	case l.Processes < 0:
		return fmt.Errorf("limits.processes %d is negative", l.Processes)
	case l.OpenFiles < 0:
		return fmt.Errorf("limits.open_files %d is negative", l.OpenFiles)
	case l.CPUWeight < 0 || l.CPUWeight > 10000:
		return fmt.Errorf("limits.cpu_weight %d is outside 1-10000", l.CPUWeight)
	case l.CPUs != 0 && !(l.CPUs >= 0.01 && l.CPUs <= 1024):
		return fmt.Errorf("limits.cpus %g is outside 0.01-1024", l.CPUs)
	}
	return nil
}

// Duration is a time.Duration that reads and writes JSON as a string such
// as "90s" or "5m" (a plain number is taken as seconds).
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads "90s", "5m" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("duration %s: want a string like \"30s\" or a number of seconds", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// Bytes is a size in bytes that reads JSON as a number or a string with a
// K, M or G suffix (powers of 1024): "256M".
type Bytes int64

// UnmarshalJSON reads 268435456 or "256M".
func (b *Bytes) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		v, err := ParseBytes(s)
		if err != nil {
			return err
		}
		*b = Bytes(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(data, &n); err != nil {
		return fmt.Errorf("size %s: want a number of bytes or a string like \"256M\"", data)
	}
	*b = Bytes(n)
	return nil
}

// ParseBytes parses "1024", "64K", "256M" or "2G" (powers of 1024).
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	t = strings.TrimSuffix(t, "B")
	t = strings.TrimSuffix(t, "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult, t = 1<<10, t[:n-1]
		case 'M':
			mult, t = 1<<20, t[:n-1]
		case 'G':
			mult, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a number with an optional K, M or G suffix", s)
	}
	return v * mult, nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,47}$`)

// ErrBadSpec is wrapped by every error about a spec's content, so callers
// can tell a bad spec from a failure of the runner.
var ErrBadSpec = errors.New("bad app spec")

// SpecError says what is wrong with a spec, and in which file if it came
// from one.
type SpecError struct {
	File string // the spec file, or "" for the Go API
	App  string // the app's name, if it could be read
	Err  error
}

func (e *SpecError) Error() string {
	var b strings.Builder
	b.WriteString("runner: ")
	if e.File != "" {
		fmt.Fprintf(&b, "spec file %s: ", e.File)
	}
	if e.App != "" {
		fmt.Fprintf(&b, "app %q: ", e.App)
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the cause.
func (e *SpecError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrBadSpec) true.
func (e *SpecError) Is(target error) bool { return target == ErrBadSpec }

// Validate checks s without touching the file system beyond checking that
// the image is a directory. It returns a *SpecError.
func (s *Spec) Validate() error {
	bad := func(format string, args ...any) error {
		return &SpecError{App: s.Name, Err: fmt.Errorf(format, args...)}
	}
	if !nameRE.MatchString(s.Name) {
		return bad("name %q: want 1-48 characters of a-z, 0-9 and '-', not starting with '-'", s.Name)
	}
	if len(s.Hosts) == 0 {
		return bad("no hosts")
	}
	for _, h := range s.Hosts {
		if normHost(h) == "" || strings.ContainsAny(h, " /\t") {
			return bad("host %q is not a host name", h)
		}
	}
	if len(s.Command) == 0 || s.Command[0] == "" {
		return bad("no command")
	}
	if s.Image == "" {
		return bad("no image")
	}
	if !filepath.IsAbs(s.Image) {
		return bad("image %q is not an absolute path", s.Image)
	}
	fi, err := os.Stat(s.Image)
	if err != nil {
		return &SpecError{App: s.Name, Err: fmt.Errorf("image %s: %w", s.Image, err)}
	}
	if !fi.IsDir() {
		return bad("image %s is not a directory (mount a SquashFS image and name its mount point)", s.Image)
	}
	if s.WorkDir != "" && !filepath.IsAbs(s.WorkDir) {
		return bad("workdir %q is not an absolute path", s.WorkDir)
	}
	if s.DataDir != "" && !filepath.IsAbs(s.DataDir) {
		return bad("data_dir %q is not an absolute path", s.DataDir)
	}
	switch s.Listen {
	case "", "unix", "tcp":
	default:
		return bad("listen %q: want \"unix\" or \"tcp\"", s.Listen)
	}
	for k := range s.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return bad("env name %q is not valid", k)
		}
	}
	if err := s.Limits.validate(); err != nil {
		return bad("%v", err)
	}
	if err := s.Network.validate(); err != nil {
		return bad("%v", err)
	}
	if s.IdleTimeout < 0 || s.StartTimeout < 0 {
		return bad("idle_timeout and start_timeout must not be negative")
	}
	return nil
}

// maxSpecFile bounds what LoadSpecFile reads.
const maxSpecFile = 1 << 20

// LoadSpecFile reads and validates one JSON spec file. Unknown fields are
// errors (a typo must not silently drop a limit). Errors are *SpecError.
func LoadSpecFile(path string) (Spec, error) {
	var s Spec
	f, err := os.Open(path)
	if err != nil {
		return s, &SpecError{File: path, Err: err}
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxSpecFile+1)); err != nil {
		return s, &SpecError{File: path, Err: err}
	}
	if buf.Len() > maxSpecFile {
		return s, &SpecError{File: path, Err: fmt.Errorf("larger than %d bytes", maxSpecFile)}
	}
	dec := json.NewDecoder(&buf)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Spec{}, &SpecError{File: path, Err: fmt.Errorf("malformed JSON: %w", err)}
	}
	if dec.More() {
		return Spec{}, &SpecError{File: path, App: s.Name, Err: errors.New("malformed JSON: more than one value")}
	}
	if err := s.Validate(); err != nil {
		var se *SpecError
		if errors.As(err, &se) {
			se.File = path
		}
		return Spec{}, err
	}
	return s, nil
}

func normHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	if strings.HasPrefix(h, "[") {
		if i := strings.Index(h, "]"); i > 0 {
			return h[:i+1]
		}
		return h
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".")
}

func (s *Spec) clone() Spec {
	c := *s
	c.Hosts = append([]string(nil), s.Hosts...)
	c.Command = append([]string(nil), s.Command...)
	c.Network.Allow = append([]string(nil), s.Network.Allow...)
	if s.Env != nil {
		c.Env = make(map[string]string, len(s.Env))
		for k, v := range s.Env {
			c.Env[k] = v
		}
	}
	return c
}

func (s *Spec) equal(o *Spec) bool {
	a, _ := json.Marshal(s)
	b, _ := json.Marshal(o)
	return bytes.Equal(a, b)
}
