// Package examples holds paaskit's reference daemons, one binary per
// directory, each a thin main over the library packages:
//
//   - platform: the whole request path on loopback in one process (a
//     balancer over two runner nodes, built-in gunicorn sample apps, an
//     admin page); `make demo` runs it.
//   - balancerd: the balancer as a daemon, its table in a watched file.
//   - runnerd: a runner node, its apps in a watched directory of specs.
//   - zmqecho: a signed echo service and client on zmqloop.
//   - heartbeat: the daemon supervisor on its own, with a status page.
//   - pyinstall: the Python installer (upload/pyinstall) as a command
//     with pip's `install -r` flags and a progress line.
//   - lockd: a member of the ZeroMQ locker pair, and a one-shot client.
//   - cron: a job run once per period across nodes, under a lease from
//     any lock backend.
//   - statsd: the stats collector (files; PostgreSQL and Redis if given)
//     and its query endpoint.
//
// nexusd and the paasctl client follow as their
// packages land.
package examples
