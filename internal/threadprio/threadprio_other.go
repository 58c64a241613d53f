//go:build !linux

// Package threadprio runs background work at a lower CPU priority; off
// Linux, where nice is not per thread, it runs the work as it is.
package threadprio

// Do runs fn on the calling goroutine and returns nil.
func Do(nice int, fn func()) error {
	fn()
	return nil
}
