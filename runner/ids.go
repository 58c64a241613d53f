package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// ErrNoFreeUID is returned when every UID of the configured range is taken.
var ErrNoFreeUID = errors.New("runner: no free UID left in the configured range")

// uidTable allocates one UID (used as GID too) per app from [min, max] and
// keeps the allocation in a JSON file so an app keeps its UID across
// restarts of the runner: its data directory stays its own.
type uidTable struct {
	mu   sync.Mutex
	path string
	min  int
	max  int
	byID map[string]int
	used map[int]string
}

func openUIDTable(path string, min, max int) (*uidTable, error) {
	t := &uidTable{path: path, min: min, max: max, byID: map[string]int{}, used: map[int]string{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("runner: read UID table: %w", err)
	}
	var m map[string]int
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("runner: UID table %s is corrupt: %w", path, err)
	}
	for app, uid := range m {
		// An allocation outside the range is refused rather than used
		// or dropped: the file is trusted by root, and dropping an
		// entry would hand the app's data to whichever app gets the
		// UID next. The operator fixes the file or the range.
		if uid == 0 {
			return nil, fmt.Errorf("runner: UID table %s gives app %q UID 0 (root): refused; apps never run as root (tampered file? remove the entry or restore the file)", path, app)
		}
		if uid < min || uid > max {
			return nil, fmt.Errorf("runner: UID table %s gives app %q UID %d, outside the configured range %d-%d: refused (restore the file, or widen Config.UIDMin/UIDMax if the range was changed)", path, app, uid, min, max)
		}
		if !nameRE.MatchString(app) {
			return nil, fmt.Errorf("runner: UID table %s names app %q, which is not a valid app name: refused", path, app)
		}
		if other, ok := t.used[uid]; ok {
			return nil, fmt.Errorf("runner: UID table %s gives UID %d to both %q and %q", path, uid, other, app)
		}
		t.byID[app] = uid
		t.used[uid] = app
	}
	return t, nil
}

// get returns app's UID, allocating and persisting one if it has none.
func (t *uidTable) get(app string) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if uid, ok := t.byID[app]; ok {
		return uid, nil
	}
	// Start at a point derived from the name so allocation order does not
	// matter much, then probe linearly.
	n := t.max - t.min + 1
	h := 0
	for _, c := range app {
		h = (h*31 + int(c)) % n
	}
	for i := 0; i < n; i++ {
		uid := t.min + (h+i)%n
		if _, taken := t.used[uid]; taken {
			continue
		}
		t.byID[app] = uid
		t.used[uid] = app
		if err := t.save(); err != nil {
			delete(t.byID, app)
			delete(t.used, uid)
			return 0, err
		}
		return uid, nil
	}
	return 0, fmt.Errorf("%w (%d-%d) for app %q", ErrNoFreeUID, t.min, t.max, app)
}

// save writes the table atomically: temp file, fsync, rename, fsync dir.
func (t *uidTable) save() error {
	b, err := json.MarshalIndent(t.byID, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(t.path, b, 0o600); err != nil {
		return fmt.Errorf("runner: save UID table: %w", err)
	}
	return nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(mode)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return werr
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	if cerr := d.Close(); serr == nil {
		serr = cerr
	}
	return serr
}
