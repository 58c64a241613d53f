package daemon

import (
	"errors"
	"fmt"
	"syscall"
)

// rlimitNproc is RLIMIT_NPROC, which package syscall does not name.
const rlimitNproc = 0x6

func (r Resource) linux() (int, error) {
	switch r {
	case OpenFiles:
		return syscall.RLIMIT_NOFILE, nil
	case Processes:
		return rlimitNproc, nil
	case AddressSpace:
		return syscall.RLIMIT_AS, nil
	case CoreSize:
		return syscall.RLIMIT_CORE, nil
	}
	return 0, fmt.Errorf("daemon: unknown resource %d", int(r))
}

// GetLimit returns the current soft and hard limits of r for this process.
func GetLimit(r Resource) (Limit, error) {
	n, err := r.linux()
	if err != nil {
		return Limit{}, err
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(n, &rl); err != nil {
		return Limit{}, fmt.Errorf("daemon: read %s limit: %w", r, err)
	}
	return Limit{Soft: rl.Cur, Hard: rl.Max}, nil
}

// SetLimit sets the soft and hard limits of r for this process (and the
// processes it starts afterwards). Lowering is always allowed; raising the
// hard limit needs CAP_SYS_RESOURCE, and the error then says so.
func SetLimit(r Resource, l Limit) error {
	n, err := r.linux()
	if err != nil {
		return err
	}
	if l.Soft > l.Hard {
		return fmt.Errorf("daemon: set %s limit: soft %s above hard %s", r, l.fmtSoft(), l.fmtHard())
	}
	rl := syscall.Rlimit{Cur: l.Soft, Max: l.Hard}
	if err := syscall.Setrlimit(n, &rl); err != nil {
		if errors.Is(err, syscall.EPERM) {
			return fmt.Errorf("daemon: set %s limit to soft %s, hard %s: raising the hard limit needs root (CAP_SYS_RESOURCE): %w",
				r, l.fmtSoft(), l.fmtHard(), err)
		}
		return fmt.Errorf("daemon: set %s limit to soft %s, hard %s: %w", r, l.fmtSoft(), l.fmtHard(), err)
	}
	return nil
}
