// Package runner runs the apps of one node: isolated app instances, started
// on demand when a request finds none running, reaped when idle, restarted
// with backoff when they crash, with their output captured and their CPU
// time and memory accounted.
//
// It is the "runner" daemon of the platform (ep.io's per-machine runner,
// PythonAnywhere's backend): the balancer hashes a site's Host to a node;
// on that node a Runner's front routes Host to the app's instance over a
// unix socket, keeping connections to it alive. A request that finds no
// instance starts one, and any number of requests arriving meanwhile share
// that one start and are all served once the socket accepts; a start that
// fails answers them all at once with 503 and the tail of the app's
// stderr, and the next start waits for a backoff. A host the node does not
// know answers 404 with MissHeader, the balancer's miss-hook contract.
// Every start's time and queue wait are kept in Status for operators.
//
// The front comes in two forms. Runner.Serve owns a listener: event loops
// (internal/evproxy) serve warm plain requests, and the goroutine-per-
// connection forwarder the balancer uses too (internal/connproxy) serves
// the rest (cold starts, misses, WebSocket upgrades, Expect, chunked or
// large bodies, HTTP/1.0), every head parsed by the strict internal/http1
// parser and the forwarded head rebuilt without hop-by-hop fields; a head
// it refuses is answered 400 there and then. A connection handed to the
// goroutine path for one exchange goes back to the loops afterwards
// (FrontStats counts it). Apps are
// hostile tenants: on every path their chunked responses are decoded and
// re-encoded by internal/http1's strict codec (sizes, CRLFs, extensions
// and a bounded trailer section checked), and one broken in what came
// with its head answers 502 without the app's connection being reused.
// Runner.ServeHTTP is the same front as an http.Handler, for embedding
// behind TLS or in a larger mux: net/http reads the client's request and
// the goroutine forwarder serves it from there (the same codec, routing,
// start on demand and accounting as Serve's paths).
// Idle instances are reaped only when nothing is in flight: a streaming
// response, an open WebSocket or an attached command (Runner.Attach) keeps
// an instance alive.
//
// # The front's cost
//
// Serve's goroutine path waits in the runtime's poller itself (syscall.RawConn):
// it reads a request only once the client socket is readable, and writes
// it to the instance from inside the wait for the answer, so a warm
// request costs one read and one write on each side and no read that fails
// with EAGAIN. On a plain TCP listener, warm requests are served by
// default on internal/evproxy event loops instead (Config.EventLoops,
// DefaultEventLoops = 1; -1 turns them off): epoll on a locked thread, no
// goroutine wake per request; everything else (a cold start, a miss, an
// upgrade, a large body or a chunked one the client paused in, HTTP/1.0)
// is handed, with every byte read, to the goroutine path. Both fronts keep the same promises: an
// instance stays in flight until its whole response was relayed or the
// exchange was cut (so a streaming response keeps it alive), a request
// that meets a pooled connection the app had dropped is sent again on a
// fresh one (a request with a body only when the send failed or the app
// reset the connection unread), and the loops free the connection pools
// of instances that are gone.
//
// The loops make the front cheap: on the reference machine the default
// front (one event loop) serves warm requests to a gunicorn app at about
// the rate nginx in front of the same socket does, and a goroutine front
// costs two to three times the CPU per request, most of it parking and
// waking goroutines (bench/README.md has the figures and their commands).
// One loop is the default: on a node the apps need the cores more than
// the front does, and a second loop takes CPU from the app's workers.
// runnerd's -event-loops sets another count.
//
// # Apps
//
// An app is a Spec: name, host names, a read-only image (a directory or a
// mounted SquashFS image, seen at /app), a command, environment, a writable
// data directory (/data), limits and timeouts. Apps come from the Go API
// (Runner.Put, Runner.Remove) or from a directory of JSON spec files that
// Run watches, uWSGI-vassal style. Each app gets a UID/GID of its own from
// a configured range, kept across restarts in the state directory.
//
// # Isolation
//
// The runner runs as root and hosts other people's code, so every path,
// socket, header and byte an app controls is treated as hostile. Each
// protection is on by default where the kernel and the runner's
// privileges allow; each one that is not is listed in Runner.Isolation
// (Missing) and logged at New, never silently dropped. What each stops:
//
//   - The app's socket is never followed. The front reaches a unix-socket
//     app through a descriptor that pins the socket's inode, opened with
//     O_PATH|O_NOFOLLOW in the instance's socket directory (itself opened
//     O_PATH by the runner, in a directory only root writes) and checked
//     to be a socket owned by the app's UID; it connects to
//     /proc/self/fd/N, on the goroutine paths and the event loops alike
//     (evproxy Target.Via). An app that replaces its socket with a
//     symlink or hard link to a root-owned socket (docker.sock) reaches
//     nothing: the start fails, or, after the start, the front keeps
//     talking to the socket it pinned. SO_PEERCRED is checked against the
//     app's UID on every new connection on every front, so a listener of
//     any other user is dropped before a byte is sent.
//   - Platform headers: the front drops every X-Paaskit-* field from app
//     responses on every path, so an app cannot forge MissHeader and make
//     the balancer run its miss hook (only the front's own 404 carries it).
//   - The app's own UID/GID from a configured range (one per app, kept in
//     <StateDir>/uids.json): apps cannot signal, trace or read each other.
//   - New mount, PID, UTS and IPC namespaces and a sandbox root assembled
//     per instance (the host's /usr, /lib, /bin and a minimal /etc
//     read-only, the image read-only at /app, the data directory writable
//     at /data, a private /tmp, the socket directory at /run/paaskit),
//     pivoted into and read-only: no view of the host's files, processes,
//     System V IPC.
//   - A network namespace per instance (Spec.Network): policy "none", the
//     default, gives loopback only, so an app cannot listen on a public
//     port past the balancer, reach the node front, admin endpoints,
//     PostgreSQL or Redis on the host's loopback (and cold-start other
//     apps through them), other apps' abstract unix sockets, or a cloud
//     metadata address. A TCP-mode app binds port 8000 in its own
//     namespace and the front dials it from inside (a socket made there);
//     no free-port search, no race with other processes. Policy "egress"
//     adds a veth on an isolated port of the runner's bridge with NAT,
//     the app's address a /32 whose only neighbour is the gateway (so
//     even another app's address is reached through the host's filter);
//     the runner's nftables table refuses at once (TCP reset, or ICMP
//     prohibited)
//     the host's own addresses, other apps, 169.254.0.0/16, the private
//     and reserved ranges and IPv6, except the destinations the spec's
//     Allow names (resolved when the spec is put and at each start);
//     policy "allow-only" reaches the destinations Allow names and nothing
//     else, public addresses included (a build that may fetch from its
//     package index, say). An
//     app cannot change its address or rules: it has no capability in
//     its namespace. Namespaces are made ahead by a small pool and used
//     once: measured with bench/compare.sh runner (three runners' cold
//     starts alternating), a namespace from the pool added 0.49 ms to a
//     cold start and one made at the start 1.9 ms. Each runner's bridge
//     needs a subnet of its own (Config.EgressSubnet); one that overlaps
//     a route the host has fails the egress start with an error naming
//     it. Nothing
//     outlives the runner: namespaces are held only by descriptors and
//     processes (no bind mounts), the bridge and the table are named
//     after Config.CgroupRoot, deleted at shutdown and, after a crash, at
//     the next New. net.ipv4.ip_forward, one setting for the whole host,
//     is turned on by the first runner with egress and put back by the
//     last (a host-wide record under /run/paaskit); while the host's own
//     value was off, every runner's table refuses forwarding that touches
//     no runner's bridge, so the host never routes between its other
//     links.
//   - No capabilities, no_new_privs and a seccomp filter. The init helper
//     empties the bounding and ambient sets, drops to the app's user
//     (which empties the permitted and effective sets), empties the
//     inheritable set, sets no_new_privs (no setuid binary or file
//     capability gains anything) and loads a system-call filter on all
//     its threads before it starts the app: nothing in the sandbox runs
//     as root, PID 1 included. The filter (a small classic-BPF program of
//     our own, seccomp_linux.go, rather than libseccomp: no cgo, no
//     libseccomp-dev to build the runner, one screen to review) refuses
//     with EPERM what Docker's default profile refuses to an unprivileged
//     container: unshare, setns, mount and the new mount API, pivot_root,
//     chroot, clone with namespace flags, keyctl, add_key, request_key,
//     ptrace, process_vm_*, kcmp, perf_event_open, bpf, userfaultfd,
//     io_uring, open_by_handle_at, modules, kexec, clocks, swap, quotas,
//     reboot, NUMA policy; clone3 gets ENOSYS (libc falls back to clone,
//     whose flags the filter sees) and a call from another ABI (x32,
//     32-bit compat) kills the process. This closes the kernel attack
//     surface that container escapes go through.
//   - RLIMIT_NOFILE, RLIMIT_CORE 0 and RLIMIT_NPROC, and a cgroup per
//     instance, v2 where the cgroup2 mount has the memory controller and
//     v1 otherwise, that enforces memory, process and CPU-weight limits
//     and accounts CPU time and peak memory: a fork bomb or a leak stays
//     the app's problem. An instance killed for memory is reported as
//     "oom".
//   - Distrust of the state directory and of specs: New refuses a state
//     directory others can write, and a uids.json that names a UID
//     outside the configured range (UID 0 with an error saying so), so a
//     tampered file cannot run an app as root or as a system user; a
//     UID range overlapping /etc/subuid or /etc/subgid is warned about
//     (Isolation().Warnings). A data directory must lie beneath
//     Config.DataRoot (a spec naming /etc is refused at Put) and is made
//     and chowned without following links, never one of another app's.
//     The default FileSink rotates each app's log by size and keeps a
//     bounded number of files, so output cannot fill the disk.
//   - The front itself: its goroutine accept loop backs off on EMFILE and
//     ENFILE and keeps serving, so an app that exhausts descriptors cannot
//     stop the node's front.
//
// Go cannot run code between fork and exec, so the sandbox is built by an
// init helper: the runner re-executes its own binary with a marker in the
// environment, and Init, which every program embedding a Runner calls first
// in main (tests: in TestMain), takes over in that case. Inside the PID
// namespace the helper stays as PID 1, as the app's user and under the
// same restrictions: it passes SIGTERM on to every process of the
// sandbox, reaps orphans and exits with the app's status, whereupon the
// kernel kills whatever is left. Its parent-death signal (set again after
// the change of user, which clears it) takes the sandbox down with a
// killed runner. Stopping sends SIGTERM, then SIGKILL after a grace
// period, and finally kills anything left in the cgroup: no orphans.
//
// # Output
//
// Stdout and stderr are read line by line (lines longer than a bound are
// split, so a flood keeps the runner's memory bounded) and handed to a
// Sink with app, instance, stream and time. FileSink writes plain files
// (NewRotatingFileSink bounds them); to ship lines off the node, wrap a
// stats.Emitter in a SinkFunc (examples/platform does): its Log never
// fails, it spools to disk while the collector is away.
//
// Command builds an *exec.Cmd for a one-off command in an app's sandbox;
// pty.Start runs it in a terminal (examples/runnerd serves such sessions
// over zmqloop). A command gets the app's network policy in a namespace of
// its own; the namespace travels to the init helper in a socket message,
// so the runner keeps no descriptor of it and the kernel frees it (veth
// included) when the command ends, however its caller handles the Cmd; a
// netlink watcher then drops the veth's filter entries. CommandWith also
// sets a command's directory, environment, network policy and extra host
// directories (examples/internal/buildsandbox runs the Python installer's
// builds so, each with the install's build directory and nothing else).
package runner
