package upload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ImageConfig configures BuildImage. Zero values are the defaults.
type ImageConfig struct {
	// Mksquashfs is the mksquashfs program. Default "mksquashfs" on PATH
	// (Debian package squashfs-tools).
	Mksquashfs string
	// Compression is passed to -comp. Default "gzip" (every kernel reads
	// it); "zstd", "xz" and "lz4" are smaller or faster.
	Compression string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Image is a built app image.
type Image struct {
	// ID is "sha256:" and the hex SHA-256 of the image file: the same
	// tree always gives the same ID.
	ID string
	// Path is the image file, <dir>/<hex>.squashfs.
	Path string
	// Size is the file's size in bytes.
	Size int64
}

// ErrNotDirectory is returned when an image source is not a directory.
var ErrNotDirectory = errors.New("not a directory")

// BuildImage packs the directory src (an extracted app and its virtualenv)
// into a SquashFS image in outDir, reproducibly: entries sorted, every
// owner root, every time (and the filesystem's own) fixed at the epoch, no
// extended attributes, so the same tree gives the same bytes and the same
// ID. Permission bits and symbolic links are kept. The image is written to a
// temporary name and renamed to <hex>.squashfs; building an image that
// already exists leaves it as it is.
func BuildImage(ctx context.Context, src, outDir string, cfg ImageConfig) (*Image, error) {
	if cfg.Mksquashfs == "" {
		cfg.Mksquashfs = "mksquashfs"
	}
	if cfg.Compression == "" {
		cfg.Compression = "gzip"
	}
	switch cfg.Compression {
	case "gzip", "zstd", "xz", "lz4", "lzo", "lzma":
	default:
		return nil, fmt.Errorf("upload: image compression %q is not one of gzip, zstd, xz, lz4, lzo, lzma", cfg.Compression)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	fi, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("upload: image source %s: %w", src, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("upload: image source %s: %w", src, ErrNotDirectory)
	}
	prog, err := exec.LookPath(cfg.Mksquashfs)
	if err != nil {
		return nil, fmt.Errorf("upload: %s not found (apt-get install squashfs-tools; make test installs it): %w", cfg.Mksquashfs, err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("upload: image dir %s: %w", outDir, err)
	}
	tmp, err := os.CreateTemp(outDir, ".image-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("upload: image dir %s: %w", outDir, err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpName)
	args := []string{src, tmpName,
		"-noappend", "-no-xattrs", "-all-root",
		"-mkfs-time", "0", "-all-time", "0",
		"-reproducible",
		"-comp", cfg.Compression,
		"-no-progress", "-quiet",
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("upload: mksquashfs %s: %w: %s", src, err, strings.TrimSpace(out.String()))
	}
	f, err := os.Open(tmpName)
	if err != nil {
		return nil, fmt.Errorf("upload: image: %w", err)
	}
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("upload: image: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	final := filepath.Join(outDir, sum+".squashfs")
	if err := os.Chmod(tmpName, 0o444); err != nil {
		return nil, fmt.Errorf("upload: image: %w", err)
	}
	if err := os.Rename(tmpName, final); err != nil {
		return nil, fmt.Errorf("upload: image: %w", err)
	}
	img := &Image{ID: "sha256:" + sum, Path: final, Size: size}
	cfg.Logger.Info("upload: image built", "src", src, "id", img.ID, "bytes", size)
	return img, nil
}

// MountMode says how MountImage makes an image's tree available.
type MountMode int

const (
	// MountAuto mounts with a loop device and falls back to a read-only
	// copy where mounting is not permitted.
	MountAuto MountMode = iota
	// MountLoop only mounts (read-only, through a loop device).
	MountLoop
	// MountCopy only unpacks a read-only copy with unsquashfs.
	MountCopy
)

// MountConfig configures MountImage. Zero values are the defaults.
type MountConfig struct {
	// Mode; default MountAuto.
	Mode MountMode
	// Unsquashfs is used by the fallback. Default "unsquashfs" on PATH.
	Unsquashfs string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Mounted is an image made available at a directory.
type Mounted struct {
	// Dir is where the tree is.
	Dir string
	// Loop is true for a read-only loop mount, false for the fallback
	// copy.
	Loop bool

	log *slog.Logger
}

// ErrMountUnsupported is returned by the loop mount where the platform has
// none.
var ErrMountUnsupported = errors.New("loop mounts are not supported on this platform")

// MountImage makes the image at path available read-only at dir (created if
// missing; it must be empty). Where a loop mount fails (no privilege, no
// loop devices, a platform without them) and the mode allows it, it unpacks a
// read-only copy instead and logs a warning saying so. Unmount undoes
// either.
func MountImage(ctx context.Context, path, dir string, cfg MountConfig) (*Mounted, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Unsquashfs == "" {
		cfg.Unsquashfs = "unsquashfs"
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("upload: mount image: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("upload: mount image at %s: %w", dir, err)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) > 0 {
		if err == nil {
			err = fmt.Errorf("%s is not empty", dir)
		}
		return nil, fmt.Errorf("upload: mount image at %s: %w", dir, err)
	}
	if cfg.Mode != MountCopy {
		err := loopMount(ctx, path, dir)
		if err == nil {
			cfg.Logger.Info("upload: image mounted", "image", path, "dir", dir, "loop", true)
			return &Mounted{Dir: dir, Loop: true, log: cfg.Logger}, nil
		}
		if cfg.Mode == MountLoop {
			return nil, fmt.Errorf("upload: mount image %s at %s: %w", path, dir, err)
		}
		cfg.Logger.Warn("upload: cannot loop-mount the image; using a read-only copy instead", "image", path, "dir", dir, "err", err)
	}
	if err := copyOut(ctx, cfg.Unsquashfs, path, dir); err != nil {
		return nil, fmt.Errorf("upload: unpack image %s at %s: %w", path, dir, err)
	}
	return &Mounted{Dir: dir, Loop: false, log: cfg.Logger}, nil
}

// copyOut unpacks the image into dir with unsquashfs and removes write
// permission everywhere.
func copyOut(ctx context.Context, unsquashfs, path, dir string) error {
	prog, err := exec.LookPath(unsquashfs)
	if err != nil {
		return fmt.Errorf("%s not found (apt-get install squashfs-tools): %w", unsquashfs, err)
	}
	// -f: unpack into the existing (empty) directory.
	out, err := exec.CommandContext(ctx, prog, "-f", "-no-xattrs", "-no-progress", "-quiet", "-d", dir, path).CombinedOutput()
	if err != nil {
		_ = setWritable(dir, true)
		clearDir(dir)
		return fmt.Errorf("unsquashfs: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return setWritable(dir, false)
}

func setWritable(dir string, writable bool) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := info.Mode().Perm()
		if writable {
			mode |= 0o200
		} else {
			mode &^= 0o222
		}
		if d.IsDir() {
			// Directories last (when read-only) so the walk can still
			// descend; first (when writable) is what WalkDir does.
			if !writable {
				dirs = append(dirs, p)
				return nil
			}
		}
		return os.Chmod(p, mode)
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		fi, err := os.Lstat(dirs[i])
		if err != nil {
			return err
		}
		if err := os.Chmod(dirs[i], fi.Mode().Perm()&^0o222); err != nil {
			return err
		}
	}
	return nil
}

// Unmount unmounts a loop mount (the loop device is released with it), or
// removes the fallback copy. The directory itself stays, empty.
func (m *Mounted) Unmount(ctx context.Context) error {
	if m.Loop {
		if err := loopUnmount(ctx, m.Dir); err != nil {
			return fmt.Errorf("upload: unmount %s: %w", m.Dir, err)
		}
		m.log.Info("upload: image unmounted", "dir", m.Dir)
		return nil
	}
	if err := setWritable(m.Dir, true); err != nil {
		return fmt.Errorf("upload: remove image copy %s: %w", m.Dir, err)
	}
	if err := clearDir(m.Dir); err != nil {
		return fmt.Errorf("upload: remove image copy %s: %w", m.Dir, err)
	}
	return nil
}

// clearDir removes everything inside dir, keeping dir.
func clearDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
