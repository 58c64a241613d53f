package upload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	if os.Getenv("UPLOAD_HELPER") == "mount" {
		os.Exit(helperMount())
	}
	os.Exit(m.Run())
}

// helperMount runs MountImage (auto mode) in a process without privilege.
func helperMount() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	m, err := MountImage(context.Background(), os.Getenv("UPLOAD_IMAGE"), os.Getenv("UPLOAD_DIR"), MountConfig{Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	b, err := os.ReadFile(filepath.Join(m.Dir, "app", "main.py"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("loop=%v content=%q\n", m.Loop, b)
	if err := m.Unmount(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// appTree writes a small app tree: code, a venv-like bin with an executable
// script and a symlink.
func appTree(t *testing.T, dir string, mtime time.Time, owner int) {
	t.Helper()
	files := map[string]string{
		"app/main.py":                            "print('hello')\n",
		"app/static/style.css":                   "body{}\n",
		"venv/bin/tool":                          "#!/app/venv/bin/python\nprint(1)\n",
		"venv/lib/python3.11/site-packages/x.py": "X = 1\n",
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(data), 0o644))
	}
	require.NoError(t, os.Chmod(filepath.Join(dir, "venv/bin/tool"), 0o755))
	require.NoError(t, os.Symlink("/usr/bin/python3", filepath.Join(dir, "venv/bin/python")))
	require.NoError(t, filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if owner >= 0 {
			if err := os.Lchown(p, owner, owner); err != nil {
				return err
			}
		}
		if info.Mode()&os.ModeSymlink != 0 {
			return nil
		}
		return os.Chtimes(p, mtime, mtime)
	}))
}

func TestBuildImageReproducible(t *testing.T) {
	base := t.TempDir()
	a, b := filepath.Join(base, "a"), filepath.Join(base, "b")
	appTree(t, a, time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC), -1)
	// Same content, other times and another owner.
	appTree(t, b, time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC), 1234)

	ctx := context.Background()
	imgA, err := BuildImage(ctx, a, filepath.Join(base, "store1"), ImageConfig{})
	require.NoError(t, err)
	imgB, err := BuildImage(ctx, b, filepath.Join(base, "store2"), ImageConfig{})
	require.NoError(t, err)
	require.Equal(t, imgA.ID, imgB.ID)
	da, err := os.ReadFile(imgA.Path)
	require.NoError(t, err)
	db, err := os.ReadFile(imgB.Path)
	require.NoError(t, err)
	require.True(t, bytes.Equal(da, db), "same tree must give the same bytes")
	require.Equal(t, int64(len(da)), imgA.Size)
	require.True(t, strings.HasPrefix(imgA.ID, "sha256:"))
	require.Equal(t, strings.TrimPrefix(imgA.ID, "sha256:")+".squashfs", filepath.Base(imgA.Path))

	// Building again into the same store gives the same file.
	again, err := BuildImage(ctx, a, filepath.Join(base, "store1"), ImageConfig{})
	require.NoError(t, err)
	require.Equal(t, imgA.Path, again.Path)
	ents, _ := os.ReadDir(filepath.Join(base, "store1"))
	require.Len(t, ents, 1, "no temporary files left")

	// One changed byte, one changed mode: other IDs.
	require.NoError(t, os.WriteFile(filepath.Join(b, "app/main.py"), []byte("print('hellO')\n"), 0o644))
	imgC, err := BuildImage(ctx, b, filepath.Join(base, "store2"), ImageConfig{})
	require.NoError(t, err)
	require.NotEqual(t, imgA.ID, imgC.ID)
	require.NoError(t, os.Chmod(filepath.Join(a, "app/main.py"), 0o600))
	imgD, err := BuildImage(ctx, a, filepath.Join(base, "store1"), ImageConfig{})
	require.NoError(t, err)
	require.NotEqual(t, imgA.ID, imgD.ID)
}

func TestBuildImageBadInput(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, err := BuildImage(ctx, filepath.Join(dir, "missing"), dir, ImageConfig{})
	require.Error(t, err)
	f := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(f, nil, 0o644))
	_, err = BuildImage(ctx, f, dir, ImageConfig{})
	require.ErrorIs(t, err, ErrNotDirectory)
	_, err = BuildImage(ctx, dir, dir, ImageConfig{Compression: "rot13"})
	require.Error(t, err)
	_, err = BuildImage(ctx, dir, t.TempDir(), ImageConfig{Mksquashfs: "no-such-mksquashfs"})
	require.ErrorContains(t, err, "squashfs-tools")
}

func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mounts")
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[1] == dir {
			return true
		}
	}
	return false
}

