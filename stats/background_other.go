//go:build !linux

package stats

// lowerThreadPriority does nothing off Linux, where nice is not per
// thread (see background_linux.go).
func lowerThreadPriority() {}
