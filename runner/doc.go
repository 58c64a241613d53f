// Package runner runs isolated app instances on one node, starts them on
// demand and reaps them when idle, and routes Host to an instance's socket.
//
// Status: in progress.
package runner
