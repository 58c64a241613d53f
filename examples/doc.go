// Package examples holds paaskit's reference daemons, one binary per
// directory, each a thin main over the library packages:
//
//   - platform: the whole request path on loopback in one process (a
//     balancer over two runner nodes, built-in gunicorn sample apps, an
//     admin page); `make demo` runs it.
//   - balancerd: the balancer as a daemon, its table in a watched file,
//     or (--nexus) its nodes followed from nexus.
//   - runnerd: a runner node, its apps in a watched directory of specs;
//     --nexus announces it.
//   - nexusd: a nexus resolver (run two), and a lookup client.
//   - zmqecho: a signed echo service and client on zmqloop.
//   - heartbeat: the daemon supervisor on its own, with a status page.
//   - pyinstall: the Python installer (upload/pyinstall) as a command
//     with pip's `install -r` flags and a progress line.
//   - lockd: a member of the ZeroMQ locker pair, and a one-shot client.
//   - cron: a job run once per period across nodes, under a lease from
//     any lock backend.
//   - statsd: the stats collector (files; PostgreSQL and Redis if given)
//     and its query endpoint.
//   - uploadd: the SSH endpoint (git/hg push to deploy, run, rsync, scp,
//     rollback) with an embedded runner node.
//   - ptywrap: runs a command in a pty and speaks pty's framed protocol
//     on its stdin/stdout.
//   - paasctl: the operator's client: attach a terminal to a command in
//     an app's sandbox over zmqloop.
package examples
