package runner

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupManager is paaskit's small layer over the kernel's cgroup files, v1
// or v2, whichever has the memory controller. It creates one cgroup per
// instance under <hierarchy>/<root>/.
type cgroupManager struct {
	version int               // 1 or 2
	v1      map[string]string // v1: controller -> hierarchy mount point
	v2      string            // v2: the cgroup2 mount point
	root    string            // our subtree's name under each hierarchy
	missing []string          // controllers we wanted and could not get
}

// v1Controllers are the v1 hierarchies paaskit uses.
var v1Controllers = []string{"memory", "pids", "cpu", "cpuacct"}

// detectCgroups finds the cgroup hierarchies from /proc/self/mountinfo. It
// prefers v2 where the cgroup2 mount offers the memory controller (a pure v2
// host has /sys/fs/cgroup/cgroup.controllers), and falls back to v1 (as on a
// hybrid host whose cgroup2 mount has no controllers).
func detectCgroups(root string) (*cgroupManager, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	v1 := map[string]string{}
	v2 := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		sep := strings.Index(line, " - ")
		if sep < 0 {
			continue
		}
		pre := strings.Fields(line[:sep])
		post := strings.Fields(line[sep+3:])
		if len(pre) < 5 || len(post) < 3 {
			continue
		}
		mnt := unescapeMount(pre[4])
		switch post[0] {
		case "cgroup2":
			if v2 == "" {
				v2 = mnt
			}
		case "cgroup":
			for _, opt := range strings.Split(post[2], ",") {
				for _, c := range v1Controllers {
					if opt == c {
						if _, ok := v1[c]; !ok {
							v1[c] = mnt
						}
					}
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	if v2 != "" {
		b, err := os.ReadFile(filepath.Join(v2, "cgroup.controllers"))
		if err == nil && hasWord(string(b), "memory") {
			m := &cgroupManager{version: 2, v2: v2, root: root}
			for _, c := range []string{"pids", "cpu"} {
				if !hasWord(string(b), c) {
					m.missing = append(m.missing, "cgroup v2 controller "+c)
				}
			}
			return m, nil
		}
	}
	if _, ok := v1["memory"]; ok {
		m := &cgroupManager{version: 1, v1: v1, root: root}
		for _, c := range v1Controllers[1:] {
			if _, ok := v1[c]; !ok {
				m.missing = append(m.missing, "cgroup v1 controller "+c)
			}
		}
		return m, nil
	}
	if v2 != "" {
		return nil, fmt.Errorf("the cgroup2 mount %s offers no memory controller and no cgroup v1 memory hierarchy is mounted", v2)
	}
	return nil, errors.New("no cgroup hierarchy with a memory controller is mounted")
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// dirs returns the directories of the cgroup called name, one per
// hierarchy (v1 hierarchies that share a mount appear once).
func (m *cgroupManager) dirs(name string) []string {
	if m.version == 2 {
		return []string{filepath.Join(m.v2, m.root, name)}
	}
	seen := map[string]bool{}
	var out []string
	for _, c := range v1Controllers {
		mnt, ok := m.v1[c]
		if !ok || seen[mnt] {
			continue
		}
		seen[mnt] = true
		out = append(out, filepath.Join(mnt, m.root, name))
	}
	return out
}

// setup creates the root of our subtree and, on v2, enables the controllers
// for the children.
func (m *cgroupManager) setup() error {
	for _, d := range m.dirs("") {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", d, err)
		}
	}
	if m.version == 2 {
		// Every level from the mount down to our root must delegate.
		levels := []string{m.v2}
		rel := strings.Split(strings.Trim(m.root, "/"), "/")
		cur := m.v2
		for _, p := range rel[:len(rel)] {
			cur = filepath.Join(cur, p)
			levels = append(levels, cur)
		}
		for _, lv := range levels {
			for _, c := range []string{"memory", "pids", "cpu"} {
				if err := os.WriteFile(filepath.Join(lv, "cgroup.subtree_control"), []byte("+"+c), 0); err != nil && c == "memory" {
					return fmt.Errorf("enable cgroup v2 memory controller in %s: %w", lv, err)
				}
			}
		}
	}
	return nil
}

// cgroup is one instance's (or one app's commands') cgroup.
type cgroup struct {
	m    *cgroupManager
	name string
}

// create makes the cgroup name (removing a stale one first) and writes its
// limits.
func (m *cgroupManager) create(name string, l Limits) (*cgroup, error) {
	cg := &cgroup{m: m, name: name}
	for _, d := range m.dirs(name) {
		if _, err := os.Stat(d); err == nil {
			cg.kill(2 * time.Second)
			_ = cg.removeDir(d)
		}
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("create cgroup %s: %w", d, err)
		}
	}
	if err := cg.setLimits(l); err != nil {
		cg.remove()
		return nil, err
	}
	return cg, nil
}

func (c *cgroup) file(controller, name string) string {
	if c.m.version == 2 {
		return filepath.Join(c.m.v2, c.m.root, c.name, name)
	}
	mnt, ok := c.m.v1[controller]
	if !ok {
		return ""
	}
	return filepath.Join(mnt, c.m.root, c.name, name)
}

func (c *cgroup) write(controller, name, value string) error {
	p := c.file(controller, name)
	if p == "" {
		return nil // controller not mounted: reported at detection
	}
	if err := os.WriteFile(p, []byte(value), 0); err != nil {
		return fmt.Errorf("cgroup %s: write %q to %s: %w", c.name, value, p, err)
	}
	return nil
}

func (c *cgroup) setLimits(l Limits) error {
	if c.m.version == 2 {
		if l.Memory > 0 {
			if err := c.write("memory", "memory.max", strconv.FormatInt(int64(l.Memory), 10)); err != nil {
				return err
			}
			_ = c.write("memory", "memory.swap.max", "0")
		}
		if l.Processes > 0 {
			if err := c.write("pids", "pids.max", strconv.Itoa(l.Processes)); err != nil {
				return err
			}
		}
		if l.CPUWeight > 0 {
			if err := c.write("cpu", "cpu.weight", strconv.Itoa(l.CPUWeight)); err != nil {
				return err
			}
		}
		if q := cpuQuota(l.CPUs); q > 0 {
			if err := c.write("cpu", "cpu.max", fmt.Sprintf("%d %d", q, cpuPeriod)); err != nil {
				return err
			}
		}
		return nil
	}
	if l.Memory > 0 {
		v := strconv.FormatInt(int64(l.Memory), 10)
		if err := c.write("memory", "memory.limit_in_bytes", v); err != nil {
			return err
		}
		// Without swap accounting the file is absent; that is fine.
		if p := c.file("memory", "memory.memsw.limit_in_bytes"); p != "" {
			if _, err := os.Stat(p); err == nil {
				if err := c.write("memory", "memory.memsw.limit_in_bytes", v); err != nil {
					return err
				}
			}
		}
	}
	if l.Processes > 0 {
		if err := c.write("pids", "pids.max", strconv.Itoa(l.Processes)); err != nil {
			return err
		}
	}
	if l.CPUWeight > 0 {
		shares := l.CPUWeight * 1024 / 100
		if shares < 2 {
			shares = 2
		}
		if err := c.write("cpu", "cpu.shares", strconv.Itoa(shares)); err != nil {
			return err
		}
	}
	if q := cpuQuota(l.CPUs); q > 0 {
		if err := c.write("cpu", "cpu.cfs_period_us", strconv.Itoa(cpuPeriod)); err != nil {
			return err
		}
		if err := c.write("cpu", "cpu.cfs_quota_us", strconv.FormatInt(q, 10)); err != nil {
			return err
		}
	}
	return nil
}

// cpuPeriod is the CPU bandwidth period, in microseconds (the kernel's
// default).
const cpuPeriod = 100000

// cpuQuota is the run time per period that cpus CPUs allow, 0 for no
// bound.
func cpuQuota(cpus float64) int64 {
	if cpus <= 0 {
		return 0
	}
	return max(int64(cpus*cpuPeriod), 1000)
}

// procsFiles are the cgroup.procs files a process writes "0" into to join.
func (c *cgroup) procsFiles() []string {
	var out []string
	for _, d := range c.m.dirs(c.name) {
		out = append(out, filepath.Join(d, "cgroup.procs"))
	}
	return out
}

// cgroupStats is what the kernel accounted for one cgroup.
type cgroupStats struct {
	CPU          time.Duration
	Memory       int64 // current
	PeakMemory   int64
	OOMKills     int64
	ForkRefusals int64 // times pids.max refused a fork
}

func readInt(p string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// keyed reads "key value" lines and returns the value for key.
func keyed(p, key string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s has no %q", p, key)
}

func (c *cgroup) stats() cgroupStats {
	var s cgroupStats
	if c.m.version == 2 {
		if v, err := keyed(c.file("cpu", "cpu.stat"), "usage_usec"); err == nil {
			s.CPU = time.Duration(v) * time.Microsecond
		}
		s.Memory, _ = readInt(c.file("memory", "memory.current"))
		if v, err := readInt(c.file("memory", "memory.peak")); err == nil {
			s.PeakMemory = v
		}
		s.OOMKills, _ = keyed(c.file("memory", "memory.events"), "oom_kill")
		s.ForkRefusals, _ = keyed(c.file("pids", "pids.events"), "max")
		return s
	}
	if p := c.file("cpuacct", "cpuacct.usage"); p != "" {
		if v, err := readInt(p); err == nil {
			s.CPU = time.Duration(v)
		}
	}
	s.Memory, _ = readInt(c.file("memory", "memory.usage_in_bytes"))
	s.PeakMemory, _ = readInt(c.file("memory", "memory.max_usage_in_bytes"))
	s.OOMKills, _ = keyed(c.file("memory", "memory.oom_control"), "oom_kill")
	if p := c.file("pids", "pids.events"); p != "" {
		s.ForkRefusals, _ = keyed(p, "max")
	}
	return s
}

// pids lists the processes in the cgroup (from the first hierarchy).
func (c *cgroup) pids() []int {
	var out []int
	for _, d := range c.m.dirs(c.name) {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				out = append(out, pid)
			}
		}
		break
	}
	return out
}

// kill SIGKILLs every process in the cgroup until it is empty or timeout
// passes; it reports whether the cgroup is empty.
func (c *cgroup) kill(timeout time.Duration) bool {
	if c.m.version == 2 {
		_ = os.WriteFile(c.file("", "cgroup.kill"), []byte("1"), 0)
	}
	deadline := time.Now().Add(timeout)
	wait := 100 * time.Microsecond
	for {
		pids := c.pids()
		if len(pids) == 0 {
			return true
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
		if wait < 10*time.Millisecond {
			wait *= 2
		}
	}
}

func (c *cgroup) removeDir(d string) error {
	var err error
	for i := 0; i < 100; i++ {
		err = os.Remove(d)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(time.Millisecond * time.Duration(1+i/10))
	}
	return fmt.Errorf("remove cgroup %s: %w", d, err)
}

// remove deletes the cgroup; its processes must be gone (see kill).
func (c *cgroup) remove() error {
	var first error
	for _, d := range c.m.dirs(c.name) {
		if err := c.removeDir(d); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// cleanupStale kills and removes cgroups left under our root by a runner
// that died, and returns their names.
func (m *cgroupManager) cleanupStale() []string {
	var names []string
	seen := map[string]bool{}
	for _, d := range m.dirs("") {
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !e.IsDir() || seen[e.Name()] {
				continue
			}
			seen[e.Name()] = true
			names = append(names, e.Name())
			cg := &cgroup{m: m, name: e.Name()}
			cg.kill(2 * time.Second)
			_ = cg.remove()
		}
	}
	return names
}

// removeRoot deletes our subtree's root directories if empty.
func (m *cgroupManager) removeRoot() {
	for _, d := range m.dirs("") {
		_ = os.Remove(d)
	}
}
