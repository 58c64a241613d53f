package lock

import (
	"fmt"
	"sync"
)

// Fence is the check a protected resource makes with fencing tokens: it
// remembers, per name, the largest token it has accepted, and refuses any
// write that carries a smaller one. A holder paused past its lease comes
// back with a token smaller than its successor's and is refused, however
// late its write arrives. A real store keeps this mark beside the data it
// protects (a column, a key), updated in the same transaction as the
// write; Fence is that logic in memory, for tests, examples and
// single-process resources. It is safe for concurrent use.
type Fence struct {
	mu      sync.Mutex
	highest map[string]uint64
}

// NewFence returns an empty Fence.
func NewFence() *Fence { return &Fence{highest: map[string]uint64{}} }

// Admit accepts a write to name under token if token is at least the
// largest one accepted so far (the same holder may write many times), and
// records it; otherwise it returns ErrStaleToken and records nothing.
func (f *Fence) Admit(name string, token uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if h := f.highest[name]; token < h {
		return fmt.Errorf("%w: %q token %d, already accepted %d", ErrStaleToken, name, token, h)
	}
	f.highest[name] = token
	return nil
}

// Highest returns the largest token accepted for name (0 if none).
func (f *Fence) Highest(name string) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.highest[name]
}
