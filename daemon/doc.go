// Package daemon is the supervisor every paaskit daemon is built on: a
// process with a name and several named main loops, after ep.io's
// BaseDaemon ("multiple main loops, terminates if any die, catches any
// exceptions, logs to stderr and remote syslog").
//
// A Daemon runs two kinds of loop:
//
//   - Main loops (Add): a function func(ctx) error that runs until ctx is
//     cancelled, such as a server's Run. By default a main loop is
//     essential: if it returns, the daemon stops and Run's error names it.
//     With Restart(Policy) it is restarted with exponential backoff instead,
//     and the daemon gives up (supervisord's FATAL) only after
//     Policy.MaxFailures failures within Policy.Window.
//   - Resilient loops (Every, ep.io's @resilient_loop): a function called
//     every interval; its errors and panics are logged with their stack and
//     the loop goes on, backing off with jitter while it keeps failing.
//
// Run starts the loops in the order they were added and stops them in the
// reverse order, each loop's context cancelled only once every loop added
// after it has returned: a loop may depend on anything an earlier loop
// provides. Run returns on context cancellation, on SIGTERM or SIGINT, or
// when an essential loop returns; it waits for loops up to Config.StopTimeout
// and names in its *StopError the loop that caused the stop and any loop
// that did not stop in time. Status reports per loop state, runs, restarts
// and the last error, for status pages.
//
// NewLogger builds a log/slog logger that writes text or JSON to stderr and
// RFC 5424 lines to a remote syslog over UDP or TCP at the same time; the
// syslog side has a bounded queue and a background writer, so a syslog
// server that is down never blocks or stops the daemon. GetLimit, SetLimit
// and RaiseSoftLimit read and set resource limits with clear errors.
//
// A supervisor costs little per loop: one goroutine and a context. Ten
// thousand loops start, run and stop in well under a second (see
// BenchmarkStop10000Loops for the figures on this machine).
package daemon
