package runner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// net.ipv4.ip_forward is one setting for the whole host, and several
// runners (each with its own bridge) may need it at once. So what it was
// before any runner turned it on is recorded once for the host, every
// runner with egress up leaves a marker (its bridge's name), and only the
// last one out puts the setting back. A runner killed before it could
// take its marker away leaves its bridge too: the marker stays valid
// until that runner's next start removes both, and a marker whose bridge
// is gone is dropped by whichever runner looks next.
//
// While the recorded value is "0", every runner's rules refuse forwarding
// that touches no paaskit bridge ("pk*" links), so turning the setting on
// never makes the host a router between its other links, whichever runner
// is still up.

// hostForwardDir holds the record, the markers and the lock. /run is
// emptied at boot, as the setting itself is reset.
var hostForwardDir = "/run/paaskit"

const procIPForward = "/proc/sys/net/ipv4/ip_forward"

// forwardLock takes the host-wide lock over the record and the markers.
func forwardLock() (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Join(hostForwardDir, "ip_forward.users"), 0o700); err != nil {
		return nil, fmt.Errorf("ip_forward record: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(hostForwardDir, "ip_forward.lock"), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ip_forward lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("ip_forward lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// acquireForward turns forwarding on for bridge (if it is off) and marks
// bridge as a user. It reports whether the host's value before any
// runner was "0", in which case the caller's rules must refuse forwarding
// between other links.
func acquireForward(bridge string) (wasOff bool, err error) {
	unlock, err := forwardLock()
	if err != nil {
		return false, err
	}
	defer unlock()
	record := filepath.Join(hostForwardDir, "ip_forward.orig")
	orig, err := os.ReadFile(record)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		cur, err := os.ReadFile(procIPForward)
		if err != nil {
			return false, fmt.Errorf("read net.ipv4.ip_forward: %w", err)
		}
		if strings.TrimSpace(string(cur)) != "0" {
			// On before any runner: the operator's, never ours to
			// put back. No record.
			break
		}
		if err := writeFileAtomic(record, []byte("0\n"), 0o600); err != nil {
			return false, fmt.Errorf("record net.ipv4.ip_forward: %w", err)
		}
		orig = []byte("0\n")
	default:
		return false, fmt.Errorf("read the ip_forward record: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(hostForwardDir, "ip_forward.users", bridge), nil, 0o600); err != nil {
		return false, fmt.Errorf("mark ip_forward use: %w", err)
	}
	wasOff = strings.TrimSpace(string(orig)) == "0"
	if wasOff {
		if err := os.WriteFile(procIPForward, []byte("1"), 0); err != nil {
			return false, fmt.Errorf("enable net.ipv4.ip_forward: %w", err)
		}
	}
	return wasOff, nil
}

// releaseForward takes bridge's marker away (if there is one) and, when
// no runner uses forwarding any more, puts back the value recorded
// before the first. restored is the value written, "" if none.
func releaseForward(bridge string) (restored string, err error) {
	unlock, err := forwardLock()
	if err != nil {
		return "", err
	}
	defer unlock()
	users := filepath.Join(hostForwardDir, "ip_forward.users")
	if err := os.Remove(filepath.Join(users, bridge)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("unmark ip_forward use: %w", err)
	}
	entries, err := os.ReadDir(users)
	if err != nil {
		return "", fmt.Errorf("ip_forward users: %w", err)
	}
	for _, e := range entries {
		if _, err := netlink.LinkByName(e.Name()); err == nil {
			return "", nil // another runner still forwards
		}
		_ = os.Remove(filepath.Join(users, e.Name())) // its bridge is gone: a runner that died
	}
	record := filepath.Join(hostForwardDir, "ip_forward.orig")
	orig, err := os.ReadFile(record)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the ip_forward record: %w", err)
	}
	v := strings.TrimSpace(string(orig))
	if v != "0" && v != "1" {
		_ = os.Remove(record)
		return "", fmt.Errorf("ip_forward record holds %q: removed, not applied", v)
	}
	if err := os.WriteFile(procIPForward, []byte(v), 0); err != nil {
		return "", fmt.Errorf("restore net.ipv4.ip_forward: %w", err)
	}
	if err := os.Remove(record); err != nil {
		return v, fmt.Errorf("remove the ip_forward record: %w", err)
	}
	return v, nil
}
