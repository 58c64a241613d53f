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
// The front comes in two forms. Runner.Serve owns a listener and relays
// plain HTTP/1.1 requests with a purpose-built forwarder (one goroutine per
// client connection, heads parsed by the strict internal/http1 parser shared
// with the balancer, the forwarded head rebuilt without hop-by-hop fields),
// handing anything else (HTTP/1.0, chunked request bodies, WebSocket
// upgrades, malformed heads) to net/http. Runner.ServeHTTP is the same
// front as an http.Handler, for embedding behind TLS or in a larger mux.
// Idle instances are reaped only when nothing is in flight: a streaming
// response, an open WebSocket or an attached command (Runner.Attach) keeps
// an instance alive.
//
// # The front's cost
//
// Serve's warm path waits in the runtime's poller itself (syscall.RawConn):
// it reads a request only once the client socket is readable, and writes
// it to the instance from inside the wait for the answer, so a warm
// request costs one read and one write on each side and no read that fails
// with EAGAIN. On a plain TCP listener, warm requests are served by
// default on internal/evproxy event loops instead (Config.EventLoops,
// DefaultEventLoops = 1; -1 turns them off): epoll on a locked thread, no
// goroutine wake per request; everything else (a cold start, a miss, an
// upgrade, a chunked or large body, HTTP/1.0) is handed, with every byte
// read, to the goroutine path. Both fronts keep the same promises: an
// instance stays in flight until its whole response was relayed or the
// exchange was cut (so a streaming response keeps it alive), a request
// that meets a pooled connection the app had dropped is sent again on a
// fresh one (a request with a body only when the send failed or the app
// reset the connection unread), and the loops free the connection pools
// of instances that are gone.
//
// Measured with bench/compare.sh runner (2 cores shared with other
// builds; load generator, front and app on the same machine; the same Go
// client, 32 keep-alive connections, against the front and straight
// against the app's unix socket, 5 interleaved rounds, median of the
// per-round ratios), warm requests reach, over four runs:
//
//   - a Python WSGI app under Debian's gunicorn (2 gthread workers, about
//     7,500 requests/s direct): 0.72x to 0.74x of direct through the
//     goroutine front, 0.81x, 0.86x and 0.92x with EventLoops: 1 (three
//     runs); nginx in front of the same socket reaches 0.77x to 0.96x. At
//     this rate the goroutine front spends 80-95 µs of CPU per request,
//     most of it parking and waking goroutines and threads (futex,
//     netpoll) twice per request; one event loop spends 30-40 µs, as
//     nginx does.
//   - the tiny Go test app (50,000 requests/s direct): 0.48x to 0.51x,
//     0.49x and 0.51x with event loops; nginx reaches 0.45x to 0.50x, and
//     runnerd beats it by 1.05x-1.10x. This app and the client cost about
//     30 µs of CPU per request together; the front adds about 17 µs (two
//     thirds of it in its four read and write system calls), the client's
//     TCP costs 13% more than a unix socket, and a third process must be
//     woken twice per request: (W+A)/(W+A+F) cannot reach 0.8 on two
//     shared cores with any relay, as nginx shows.
//
// One loop is the default: on a node the apps need the cores more than
// the front does. With the loops as the default front (two runs of
// bench/compare.sh runner, same conditions), the gunicorn app reached
// 0.88x and 0.88x of direct with one loop against 0.55x and 0.63x with
// one loop per core (-event-loops 2: the second loop takes CPU from
// gunicorn's workers), and the tiny Go app 0.53x and 0.51x against 0.52x
// and 0.52x. The section's ALT_EVENT_LOOPS repeats that comparison.
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
// Everything is on by default where the kernel and the runner's privileges
// allow, and each feature that is not is reported in Runner.Isolation and
// logged: the app's own UID/GID; new mount, PID, UTS and IPC namespaces; a
// sandbox root assembled per instance (the host's /usr, /lib, /bin and a
// minimal /etc read-only, the image read-only at /app, the data directory
// writable at /data, a private /tmp, the socket directory at /run/paaskit)
// that it pivots into and makes read-only; RLIMIT_NPROC, RLIMIT_NOFILE; and
// a cgroup per instance, v2 where the cgroup2 mount has the memory
// controller and v1 otherwise, that enforces memory, process and CPU-weight
// limits and accounts CPU time and peak memory. An instance killed for
// memory is reported as "oom".
//
// Go cannot run code between fork and exec, so the sandbox is built by an
// init helper: the runner re-executes its own binary with a marker in the
// environment, and Init, which every program embedding a Runner calls first
// in main (tests: in TestMain), takes over in that case. Inside the PID
// namespace the helper stays as PID 1: it passes SIGTERM on to every
// process of the sandbox, reaps orphans and exits with the app's status,
// whereupon the kernel kills whatever is left. Stopping sends SIGTERM, then
// SIGKILL after a grace period, and finally kills anything left in the
// cgroup: no orphans.
//
// # Output
//
// Stdout and stderr are read line by line (lines longer than a bound are
// split, so a flood keeps the runner's memory bounded) and handed to a
// Sink with app, instance, stream and time. FileSink writes plain files;
// the stats package provides a sink that ships lines off the node.
//
// Command builds an *exec.Cmd for a one-off command in an app's sandbox;
// the pty package runs it in a terminal.
package runner
