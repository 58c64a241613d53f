//go:build !linux

package stats

// queueMem is, off Linux, no memory of its own: the emitter's queue
// chunks come from the heap (see queuemem_linux.go).
type queueMem struct{}

func newQueueMem(int) *queueMem { return nil }

func (q *queueMem) take(int) []byte { return nil }

func (q *queueMem) free() {}
