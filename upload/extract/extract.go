// Package extract unpacks uploaded bundles (tar, tar.gz, zip) safely: an
// archive from a developer or an sdist from a package index is untrusted, so
// every entry is checked before anything is written, the tree is built in a
// private directory beside the target and renamed into place only when the
// whole archive was accepted, and limits stop decompression bombs. The upload
// endpoint uses it for app bundles and the Python installer for sdists.
package extract

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Reasons an archive entry is refused. An *EntryError wraps one of them, so
// errors.Is(err, ErrUnsafePath) works on what Extract returns.
var (
	// ErrUnsafePath: an absolute name, a ".." component, a backslash, a
	// NUL byte, or a path that goes through a symbolic link.
	ErrUnsafePath = errors.New("unsafe path")
	// ErrLinkEscape: a symbolic or hard link whose target is outside the
	// extraction root.
	ErrLinkEscape = errors.New("link points outside the root")
	// ErrSpecialFile: a device, FIFO, socket or other non-regular file.
	ErrSpecialFile = errors.New("special file not allowed")
	// ErrSetuid: a setuid or setgid bit.
	ErrSetuid = errors.New("setuid/setgid bit not allowed")
	// ErrDuplicate: a second entry for a name that is not a directory.
	ErrDuplicate = errors.New("duplicate entry")
	// ErrTooLarge: the total uncompressed size passed MaxTotalSize.
	ErrTooLarge = errors.New("archive too large")
	// ErrTooManyFiles: the entry count passed MaxFiles.
	ErrTooManyFiles = errors.New("too many entries")
	// ErrCompressionRatio: more was expanded than MaxRatio times the
	// compressed bytes read (a decompression bomb).
	ErrCompressionRatio = errors.New("compression ratio too high")
	// ErrTargetExists: the target exists and is not an empty directory.
	ErrTargetExists = errors.New("target exists")
	// ErrUnknownFormat: neither tar, gzip-compressed tar nor zip.
	ErrUnknownFormat = errors.New("unknown archive format")
)

// EntryError is a refusal of one archive entry.
type EntryError struct {
	// Entry is the entry's name as stored in the archive.
	Entry string
	// Detail says more, for example the link target; may be empty.
	Detail string
	// Err is one of the Err* reasons above, or an I/O error.
	Err error
}

