// Package stats emits metrics and log lines (ZeroMQ PUSH), collects them
// (PULL), and writes them to sinks: chunked log files, PostgreSQL via COPY,
// and Redis, spooling to disk while a sink is down. It also rolls up usage
// such as CPU seconds per app. The runner's output sink interface is what
// stats implements.
//
// Status: planned; the package holds no API yet.
package stats
