// Package zmqloop is the platform's internal messaging over ZeroMQ: a signed,
// replay-proof JSON envelope, serve loops per socket kind, and clients that
// fail over between endpoints.
//
// Status: in progress.
package zmqloop