func (e *EntryError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("archive entry %q: %v (%s)", e.Entry, e.Err, e.Detail)
	}
	return fmt.Sprintf("archive entry %q: %v", e.Entry, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

// Format is an archive format.
type Format int

// Archive formats.
const (
	// FormatAuto detects the format from the first bytes.
	FormatAuto Format = iota
	FormatTar
	FormatTarGz
	FormatZip
)

func (f Format) String() string {
	switch f {
	case FormatTar:
		return "tar"
	case FormatTarGz:
		return "tar.gz"
	case FormatZip:
		return "zip"
	}
	return "auto"
}

// Config bounds an extraction. Zero values are the defaults.
type Config struct {
	// MaxTotalSize caps the sum of the extracted files' sizes. Default
	// 1 GiB.
	MaxTotalSize int64
	// MaxFiles caps the number of entries. Default 100,000.
	MaxFiles int
	// MaxRatio caps uncompressed bytes per compressed byte read, checked
	// once RatioFloor bytes have been expanded. Default 200.
	MaxRatio float64
	// RatioFloor is how many uncompressed bytes may be written before
	// the ratio applies (small archives of text legitimately compress
	// very well). Default 4 MiB.
	RatioFloor int64
	// Logger receives one debug line per archive; nil means
	// slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.MaxTotalSize < 0 || c.MaxFiles < 0 || c.MaxRatio < 0 || c.RatioFloor < 0 {
		return c, fmt.Errorf("extract: extract config: negative limit")
	}
	if c.MaxTotalSize == 0 {
		c.MaxTotalSize = 1 << 30
	}
	if c.MaxFiles == 0 {
		c.MaxFiles = 100_000
	}
	if c.MaxRatio == 0 {
		c.MaxRatio = 200
	}
	if c.RatioFloor == 0 {
		c.RatioFloor = 4 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// FromFile extracts the archive at archivePath into target (see Extract).
func FromFile(ctx context.Context, archivePath, target string, format Format, cfg Config) error {
	f, err := os.Open(archivePath)
	if err != nil {
		return fmt.Errorf("extract: extract %s: %w", archivePath, err)
	}
	defer f.Close()
	if err := Extract(ctx, f, target, format, cfg); err != nil {
		return fmt.Errorf("extract: extract %s: %w", archivePath, err)
	}
	return nil
}

// Extract reads a tar, gzip-compressed tar or zip archive from r and
// extracts it into target, which must not exist or be an empty directory.
//
// It writes into a private temporary directory beside target and renames it
// into place only when every entry was accepted, so a refused archive leaves
// nothing behind and nothing is ever written outside target. It refuses, with
// an *EntryError naming the entry: absolute names and ".." components, names
// that go through a symbolic link, symbolic links that resolve outside the
// root, hard links to anything but a regular file already extracted, device,
// FIFO and socket files, setuid and setgid bits, duplicate names, and archives
// past the configured size, count and compression-ratio limits. Extracted
// files get their permission bits (at least owner read/write); owners and
// times are not restored.
//
// A zip archive needs random access: an *os.File holding a regular file, or
// a reader with ReadAt and Size (*bytes.Reader, *io.SectionReader), is read
// whole from its start; any other reader is spooled to a temporary file
// first.
func Extract(ctx context.Context, r io.Reader, target string, format Format, cfg Config) (err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return err
	}
	target = filepath.Clean(target)
	if fi, err := os.Lstat(target); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("extract: extract into %s: %w", target, ErrTargetExists)
		}
		ents, err := os.ReadDir(target)
		if err != nil {
			return fmt.Errorf("extract: extract into %s: %w", target, err)
		}
		if len(ents) > 0 {
			return fmt.Errorf("extract: extract into %s: %w (not empty)", target, ErrTargetExists)
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(target), "."+filepath.Base(target)+".extract-")
	if err != nil {
		return fmt.Errorf("extract: extract into %s: %w", target, err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	x := &extractor{cfg: cfg, root: tmp, seen: map[string]bool{}}
	br := bufio.NewReader(r)
	if format == FormatAuto {
		head, _ := br.Peek(512)
		format = detect(head)
		if format == FormatAuto {
			return fmt.Errorf("extract: extract into %s: %w", target, ErrUnknownFormat)
		}
	}
	switch format {
	case FormatTar:
		x.counted = &countingReader{r: br}
		err = x.tar(ctx, x.counted)
	case FormatTarGz:
		x.counted = &countingReader{r: br}
		gz, gerr := gzip.NewReader(x.counted)
		if gerr != nil {
			return fmt.Errorf("extract: extract into %s: gzip: %w", target, gerr)
		}
		err = x.tar(ctx, gz)
	case FormatZip:
		err = x.zipFrom(ctx, r, br)
	default:
		return fmt.Errorf("extract: extract into %s: %w", target, ErrUnknownFormat)
	}
	if err != nil {
		return err
	}
	if err = x.checkLinks(); err != nil {
		return err
	}
	if err = os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("extract: extract into %s: %w", target, err)
	}
	// An empty target directory is replaced (rename(2) onto an empty
	// directory is refused on some filesystems, overlayfs among them).
	if rerr := os.Remove(target); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		return fmt.Errorf("extract: extract into %s: %w", target, ErrTargetExists)
	}
	if err = os.Rename(tmp, target); err != nil {
		return fmt.Errorf("extract: extract into %s: rename: %w", target, err)
	}
	cfg.Logger.Debug("extracted archive", "target", target, "format", format.String(), "entries", x.files, "bytes", x.written)
	return nil
}