func buildTestImage(t *testing.T) (string, *Image) {
	t.Helper()
	base := t.TempDir()
	src := filepath.Join(base, "src")
	appTree(t, src, time.Unix(0, 0), -1)
	img, err := BuildImage(context.Background(), src, filepath.Join(base, "store"), ImageConfig{})
	require.NoError(t, err)
	return base, img
}

func TestMountImageLoopReadOnly(t *testing.T) {
	base, img := buildTestImage(t)
	dir := filepath.Join(base, "mnt")
	ctx := context.Background()
	m, err := MountImage(ctx, img.Path, dir, MountConfig{Mode: MountLoop})
	require.NoError(t, err, "loop mounts need root and loop devices (make test runs as root)")
	require.True(t, m.Loop)
	require.True(t, mounted(t, dir))
	b, err := os.ReadFile(filepath.Join(dir, "app", "main.py"))
	require.NoError(t, err)
	require.Equal(t, "print('hello')\n", string(b))
	target, err := os.Readlink(filepath.Join(dir, "venv/bin/python"))
	require.NoError(t, err)
	require.Equal(t, "/usr/bin/python3", target)
	fi, err := os.Stat(filepath.Join(dir, "venv/bin/tool"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o755), fi.Mode().Perm())
	require.Equal(t, uint32(0), fi.Sys().(*syscall.Stat_t).Uid)
	// Read-only even for root.
	err = os.WriteFile(filepath.Join(dir, "app", "new"), []byte("x"), 0o644)
	require.True(t, errors.Is(err, syscall.EROFS), "%v", err)

	// A second mount on a non-empty directory is refused.
	_, err = MountImage(ctx, img.Path, dir, MountConfig{})
	require.Error(t, err)

	require.NoError(t, m.Unmount(ctx))
	require.False(t, mounted(t, dir))
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, ents)
	// The loop device was released. With autoclear the kernel detaches
	// it once the unmount drops the last reference, which a loaded
	// machine was seen to do after Unmount returned: wait for it.
	require.Eventually(t, func() bool {
		out, err := exec.Command("losetup", "-j", img.Path).CombinedOutput()
		return err == nil && strings.TrimSpace(string(out)) == ""
	}, 30*time.Second, 20*time.Millisecond, "the loop device stays attached")
}

func TestMountImageCopyFallback(t *testing.T) {
	base, img := buildTestImage(t)
	dir := filepath.Join(base, "copy")
	ctx := context.Background()
	m, err := MountImage(ctx, img.Path, dir, MountConfig{Mode: MountCopy})
	require.NoError(t, err)
	require.False(t, m.Loop)
	require.False(t, mounted(t, dir))
	b, err := os.ReadFile(filepath.Join(dir, "app", "main.py"))
	require.NoError(t, err)
	require.Equal(t, "print('hello')\n", string(b))
	fi, err := os.Stat(filepath.Join(dir, "app", "main.py"))
	require.NoError(t, err)
	require.Zero(t, fi.Mode().Perm()&0o222, "the copy is read-only")
	fi, err = os.Stat(filepath.Join(dir, "app"))
	require.NoError(t, err)
	require.Zero(t, fi.Mode().Perm()&0o222)
	require.NoError(t, m.Unmount(ctx))
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, ents)
}

// TestMountImageFallsBackWithoutPrivilege runs MountImage as the
// unprivileged user nobody: mount is refused, the copy is used and the log
// says so.
func TestMountImageFallsBackWithoutPrivilege(t *testing.T) {
	nobody, err := user.Lookup("nobody")
	require.NoError(t, err)
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	_, img := buildTestImage(t)

	// Somewhere nobody can reach: a copy of the test binary, the image
	// and the mount point.
	work, err := os.MkdirTemp("", "upload-nobody-")
	require.NoError(t, err)
	defer os.RemoveAll(work)
	require.NoError(t, os.Chmod(work, 0o755))
	bin := filepath.Join(work, "upload.test")
	copyFile(t, os.Args[0], bin, 0o755)
	imgCopy := filepath.Join(work, "app.squashfs")
	copyFile(t, img.Path, imgCopy, 0o644)
	dir := filepath.Join(work, "mnt")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, os.Chown(dir, uid, gid))

	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "UPLOAD_HELPER=mount", "UPLOAD_IMAGE="+imgCopy, "UPLOAD_DIR="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stderr: %s", stderr.String())
	require.Equal(t, "loop=false content=\"print('hello')\\n\"\n", stdout.String())
	require.Contains(t, stderr.String(), "cannot loop-mount the image; using a read-only copy instead")
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}
