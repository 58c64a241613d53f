package daemon

import (
	"errors"
	"strconv"
)

// ErrUnsupported is returned by the resource-limit helpers on systems
// without them.
var ErrUnsupported = errors.New("not supported on this system")

// Resource is a per-process resource with a limit.
type Resource int

// The resources GetLimit and SetLimit handle.
const (
	OpenFiles    Resource = iota // RLIMIT_NOFILE: open file descriptors
	Processes                    // RLIMIT_NPROC: processes of the user
	AddressSpace                 // RLIMIT_AS: virtual memory, bytes
	CoreSize                     // RLIMIT_CORE: core dump size, bytes
)

func (r Resource) String() string {
	switch r {
	case OpenFiles:
		return "open files"
	case Processes:
		return "processes"
	case AddressSpace:
		return "address space"
	case CoreSize:
		return "core size"
	}
	return "resource(" + strconv.Itoa(int(r)) + ")"
}

// Unlimited is the value of a limit that is not limited (RLIM_INFINITY).
const Unlimited = ^uint64(0)

// Limit is a soft and a hard limit. The soft limit is enforced; a process
// may raise it up to the hard limit.
type Limit struct {
	Soft, Hard uint64
}

func fmtLimit(v uint64) string {
	if v == Unlimited {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10)
}

func (l Limit) fmtSoft() string { return fmtLimit(l.Soft) }
func (l Limit) fmtHard() string { return fmtLimit(l.Hard) }

// RaiseSoftLimit raises r's soft limit to its hard limit, the usual first
// step of a daemon that holds many connections open, and returns the limit
// now in force.
func RaiseSoftLimit(r Resource) (Limit, error) {
	l, err := GetLimit(r)
	if err != nil {
		return l, err
	}
	if l.Soft == l.Hard {
		return l, nil
	}
	l.Soft = l.Hard
	if err := SetLimit(r, l); err != nil {
		return Limit{}, err
	}
	return GetLimit(r)
}