func detect(head []byte) Format {
	switch {
	case len(head) >= 4 && bytes.Equal(head[:4], []byte("PK\x03\x04")), len(head) >= 4 && bytes.Equal(head[:4], []byte("PK\x05\x06")):
		return FormatZip
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return FormatTarGz
	case len(head) >= 262 && (string(head[257:262]) == "ustar"):
		return FormatTar
	}
	return FormatAuto
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type extractor struct {
	cfg     Config
	root    string
	seen    map[string]bool // cleaned relative names of non-directories
	links   []string        // entries (names) of symlinks, for the final check
	files   int
	written int64
	// counted counts compressed bytes read (tar); for zip compressed is
	// set from the archive size.
	counted    *countingReader
	compressed int64
}

func (x *extractor) compressedSoFar() int64 {
	if x.counted != nil {
		return x.counted.n
	}
	return x.compressed
}

// cleanName validates an entry name and returns it as a clean relative
// slash path, or "" for the root itself.
func cleanName(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "\x00\\") {
		return "", ErrUnsafePath
	}
	if strings.HasPrefix(name, "/") {
		return "", ErrUnsafePath
	}
	var parts []string
	for _, p := range strings.Split(name, "/") {
		switch p {
		case "", ".":
			continue
		case "..":
			return "", ErrUnsafePath
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "/"), nil
}

func (x *extractor) count(entry string) error {
	x.files++
	if x.files > x.cfg.MaxFiles {
		return &EntryError{Entry: entry, Detail: fmt.Sprintf("limit %d", x.cfg.MaxFiles), Err: ErrTooManyFiles}
	}
	return nil
}

// ensureDir creates rel (a clean relative path) and its parents under the
// root, refusing to go through anything that is not a real directory.
func (x *extractor) ensureDir(entry, rel string) error {
	if rel == "" {
		return nil
	}
	cur := x.root
	for _, p := range strings.Split(rel, "/") {
		cur = filepath.Join(cur, p)
		fi, err := os.Lstat(cur)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(cur, 0o755); err != nil {
				return &EntryError{Entry: entry, Err: err}
			}
		case err != nil:
			return &EntryError{Entry: entry, Err: err}
		case fi.Mode()&fs.ModeSymlink != 0:
			return &EntryError{Entry: entry, Detail: "goes through a symbolic link", Err: ErrUnsafePath}
		case !fi.IsDir():
			return &EntryError{Entry: entry, Detail: "parent is not a directory", Err: ErrUnsafePath}
		}
	}
	return nil
}

// prepare checks an entry's name and mode bits and creates its parent
// directories. It returns the clean relative name.
func (x *extractor) prepare(entry string, mode fs.FileMode, isDir bool) (string, error) {
	if err := x.count(entry); err != nil {
		return "", err
	}
	rel, err := cleanName(entry)
	if err != nil {
		return "", &EntryError{Entry: entry, Err: err}
	}
	if mode&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
		return "", &EntryError{Entry: entry, Detail: fmt.Sprintf("mode %v", mode), Err: ErrSetuid}
	}
	if rel == "" {
		if isDir {
			return "", nil
		}
		return "", &EntryError{Entry: entry, Err: ErrUnsafePath}
	}
	if !isDir {
		if x.seen[rel] {
			return "", &EntryError{Entry: entry, Err: ErrDuplicate}
		}
	}
	if dir := path.Dir(rel); dir != "." {
		if err := x.ensureDir(entry, dir); err != nil {
			return "", err
		}
	}
	if !isDir {
		// The name itself must not exist yet (a directory of that name
		// would be replaced; refuse that as a duplicate).
		if _, err := os.Lstat(filepath.Join(x.root, rel)); err == nil {
			return "", &EntryError{Entry: entry, Err: ErrDuplicate}
		}
		x.seen[rel] = true
	}
	return rel, nil
}

