// Package paaskit is a Go SDK of platform-as-a-service building blocks. A
// hosting company imports its packages to build its own PaaS; the reference
// daemons under examples/ assemble them into a small working platform.
//
// The packages, from the bottom up:
//
//   - daemon: the supervisor every daemon is built on. Named main loops,
//     resilient loops that restart with backoff and catch panics, ordered
//     shutdown on SIGTERM/SIGINT, logging to stderr and remote syslog,
//     resource limits.
//   - zmqloop: all internal traffic. A signed, replay-proof JSON envelope
//     over ZeroMQ (HMAC key ring, replay window, size bound, optional CURVE
//     encryption); reply, PULL and SUB serve loops that plug into daemon;
//     clients that fail over between endpoints.
//   - nexus: who runs what where. Services announce themselves with
//     heartbeats over zmqloop; redundant resolvers keep the table.
//   - lock: named leases with fencing tokens for cron jobs, with a ZeroMQ
//     locker pair, PostgreSQL, Redis or etcd behind one interface.
//   - balancer: the HTTP front door. A host table with wildcard suffixes, a
//     consistent hash of the host over stable node ids, a purpose-built
//     HTTP/1.1 forwarder on per-core event loops (at parity with nginx and
//     HAProxy in throughput on the same machine; bench/README.md has the
//     figures) with WebSocket tunnels, hitless reloads, ejection of dead
//     nodes and a miss hook.
//   - runner: app instances on one node. Sandboxes (own UID/GID,
//     namespaces, cgroups, a read-only image), on-demand start with one
//     start per burst, idle reaping, output capture, CPU and memory
//     accounting, and the node front that routes Host to an instance's
//     unix socket.
//   - pty: commands in a pseudo-terminal, locally or over zmqloop, for
//     management commands run in an app's sandbox.
//   - upload: what turns a push into a runnable image. Safe bundle
//     extraction, reproducible SquashFS images, a parallel cached Python
//     installer, and the SSH endpoint.
//   - stats: metrics and log lines pushed over zmqloop, collected into
//     chunked files, PostgreSQL or Redis, spooled to disk while a sink is
//     down.
//
// How they assemble:
//
//	client ─HTTP─▶ balancer ─(host → node, consistent hash)─▶ runner front ─unix socket─▶ app
//	                  ▲ nodes + health (nexus)                   │ output, CPU time
//	                  └──────── heartbeats ◀──── runner, stats   ▼
//	                                                           stats ─▶ files │ PostgreSQL │ Redis
//	developer ─git push/ssh─▶ upload ─image + venv─▶ image store ─▶ runner
//	operator ─paasctl run─▶ pty over zmqloop ─▶ runner.Command
//	cron ─▶ lock (one holder per job, fencing token)
//
// All of them are built. What each does not yet do is said in its own
// package doc; the measured figures behind their claims, with the
// commands that produced them, are in bench/README.md.
//
// Packages meet through small interfaces and function values, never by
// importing each other sideways; the wiring lives in examples/. What two
// packages share lives under internal/: internal/http1 is the one strict
// HTTP/1.1 head parser, and internal/evproxy the event-loop forwarder that
// both the balancer and the runner's node front use for plain HTTP/1.1.
package paaskit
