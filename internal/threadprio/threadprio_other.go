//go:build !linux

// Package threadprio lowers the CPU priority of the calling goroutine's
// thread; off Linux, where nice is not per thread, it does nothing.
package threadprio

// Lower does nothing off Linux.
func Lower(nice int) error { return nil }
