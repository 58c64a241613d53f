package runner

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestCheckPeerRefusesAListenerOfAnotherUID(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := checkPeer(c, os.Geteuid()); err != nil {
		t.Fatalf("own listener refused: %v", err)
	}
	if err := checkPeer(c, 4242); !errors.Is(err, ErrUntrustedSocket) {
		t.Fatalf("listener of UID %d accepted for UID 4242: %v", os.Geteuid(), err)
	}
	// A pinned socket owned by another UID is refused, so is a symlink.
	dfd, err := openSockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFd(dfd)
	if _, err := pinSocket(dfd, "s.sock", 4242); !errors.Is(err, ErrUntrustedSocket) {
		t.Fatalf("socket of UID %d pinned for UID 4242: %v", os.Geteuid(), err)
	}
	if err := os.Symlink(p, filepath.Join(dir, "link.sock")); err != nil {
		t.Fatal(err)
	}
	if _, err := pinSocket(dfd, "link.sock", os.Geteuid()); !errors.Is(err, ErrUntrustedSocket) {
		t.Fatalf("symlink pinned: %v", err)
	}
	fd, err := pinSocket(dfd, "s.sock", os.Geteuid())
	if err != nil || fd < 0 {
		t.Fatalf("own socket not pinned: %d %v", fd, err)
	}
	closeFd(fd)
	if fd, err := pinSocket(dfd, "absent.sock", 0); fd != -1 || err != nil {
		t.Fatalf("absent socket: %d %v", fd, err)
	}
}