func (x *extractor) writeFile(ctx context.Context, entry, rel string, mode fs.FileMode, r io.Reader, declared int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if declared > x.cfg.MaxTotalSize-x.written {
		return &EntryError{Entry: entry, Detail: fmt.Sprintf("limit %d bytes", x.cfg.MaxTotalSize), Err: ErrTooLarge}
	}
	perm := mode.Perm() | 0o600
	f, err := os.OpenFile(filepath.Join(x.root, filepath.FromSlash(rel)), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscallNoFollow, perm)
	if err != nil {
		return &EntryError{Entry: entry, Err: err}
	}
	buf := make([]byte, 32<<10)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			x.written += int64(n)
			if x.written > x.cfg.MaxTotalSize {
				f.Close()
				return &EntryError{Entry: entry, Detail: fmt.Sprintf("limit %d bytes", x.cfg.MaxTotalSize), Err: ErrTooLarge}
			}
			if x.written > x.cfg.RatioFloor {
				if c := x.compressedSoFar(); float64(x.written) > x.cfg.MaxRatio*float64(max(c, 1)) {
					f.Close()
					return &EntryError{Entry: entry, Detail: fmt.Sprintf("%d bytes from %d compressed, limit %gx", x.written, c, x.cfg.MaxRatio), Err: ErrCompressionRatio}
				}
			}
			if _, err := f.Write(buf[:n]); err != nil {
				f.Close()
				return &EntryError{Entry: entry, Err: err}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			f.Close()
			return &EntryError{Entry: entry, Err: rerr}
		}
	}
	if err := f.Close(); err != nil {
		return &EntryError{Entry: entry, Err: err}
	}
	// Apply the permission bits exactly (umask may have cleared some).
	if err := os.Chmod(filepath.Join(x.root, filepath.FromSlash(rel)), perm); err != nil {
		return &EntryError{Entry: entry, Err: err}
	}
	return nil
}

// linkInside reports whether a symbolic link at rel with this target stays
// inside the root lexically.
func linkInside(rel, target string) bool {
	if target == "" || strings.HasPrefix(target, "/") || strings.ContainsAny(target, "\x00\\") {
		return false
	}
	joined := path.Join(path.Dir(rel), target)
	return joined != ".." && !strings.HasPrefix(joined, "../")
}

func (x *extractor) symlink(entry, rel, target string) error {
	if !linkInside(rel, target) {
		return &EntryError{Entry: entry, Detail: "-> " + target, Err: ErrLinkEscape}
	}
	if err := os.Symlink(target, filepath.Join(x.root, filepath.FromSlash(rel))); err != nil {
		return &EntryError{Entry: entry, Err: err}
	}
	x.links = append(x.links, rel)
	return nil
}

func (x *extractor) hardlink(entry, rel, target string) error {
	trel, err := cleanName(target)
	if err != nil || trel == "" {
		return &EntryError{Entry: entry, Detail: "=> " + target, Err: ErrLinkEscape}
	}
	// The target must be a regular file this archive already extracted,
	// reached without going through a symbolic link.
	if !x.seen[trel] {
		return &EntryError{Entry: entry, Detail: "=> " + target + " (not an earlier entry)", Err: ErrLinkEscape}
	}
	cur := x.root
	parts := strings.Split(trel, "/")
	for i, p := range parts {
		cur = filepath.Join(cur, p)
		fi, err := os.Lstat(cur)
		if err != nil {
			return &EntryError{Entry: entry, Detail: "=> " + target, Err: err}
		}
		if i < len(parts)-1 && !fi.IsDir() || i == len(parts)-1 && !fi.Mode().IsRegular() {
			return &EntryError{Entry: entry, Detail: "=> " + target + " (not a regular file)", Err: ErrLinkEscape}
		}
	}
	if err := os.Link(cur, filepath.Join(x.root, filepath.FromSlash(rel))); err != nil {
		return &EntryError{Entry: entry, Err: err}
	}
	return nil
}

