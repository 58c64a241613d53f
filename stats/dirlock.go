package stats

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ErrDirInUse is returned when another emitter or collector holds the
// directory asked for.
var ErrDirInUse = errors.New("stats: directory in use by another process")

// lockDir takes an exclusive flock on dir/lock, held until the file is
// closed (or the process dies), so two processes never share a spool or a
// journal.
func lockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("stats: make directory %s: %w", dir, err)
	}
	p := filepath.Join(dir, "lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("stats: open %s: %w", p, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrDirInUse, dir)
		}
		return nil, fmt.Errorf("stats: lock %s: %w", p, err)
	}
	return f, nil
}
