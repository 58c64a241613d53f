package extract

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

type entry struct {
	name     string
	typ      byte // tar type flag; for zip: '0' file, '5' dir, '2' symlink
	mode     int64
	data     string
	linkname string
}

func tarball(t testing.TB, gz bool, es ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var tw *tar.Writer
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		tw = tar.NewWriter(zw)
	} else {
		tw = tar.NewWriter(&buf)
	}
	for _, e := range es {
		if e.typ == 0 {
			e.typ = tar.TypeReg
		}
		if e.mode == 0 {
			e.mode = 0o644
		}
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.linkname, Format: tar.FormatPAX}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		require.NoError(t, tw.WriteHeader(h))
		if e.typ == tar.TypeReg {
			_, err := tw.Write([]byte(e.data))
			require.NoError(t, err)
		}
	}
	require.NoError(t, tw.Close())
	if gz {
		require.NoError(t, zw.Close())
	}
	return buf.Bytes()
}

func zipball(t testing.TB, es ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range es {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		mode := fs.FileMode(e.mode)
		if mode == 0 {
			mode = 0o644
		}
		switch e.typ {
		case '5':
			mode |= fs.ModeDir
		case '2':
			mode |= fs.ModeSymlink
			e.data = e.linkname
		}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		require.NoError(t, err)
		_, err = w.Write([]byte(e.data))
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

// extractInto extracts data into parent/app and returns the target and the
// error.
func extractInto(t *testing.T, data []byte, cfg Config) (string, error) {
	t.Helper()
	parent := t.TempDir()
	target := filepath.Join(parent, "app")
	err := Extract(context.Background(), bytes.NewReader(data), target, FormatAuto, cfg)
	return target, err
}

// requireRefused checks the error's reason and entry, and that nothing at
// all was left beside (or in) the target.
func requireRefused(t *testing.T, target string, err error, reason error, entryName string) {
	t.Helper()
	require.Error(t, err)
	require.ErrorIs(t, err, reason)
	var ee *EntryError
	require.True(t, errors.As(err, &ee), "want *EntryError, got %T %v", err, err)
	require.Equal(t, entryName, ee.Entry)
	require.Contains(t, err.Error(), fmt.Sprintf("%q", entryName))
	ents, rerr := os.ReadDir(filepath.Dir(target))
	require.NoError(t, rerr)
	require.Empty(t, ents, "a refused archive must leave nothing behind")
}

func TestExtractTarGzAndZip(t *testing.T) {
	es := []entry{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "app/", typ: tar.TypeDir, mode: 0o755},
		{name: "app/main.py", data: "print('hi')\n"},
		{name: "app/run.sh", data: "#!/bin/sh\n", mode: 0o755},
		{name: "deep/a/b/c.txt", data: "c"},
		{name: "current", typ: tar.TypeSymlink, linkname: "app"},
		{name: "app/link-up", typ: tar.TypeSymlink, linkname: "../deep/a/b/c.txt"},
		{name: "app/hard", typ: tar.TypeLink, linkname: "app/main.py"},
	}
	for _, format := range []string{"tar", "tar.gz", "zip"} {
		t.Run(format, func(t *testing.T) {
			var data []byte
			switch format {
			case "tar":
				data = tarball(t, false, es...)
			case "tar.gz":
				data = tarball(t, true, es...)
			case "zip":
				var zes []entry
				for _, e := range es {
					switch e.typ {
					case tar.TypeDir:
						e.typ = '5'
					case tar.TypeSymlink:
						e.typ = '2'
					case tar.TypeLink:
						continue
					}
					zes = append(zes, e)
				}
				data = zipball(t, zes...)
			}
			target, err := extractInto(t, data, Config{})
			require.NoError(t, err)
			b, err := os.ReadFile(filepath.Join(target, "current", "main.py"))
			require.NoError(t, err)
			require.Equal(t, "print('hi')\n", string(b))
			fi, err := os.Stat(filepath.Join(target, "app", "run.sh"))
			require.NoError(t, err)
			require.Equal(t, fs.FileMode(0o755), fi.Mode().Perm())
			b, err = os.ReadFile(filepath.Join(target, "app", "link-up"))
			require.NoError(t, err)
			require.Equal(t, "c", string(b))
			if format != "zip" {
				b, err = os.ReadFile(filepath.Join(target, "app", "hard"))
				require.NoError(t, err)
				require.Equal(t, "print('hi')\n", string(b))
			}
			ents, err := os.ReadDir(filepath.Dir(target))
			require.NoError(t, err)
			require.Len(t, ents, 1, "only the target beside it")
		})
	}
}

func TestExtractZipSlip(t *testing.T) {
	data := zipball(t, entry{name: "ok.txt", data: "fine"}, entry{name: "../../evil.sh", data: "#!/bin/sh\nrm -rf /\n"})
	target, err := extractInto(t, data, Config{})
	requireRefused(t, target, err, ErrUnsafePath, "../../evil.sh")
	_, serr := os.Stat(filepath.Join(filepath.Dir(filepath.Dir(target)), "evil.sh"))
	require.ErrorIs(t, serr, fs.ErrNotExist)

	// The same in a tar, hidden in the middle of a path.
	data = tarball(t, true, entry{name: "a/../../../evil", data: "x"})
	target, err = extractInto(t, data, Config{})
	requireRefused(t, target, err, ErrUnsafePath, "a/../../../evil")
}

func TestExtractAbsolutePath(t *testing.T) {
	data := tarball(t, false, entry{name: "/tmp/paaskit-abs-evil", data: "x"})
	target, err := extractInto(t, data, Config{})
	requireRefused(t, target, err, ErrUnsafePath, "/tmp/paaskit-abs-evil")
	_, serr := os.Stat("/tmp/paaskit-abs-evil")
	require.ErrorIs(t, serr, fs.ErrNotExist)
}

func TestExtractBackslashName(t *testing.T) {
	data := zipball(t, entry{name: `..\..\evil.bat`, data: "x"})
	target, err := extractInto(t, data, Config{})
	requireRefused(t, target, err, ErrUnsafePath, `..\..\evil.bat`)
}

func TestExtractSymlinkEscape(t *testing.T) {
	for _, link := range []string{"../../outside", "/etc", "a/../../.."} {
		t.Run(link, func(t *testing.T) {
			data := tarball(t, true, entry{name: "esc", typ: tar.TypeSymlink, linkname: link})
			target, err := extractInto(t, data, Config{})
			requireRefused(t, target, err, ErrLinkEscape, "esc")
		})
	}
	data := zipball(t, entry{name: "esc", typ: '2', linkname: "/etc/passwd"})
	target, err := extractInto(t, data, Config{})
	requireRefused(t, target, err, ErrLinkEscape, "esc")
}

func TestExtractSymlinkThenWriteThroughIt(t *testing.T) {
	outside := t.TempDir()
	// An escaping link is refused before anything is written through it.
	data := tarball(t, false,
		entry{name: "dir", typ: tar.TypeSymlink, linkname: outside},
		entry{name: "dir/pwned", data: "x"})
	target, err := extractInto(t, data, Config{})
	requireRefused(t, target, err, ErrLinkEscape, "dir")
	ents, _ := os.ReadDir(outside)
	require.Empty(t, ents)

	// Even a link that stays inside is never written through: the
	// second entry would otherwise land wherever the link points.
	data = tarball(t, false,
		entry{name: "real/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "alias", typ: tar.TypeSymlink, linkname: "real"},
		entry{name: "alias/file", data: "x"})
	target, err = extractInto(t, data, Config{})
	requireRefused(t, target, err, ErrUnsafePath, "alias/file")

	// Same in zip.
	zdata := zipball(t,
		entry{name: "l", typ: '2', linkname: "."},
		entry{name: "l/x", data: "x"})
	target, err = extractInto(t, zdata, Config{})
	requireRefused(t, target, err, ErrUnsafePath, "l/x")
}

func TestExtractSymlinkChainEscape(t *testing.T) {
	// Each link is lexically inside, but b -> a/.. with a -> . escapes.
	data := tarball(t, false,
		entry{name: "a", typ: tar.TypeSymlink, linkname: "."},
		entry{name: "b", typ: tar.TypeSymlink, linkname: "a/.."})
	target, err := extractInto(t, data, Config{})
	requireRefused(t, target, err, ErrLinkEscape, "b")
}

func TestExtractHardLinkToEtcPasswd(t *testing.T) {
	for _, link := range []string{"/etc/passwd", "../../../../../../etc/passwd", "etc/passwd"} {
		t.Run(link, func(t *testing.T) {
			data := tarball(t, false, entry{name: "passwd", typ: tar.TypeLink, linkname: link})
			target, err := extractInto(t, data, Config{})
			requireRefused(t, target, err, ErrLinkEscape, "passwd")
		})
	}
	// A hard link to a symlink that points inside is refused too (it
	// would be a second name for the link, not for a file we wrote).
	data := tarball(t, false,
		entry{name: "f", data: "x"},
		entry{name: "s", typ: tar.TypeSymlink, linkname: "f"},
		entry{name: "h", typ: tar.TypeLink, linkname: "s"})
	target, err := extractInto(t, data, Config{})
	requireRefused(t, target, err, ErrLinkEscape, "h")
}

func TestExtractDecompressionBomb(t *testing.T) {
	zeros := strings.Repeat("\x00", 32<<20)
	data := tarball(t, true, entry{name: "bomb.bin", data: zeros})
	require.Less(t, len(data), 100<<10)
	target, err := extractInto(t, data, Config{})
	requireRefused(t, target, err, ErrCompressionRatio, "bomb.bin")

	zdata := zipball(t, entry{name: "bomb.bin", data: zeros})
	target, err = extractInto(t, zdata, Config{})
	requireRefused(t, target, err, ErrCompressionRatio, "bomb.bin")

	// The same archive is fine when the limit allows it.
	_, err = extractInto(t, data, Config{MaxRatio: 1e6})
	require.NoError(t, err)
}

func TestExtractZipLyingAboutSize(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	payload := []byte(strings.Repeat("A", 1<<20))
	var comp bytes.Buffer
	fw, err := flateWriter(&comp)
	require.NoError(t, err)
	_, _ = fw.Write(payload)
	require.NoError(t, fw.Close())
	h := &zip.FileHeader{Name: "liar.bin", Method: zip.Deflate, CRC32: crc32.ChecksumIEEE(payload),
		CompressedSize64: uint64(comp.Len()), UncompressedSize64: 10}
	h.SetMode(0o644)
	w, err := zw.CreateRaw(h)
	require.NoError(t, err)
	_, err = w.Write(comp.Bytes())
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	target, err := extractInto(t, buf.Bytes(), Config{})
	require.Error(t, err)
	var ee *EntryError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, "liar.bin", ee.Entry)
	ents, _ := os.ReadDir(filepath.Dir(target))
	require.Empty(t, ents)
}

func TestExtractDevicesAndFIFOs(t *testing.T) {
	for _, typ := range []byte{tar.TypeChar, tar.TypeBlock, tar.TypeFifo} {
		t.Run(fmt.Sprintf("type-%c", typ), func(t *testing.T) {
			data := tarball(t, false, entry{name: "ok", data: "x"}, entry{name: "dev", typ: typ})
			target, err := extractInto(t, data, Config{})
			requireRefused(t, target, err, ErrSpecialFile, "dev")
		})
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: "fifo"}
	h.SetMode(fs.ModeNamedPipe | 0o644)
	_, err := zw.CreateHeader(h)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	target, err := extractInto(t, buf.Bytes(), Config{})
	requireRefused(t, target, err, ErrSpecialFile, "fifo")
}

func TestExtractSetuidSetgid(t *testing.T) {
	for _, mode := range []int64{0o4755, 0o2755} {
		data := tarball(t, false, entry{name: "suid", data: "x", mode: mode})
		target, err := extractInto(t, data, Config{})
		requireRefused(t, target, err, ErrSetuid, "suid")
	}
	zdata := zipball(t, entry{name: "suid", data: "x", mode: int64(fs.ModeSetuid | 0o755)})
	target, err := extractInto(t, zdata, Config{})
	requireRefused(t, target, err, ErrSetuid, "suid")
}

func TestExtractLimits(t *testing.T) {
	var es []entry
	for i := 0; i < 11; i++ {
		es = append(es, entry{name: fmt.Sprintf("f%02d", i), data: "0123456789"})
	}
	target, err := extractInto(t, tarball(t, false, es...), Config{MaxFiles: 10})
	requireRefused(t, target, err, ErrTooManyFiles, "f10")
	target, err = extractInto(t, zipball(t, es...), Config{MaxFiles: 10})
	requireRefused(t, target, err, ErrTooManyFiles, "f10")
	target, err = extractInto(t, tarball(t, true, es...), Config{MaxTotalSize: 55})
	requireRefused(t, target, err, ErrTooLarge, "f05")
	target, err = extractInto(t, zipball(t, es...), Config{MaxTotalSize: 55})
	requireRefused(t, target, err, ErrTooLarge, "f05")
}

func TestExtractDuplicateEntry(t *testing.T) {
	data := tarball(t, false, entry{name: "a", data: "1"}, entry{name: "./a", data: "2"})
	target, err := extractInto(t, data, Config{})
	requireRefused(t, target, err, ErrDuplicate, "./a")
	// A file replacing a directory is a duplicate too.
	data = tarball(t, false, entry{name: "d/x", data: "1"}, entry{name: "d", data: "2"})
	target, err = extractInto(t, data, Config{})
	requireRefused(t, target, err, ErrDuplicate, "d")
}

func TestExtractTargetMustBeEmpty(t *testing.T) {
	parent := t.TempDir()
	target := filepath.Join(parent, "app")
	require.NoError(t, os.MkdirAll(filepath.Join(target, "old"), 0o755))
	err := Extract(context.Background(), bytes.NewReader(tarball(t, false, entry{name: "a", data: "1"})), target, FormatAuto, Config{})
	require.ErrorIs(t, err, ErrTargetExists)
	require.DirExists(t, filepath.Join(target, "old"), "existing content untouched")

	// An empty directory is replaced.
	require.NoError(t, os.RemoveAll(filepath.Join(target, "old")))
	err = Extract(context.Background(), bytes.NewReader(tarball(t, false, entry{name: "a", data: "1"})), target, FormatAuto, Config{})
	require.NoError(t, err)
	require.FileExists(t, filepath.Join(target, "a"))
}

func TestExtractUnknownFormatAndGarbage(t *testing.T) {
	_, err := extractInto(t, []byte("this is not an archive at all"), Config{})
	require.ErrorIs(t, err, ErrUnknownFormat)
	// A truncated tar.gz is an error, and leaves nothing.
	data := tarball(t, true, entry{name: "a", data: strings.Repeat("x", 10000)}, entry{name: "b", data: "y"})
	target, err := extractInto(t, data[:len(data)/2], Config{})
	require.Error(t, err)
	ents, _ := os.ReadDir(filepath.Dir(target))
	require.Empty(t, ents)
}

func TestExtractFileZipFromDisk(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bundle.zip")
	require.NoError(t, os.WriteFile(p, zipball(t, entry{name: "x/y.txt", data: "y"}), 0o644))
	require.NoError(t, FromFile(context.Background(), p, filepath.Join(dir, "out"), FormatAuto, Config{}))
	b, err := os.ReadFile(filepath.Join(dir, "out", "x", "y.txt"))
	require.NoError(t, err)
	require.Equal(t, "y", string(b))
}

func TestExtractConfigValidation(t *testing.T) {
	_, err := extractInto(t, tarball(t, false, entry{name: "a", data: "1"}), Config{MaxFiles: -1})
	require.Error(t, err)
}

func flateWriter(w io.Writer) (*flate.Writer, error) {
	return flate.NewWriter(w, flate.DefaultCompression)
}
