package extract

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzExtract feeds arbitrary bytes (seeded with the hostile archives of the
// unit tests, kept in testdata/fuzz/FuzzExtract) to Extract and checks the
// invariants that must hold whatever the input: nothing is written beside
// the target, a refused archive leaves no target, and an accepted tree has
// no special files, no setuid/setgid bits and no link that resolves outside.
func FuzzExtract(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		target := filepath.Join(parent, "app")
		err := Extract(context.Background(), bytes.NewReader(data), target, FormatAuto,
			Config{MaxTotalSize: 8 << 20, MaxFiles: 1000, RatioFloor: 1 << 20})
		ents, rerr := os.ReadDir(parent)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if err != nil {
			if len(ents) != 0 {
				t.Fatalf("refused archive (%v) left %d entries beside the target", err, len(ents))
			}
			return
		}
		if len(ents) != 1 || ents[0].Name() != "app" {
			t.Fatalf("accepted archive left %v beside the target", ents)
		}
		werr := filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			m := fi.Mode()
			if m&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
				t.Fatalf("%s has mode %v", p, m)
			}
			if m&(fs.ModeDevice|fs.ModeNamedPipe|fs.ModeSocket|fs.ModeCharDevice) != 0 {
				t.Fatalf("%s is special: %v", p, m)
			}
			if m&fs.ModeSymlink != 0 {
				rel, _ := filepath.Rel(target, p)
				if !resolvesInside(target, filepath.ToSlash(rel), 0) {
					t.Fatalf("%s resolves outside", p)
				}
				real, err := filepath.EvalSymlinks(p)
				if err == nil && real != target && !strings.HasPrefix(real, target+string(filepath.Separator)) {
					t.Fatalf("%s -> %s is outside %s", p, real, target)
				}
			}
			return nil
		})
		if werr != nil {
			t.Fatal(werr)
		}
	})
}

func fuzzSeeds(t testing.TB) [][]byte {
	return [][]byte{
		tarball(t, false, entry{name: "a/b", data: "x"}, entry{name: "l", typ: tar.TypeSymlink, linkname: "a/b"}),
		tarball(t, true, entry{name: "../evil", data: "x"}),
		tarball(t, false, entry{name: "l", typ: tar.TypeSymlink, linkname: "."}, entry{name: "m", typ: tar.TypeSymlink, linkname: "l/.."}),
		tarball(t, false, entry{name: "p", typ: tar.TypeLink, linkname: "/etc/passwd"}),
		tarball(t, false, entry{name: "real/", typ: tar.TypeDir, mode: 0o755}, entry{name: "alias", typ: tar.TypeSymlink, linkname: "real"}, entry{name: "alias/f", data: "x"}),
		tarball(t, false, entry{name: "f", data: "x"}, entry{name: "h", typ: tar.TypeLink, linkname: "f"}),
		zipball(t, entry{name: "../../zs", data: "x"}),
		zipball(t, entry{name: "d/", typ: '5'}, entry{name: "d/f", data: "y"}, entry{name: "s", typ: '2', linkname: "d/f"}),
		zipball(t, entry{name: "s", typ: '2', linkname: "../x"}),
	}
}
