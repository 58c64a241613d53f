package runner

// initEnv is the environment variable through which the runner hands a
// sandbox's description to its re-executed init helper. Its presence is
// what makes Init take over the process.
const initEnv = "_PAASKIT_RUNNER_INIT"

// initArgv0 is argv[0] of the init helper, so it reads well in ps.
const initArgv0 = "paaskit-init"

// sandboxMount is where a host directory appears inside a sandbox.
type sandboxMount struct {
	Host     string `json:"host"`
	Path     string `json:"path"`
	Writable bool   `json:"rw,omitempty"`
}

// initConfig is everything the init helper needs to build the sandbox and
// start the app in it. It travels as JSON in initEnv.
type initConfig struct {
	// Root is a host directory on which the sandbox root (a tmpfs) is
	// mounted inside the new mount namespace; "" means no sandbox root.
	Root string `json:"root,omitempty"`
	// SystemDirs are host directories bind-mounted read-only at the same
	// path (symlinks, as on a merged-/usr host, are recreated as links).
	SystemDirs []string `json:"system_dirs,omitempty"`
	// EtcFiles are host files or directories under /etc bind-mounted
	// read-only if they exist.
	EtcFiles []string       `json:"etc_files,omitempty"`
	Mounts   []sandboxMount `json:"mounts,omitempty"`
	// TmpSize bounds the private /tmp (a tmpfs), in bytes.
	TmpSize int64 `json:"tmp_size,omitempty"`
	// Proc mounts a /proc for the new PID namespace.
	Proc     bool   `json:"proc,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	// Cgroups are cgroup.procs files to join before anything else.
	Cgroups []string `json:"cgroups,omitempty"`
	// SetUser drops to UID/GID (with no supplementary groups).
	SetUser bool `json:"set_user,omitempty"`
	UID     int  `json:"uid"`
	GID     int  `json:"gid"`
	// Passwd is the user's name in the sandbox's /etc/passwd.
	User    string   `json:"user,omitempty"`
	Rlimits []rlimit `json:"rlimits,omitempty"`
	// DropCaps empties every capability set (bounding and ambient
	// included) before the app starts, and NoNewPrivs sets no_new_privs,
	// so that no exec (a setuid binary, file capabilities) gains any.
	DropCaps   bool `json:"drop_caps,omitempty"`
	NoNewPrivs bool `json:"no_new_privs,omitempty"`
	// Seccomp loads the system-call filter (seccomp_linux.go) on every
	// thread of the helper, so the helper and everything it starts run
	// under it.
	Seccomp bool `json:"seccomp,omitempty"`
	// Netns: descriptor 3 is a network namespace to join first.
	Netns bool `json:"netns,omitempty"`
	// NetnsMessage: descriptor 3 is a unix socket with one message
	// carrying the network namespace to join (SCM_RIGHTS). A one-off
	// command gets its namespace so: the runner closes its own
	// descriptor at once, and the namespace is held only by the message
	// and then by the command, so it goes when the command ends however
	// its caller handles the Cmd.
	NetnsMessage bool `json:"netns_message,omitempty"`
	// Reaper keeps the helper as PID 1 of the new PID namespace: it
	// forwards signals, reaps orphans and exits with the app's status.
	// Without it the helper execs the app in its own place.
	Reaper bool `json:"reaper,omitempty"`
	// Command mode: the app stays in the helper's process group (a pty's
	// foreground group) instead of getting its own.
	Command bool     `json:"command,omitempty"`
	Argv    []string `json:"argv"`
	Env     []string `json:"env"`
	Dir     string   `json:"dir"`
}

type rlimit struct {
	Resource int    `json:"resource"`
	Value    uint64 `json:"value"`
}
