// Package balancer is the host-routing HTTP front door: a host table, a
// consistent-hash pick of a backend node, and an HTTP/1.1 proxy.
//
// Status: in progress.
package balancer
