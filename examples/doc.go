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
//
// lockd, statsd, uploadd and the paasctl client follow as their
// packages land.
package examples
