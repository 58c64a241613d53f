package runner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSubIDOverlapsAreFound(t *testing.T) {
	p := filepath.Join(t.TempDir(), "subuid")
	if err := os.WriteFile(p, []byte("# comment\nalice:100000:65536\nbob:250000:10\ncarol:400000:65536\nbroken line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := subIDOverlaps(p, 200000, 299999)
	if len(got) != 1 || !strings.Contains(got[0], "bob IDs 250000-250009") {
		t.Fatalf("overlaps: %q", got)
	}
	if got := subIDOverlaps(p, 165535, 199999); len(got) != 1 || !strings.Contains(got[0], "alice") {
		t.Fatalf("overlaps at the edge: %q", got)
	}
	if got := subIDOverlaps(filepath.Join(t.TempDir(), "none"), 1, 2); got != nil {
		t.Fatalf("missing file: %q", got)
	}
}
