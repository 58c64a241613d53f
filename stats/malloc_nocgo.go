//go:build !linux || !cgo

package stats

// tuneMalloc does nothing where the C heap is not glibc's (see
// malloc_cgo.go).
func tuneMalloc() {}
