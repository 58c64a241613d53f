// Package examples holds paaskit's reference daemons, one binary per
// directory, each a thin main over the library packages: heartbeat (the
// daemon supervisor on its own), and as the platform grows balancerd,
// runnerd, nexusd, lockd, statsd, uploadd, the all-in-one platform and the
// paasctl client.
package examples