// checkLinks resolves every symbolic link through the final tree and refuses
// one that, following other links, ends outside the root (a -> . then
// b -> a/.. is lexically inside but escapes).
func (x *extractor) checkLinks() error {
	for _, rel := range x.links {
		if !resolvesInside(x.root, rel, 0) {
			t, _ := os.Readlink(filepath.Join(x.root, filepath.FromSlash(rel)))
			return &EntryError{Entry: rel, Detail: "-> " + t, Err: ErrLinkEscape}
		}
	}
	return nil
}

// resolvesInside follows rel (relative to root) component by component,
// expanding symbolic links, and reports whether it never leaves the root.
// A path that does not exist at the end is fine (dangling but inside).
func resolvesInside(root, rel string, depth int) bool {
	if depth > 40 {
		return false
	}
	var stack []string // resolved components
	parts := strings.Split(rel, "/")
	for i := 0; i < len(parts); i++ {
		p := parts[i]
		switch p {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return false
			}
			stack = stack[:len(stack)-1]
			continue
		}
		cur := filepath.Join(append([]string{root}, stack...)...)
		cur = filepath.Join(cur, p)
		fi, err := os.Lstat(cur)
		if err != nil {
			stack = append(stack, p)
			continue
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			stack = append(stack, p)
			continue
		}
		t, err := os.Readlink(cur)
		if err != nil || strings.HasPrefix(t, "/") {
			return false
		}
		depth++
		if depth > 40 {
			return false
		}
		rest := append(strings.Split(t, "/"), parts[i+1:]...)
		parts = append(append([]string{}, stack...), rest...)
		stack = stack[:0]
		i = -1
	}
	return true
}

func (x *extractor) tar(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("extract: read tar after %d entries: %w", x.files, err)
		}
		mode := h.FileInfo().Mode()
		switch h.Typeflag {
		case tar.TypeDir:
			rel, err := x.prepare(h.Name, mode, true)
			if err != nil {
				return err
			}
			if err := x.ensureDir(h.Name, rel); err != nil {
				return err
			}
		case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
			if h.Typeflag == tar.TypeGNUSparse {
				return &EntryError{Entry: h.Name, Detail: "sparse file", Err: ErrSpecialFile}
			}
			rel, err := x.prepare(h.Name, mode, false)
			if err != nil {
				return err
			}
			if err := x.writeFile(ctx, h.Name, rel, mode, tr, h.Size); err != nil {
				return err
			}
		case tar.TypeSymlink:
			rel, err := x.prepare(h.Name, mode, false)
			if err != nil {
				return err
			}
			if err := x.symlink(h.Name, rel, h.Linkname); err != nil {
				return err
			}
		case tar.TypeLink:
			rel, err := x.prepare(h.Name, mode&^fs.ModeType, false)
			if err != nil {
				return err
			}
			if err := x.hardlink(h.Name, rel, h.Linkname); err != nil {
				return err
			}
		case tar.TypeXGlobalHeader:
			continue
		default:
			if err := x.count(h.Name); err != nil {
				return err
			}
			return &EntryError{Entry: h.Name, Detail: fmt.Sprintf("tar type %q", h.Typeflag), Err: ErrSpecialFile}
		}
	}
}

// zipFrom gets random access to a zip archive and extracts it.
func (x *extractor) zipFrom(ctx context.Context, orig io.Reader, br *bufio.Reader) error {
	if f, ok := orig.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			return x.zip(ctx, f, fi.Size())
		}
	}
	if ra, ok := orig.(interface {
		io.ReaderAt
		Size() int64
	}); ok {
		return x.zip(ctx, ra, ra.Size())
	}
	spool, err := os.CreateTemp(x.root, ".spool-")
	if err != nil {
		return fmt.Errorf("extract: spool zip: %w", err)
	}
	name := spool.Name()
	defer func() {
		spool.Close()
		_ = os.Remove(name)
	}()
	// A zip stores each entry at least once: an archive much bigger than
	// MaxTotalSize cannot be within the limit.
	limit := x.cfg.MaxTotalSize + x.cfg.MaxTotalSize/8 + 1<<20
	n, err := io.Copy(spool, io.LimitReader(br, limit+1))
	if err != nil {
		return fmt.Errorf("extract: spool zip: %w", err)
	}
	if n > limit {
		return &EntryError{Entry: "(archive)", Detail: fmt.Sprintf("limit %d bytes", x.cfg.MaxTotalSize), Err: ErrTooLarge}
	}
	// The spool is not part of the tree: remove it from the root before
	// the entries are checked.
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("extract: spool zip: %w", err)
	}
	return x.zip(ctx, spool, n)
}

