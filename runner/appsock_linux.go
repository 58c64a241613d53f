package runner

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrUntrustedSocket is wrapped by the errors of an app socket the front
// refuses: a symlink or other non-socket where the app's socket should be,
// a socket owned by another user, or a listener whose peer credentials are
// not the app's.
var ErrUntrustedSocket = errors.New("runner: untrusted app socket")

// openSockDir opens the instance's socket directory (created by the runner
// itself, in a directory only root may write) as an O_PATH descriptor: the
// app may fill the directory, but the directory itself stays the one the
// runner made.
func openSockDir(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open socket directory %s: %w", dir, err)
	}
	return fd, nil
}

// pinSocket opens the app's socket name in dirfd without following any
// link (O_PATH|O_NOFOLLOW opens a symlink itself, which fstat then shows)
// and checks that it is a unix socket owned by uid. The returned O_PATH
// descriptor pins that very inode: the front connects through
// /proc/self/fd/<fd>, so whatever the app later puts at the path (a
// symlink to a root-owned socket, a hard link, another socket) is never
// reached. It reports (-1, nil) while nothing is there yet.
func pinSocket(dirfd int, name string, uid int) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return -1, nil
	}
	if err != nil {
		return -1, fmt.Errorf("%w: open %s: %v", ErrUntrustedSocket, name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: stat %s: %v", ErrUntrustedSocket, name, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFSOCK:
	case unix.S_IFLNK:
		unix.Close(fd)
		return -1, fmt.Errorf("%w: %s is a symlink, not the app's socket (refused: the front never follows what an app can write)", ErrUntrustedSocket, name)
	default:
		unix.Close(fd)
		return -1, fmt.Errorf("%w: %s is not a unix socket (mode %#o)", ErrUntrustedSocket, name, st.Mode)
	}
	if int(st.Uid) != uid {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: %s is owned by UID %d, not the app's UID %d", ErrUntrustedSocket, name, st.Uid, uid)
	}
	return fd, nil
}

// pinnedPath is the path through which a pinned descriptor is connected
// to.
func pinnedPath(fd int, _ string) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// checkPeer checks that the listener at the other end of the unix
// connection c runs as uid (SO_PEERCRED: the credentials of the process
// that called listen). It is the second lock on the app socket: even a
// connection that somehow reached another socket is closed before a
// request is written to it.
func checkPeer(c net.Conn, uid int) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("%w: SO_PEERCRED: %v", ErrUntrustedSocket, serr)
	}
	if int(cred.Uid) != uid {
		return fmt.Errorf("%w: the listener runs as UID %d (pid %d), not as the app's UID %d", ErrUntrustedSocket, cred.Uid, cred.Pid, uid)
	}
	return nil
}

func closeFd(fd int) { _ = unix.Close(fd) }
