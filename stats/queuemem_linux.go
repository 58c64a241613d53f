package stats

import (
	"syscall"
	"unsafe"
)

// hugePage is the size of a transparent huge page on linux/amd64 and
// arm64 (the 4 KiB-page configurations).
const hugePage = 2 << 20

// queueMem is the memory the emitter's queue chunks are carved from: one
// anonymous mapping, outside the Go heap, that the kernel is asked to back
// with transparent huge pages (madvise MADV_HUGEPAGE, which works where
// /sys/kernel/mm/transparent_hugepage/enabled is "madvise" or "always").
// A page touched for the first time costs a fault; on a virtual machine a
// 4 KiB fault costs several microseconds (measured 5-15 us on the PVM
// guests this is benchmarked on, against 0.4 us per 4 KiB for a 2 MiB
// page), and a busy emitter's queue is tens of megabytes of first touches
// before its free list recycles the chunks. Where the advice is refused
// the mapping is ordinary memory, no worse than the heap's.
//
// Chunks are handed out once (take) and then live on the emitter's free
// list; the mapping is released by free, which the emitter calls from
// Close only when no goroutine can still read a chunk.
type queueMem struct {
	mapping []byte // all of it, for munmap
	rest    []byte // not yet handed out
}

// newQueueMem maps room for size bytes of chunks, or returns nil (the
// chunks then come from the heap).
func newQueueMem(size int) *queueMem {
	if size <= 0 {
		return nil
	}
	n := (size + hugePage - 1) / hugePage * hugePage
	m, err := syscall.Mmap(-1, 0, n+hugePage, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil
	}
	// Start at a huge-page boundary: only aligned 2 MiB ranges can be
	// backed by huge pages.
	off := 0
	if r := int(uintptrOf(m) % hugePage); r != 0 {
		off = hugePage - r
	}
	rest := m[off : off+n : off+n]
	_ = syscall.Madvise(rest, syscall.MADV_HUGEPAGE) // advice: refused is fine
	return &queueMem{mapping: m, rest: rest}
}

// take returns n bytes of the mapping (length 0, capacity n), or nil when
// it is used up.
func (q *queueMem) take(n int) []byte {
	if q == nil || len(q.rest) < n {
		return nil
	}
	b := q.rest[:0:n]
	q.rest = q.rest[n:]
	return b
}

// free unmaps the memory. Nothing may touch a chunk taken from it after.
func (q *queueMem) free() {
	if q == nil || q.mapping == nil {
		return
	}
	_ = syscall.Munmap(q.mapping)
	q.mapping, q.rest = nil, nil
}

// uintptrOf is the address of b's first byte (len(b) > 0).
func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
