//go:build linux && cgo

package stats

/*
#include <malloc.h>

// stats_tune_malloc raises glibc's heap trim threshold and fixes its mmap
// threshold (see tuneMalloc). It returns 0 where mallopt refused, or where
// the C library has no such settings (musl's malloc.h defines neither).
static int stats_tune_malloc(int trim, int mmap) {
#if defined(M_TRIM_THRESHOLD) && defined(M_MMAP_THRESHOLD)
	return mallopt(M_MMAP_THRESHOLD, mmap) && mallopt(M_TRIM_THRESHOLD, trim);
#else
	return 0;
#endif
}
*/
import "C"

import "sync"

// The C heap settings tuneMalloc makes.
const (
	mallocTrimThreshold = 64 << 20
	mallocMmapThreshold = 4 << 20
)

var tuneMallocOnce sync.Once

// tuneMalloc stops glibc from giving libzmq's message memory back to the
// kernel after every message. libzmq mallocs each message it sends or
// receives (a batch is about 100 KB) and frees it once written or read;
// with glibc's defaults the freed top of the heap is trimmed (returned)
// past 128 KiB, and the next message faults the same pages in again, at
// 5-15 us per 4 KiB page on a virtual machine: about a third of the page
// faults of a collector and an emitter at full speed. A trim threshold of
// 64 MiB keeps that memory; the mmap threshold is fixed at 4 MiB (setting
// a trim threshold turns off glibc's own adjustment of it), so messages
// up to zmqloop's sizes come from the heap too. It is process-wide (the
// C heap is), done once, by the first NewEmitter or NewCollector.
func tuneMalloc() {
	tuneMallocOnce.Do(func() { C.stats_tune_malloc(mallocTrimThreshold, mallocMmapThreshold) })
}