func (x *extractor) zip(ctx context.Context, ra io.ReaderAt, size int64) error {
	zr, err := zip.NewReader(ra, size)
	if err != nil {
		return fmt.Errorf("extract: read zip: %w", err)
	}
	x.compressed = size
	if len(zr.File) > x.cfg.MaxFiles {
		return &EntryError{Entry: zr.File[x.cfg.MaxFiles].Name, Detail: fmt.Sprintf("%d entries, limit %d", len(zr.File), x.cfg.MaxFiles), Err: ErrTooManyFiles}
	}
	for _, zf := range zr.File {
		if err := ctx.Err(); err != nil {
			return err
		}
		mode := zf.Mode()
		isDir := strings.HasSuffix(zf.Name, "/") || mode.IsDir()
		switch {
		case isDir:
			rel, err := x.prepare(zf.Name, mode, true)
			if err != nil {
				return err
			}
			if err := x.ensureDir(zf.Name, rel); err != nil {
				return err
			}
		case mode&fs.ModeSymlink != 0:
			rel, err := x.prepare(zf.Name, mode, false)
			if err != nil {
				return err
			}
			rc, err := zf.Open()
			if err != nil {
				return &EntryError{Entry: zf.Name, Err: err}
			}
			target, err := io.ReadAll(io.LimitReader(rc, 4097))
			rc.Close()
			if err != nil {
				return &EntryError{Entry: zf.Name, Err: err}
			}
			if len(target) > 4096 {
				return &EntryError{Entry: zf.Name, Detail: "link target too long", Err: ErrLinkEscape}
			}
			if err := x.symlink(zf.Name, rel, string(target)); err != nil {
				return err
			}
		case mode.IsRegular():
			rel, err := x.prepare(zf.Name, mode, false)
			if err != nil {
				return err
			}
			declared := int64(zf.UncompressedSize64)
			if zf.UncompressedSize64 > uint64(x.cfg.MaxTotalSize) {
				return &EntryError{Entry: zf.Name, Detail: fmt.Sprintf("limit %d bytes", x.cfg.MaxTotalSize), Err: ErrTooLarge}
			}
			if zf.CompressedSize64 > 0 && declared > x.cfg.RatioFloor && float64(declared) > x.cfg.MaxRatio*float64(zf.CompressedSize64) {
				return &EntryError{Entry: zf.Name, Detail: fmt.Sprintf("%d bytes from %d compressed, limit %gx", declared, zf.CompressedSize64, x.cfg.MaxRatio), Err: ErrCompressionRatio}
			}
			rc, err := zf.Open()
			if err != nil {
				return &EntryError{Entry: zf.Name, Err: err}
			}
			// Never trust the declared size: read at most one byte
			// more and refuse a mismatch.
			lr := &io.LimitedReader{R: rc, N: declared + 1}
			err = x.writeFile(ctx, zf.Name, rel, mode, lr, declared)
			rc.Close()
			if err != nil {
				return err
			}
			if lr.N == 0 {
				return &EntryError{Entry: zf.Name, Detail: "more data than its declared size", Err: ErrTooLarge}
			}
		default:
			if err := x.count(zf.Name); err != nil {
				return err
			}
			return &EntryError{Entry: zf.Name, Detail: fmt.Sprintf("mode %v", mode), Err: ErrSpecialFile}
		}
	}
	return nil
}
