// Package lock provides named leases with fencing tokens behind one
// interface, with three backends: the ZeroMQ locker daemon (run as a
// redundant pair), PostgreSQL and Redis. It is the platform's best-effort
// lock for cron jobs: one holder per job, and a token that a storage system
// can check so that a holder whose lease ran out cannot write stale data.
//
// Status: planned; the package holds no API yet.
package lock
