package upload

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Release is one image an app has had live.
type Release struct {
	// Image is the built image.
	Image Image `json:"image"`
	// Revision is the pushed commit (git) or changeset (hg), or
	// "archive" for a deployed archive.
	Revision string `json:"revision"`
	// User is who deployed it.
	User string `json:"user"`
	// Time is when it was first activated.
	Time time.Time `json:"time"`
}

// appReleases is what the store keeps per app, newest first.
type appReleases struct {
	Releases []Release `json:"releases"`
	// Live is the image ID that is live ("" before the first deploy).
	Live string `json:"live"`
}

// ErrNoRelease is returned by Rollback when there is nothing to roll back
// to.
var ErrNoRelease = errors.New("no release to roll back to")

// Releases is the image store's record of each app's releases: the last
// Keep images per app, which one is live, and the image files themselves
// (<dir>/<hex>.squashfs, shared by apps whose trees are identical). It
// removes an image file once no app keeps it. Each app's record is a JSON
// file written atomically; it is safe for concurrent use.
type Releases struct {
	dir  string
	keep int

	mu       sync.Mutex
	building int // builds in flight: pruning waits for none
}

// OpenReleases opens the store in dir (created if missing), keeping keep
// releases per app (at least 1; the live one is always kept).
func OpenReleases(dir string, keep int) (*Releases, error) {
	if keep < 1 {
		return nil, fmt.Errorf("upload: releases: keep %d is less than 1", keep)
	}
	if err := os.MkdirAll(filepath.Join(dir, "releases"), 0o755); err != nil {
		return nil, fmt.Errorf("upload: releases in %s: %w", dir, err)
	}
	return &Releases{dir: dir, keep: keep}, nil
}

// Dir is the store's directory, where images are built.
func (r *Releases) Dir() string { return r.dir }

func (r *Releases) file(app string) string {
	return filepath.Join(r.dir, "releases", app+".json")
}

func (r *Releases) load(app string) (appReleases, error) {
	var ar appReleases
	data, err := os.ReadFile(r.file(app))
	if errors.Is(err, os.ErrNotExist) {
		return ar, nil
	}
	if err != nil {
		return ar, fmt.Errorf("upload: releases of %s: %w", app, err)
	}
	if err := json.Unmarshal(data, &ar); err != nil {
		return ar, fmt.Errorf("upload: releases of %s: %s: %w", app, r.file(app), err)
	}
	return ar, nil
}

func (r *Releases) save(app string, ar appReleases) error {
	data, err := json.MarshalIndent(ar, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(r.file(app), data); err != nil {
		return fmt.Errorf("upload: releases of %s: %w", app, err)
	}
	return nil
}

// Apps lists the apps the store has releases for, sorted.
func (r *Releases) Apps() ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	files, err := filepath.Glob(filepath.Join(r.dir, "releases", "*.json"))
	if err != nil {
		return nil, err
	}
	apps := make([]string, 0, len(files))
	for _, f := range files {
		app := strings.TrimSuffix(filepath.Base(f), ".json")
		if ValidAppName(app) == nil {
			apps = append(apps, app)
		}
	}
	sort.Strings(apps)
	return apps, nil
}

// List returns app's kept releases, newest first, and the live image ID.
func (r *Releases) List(app string) ([]Release, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ar, err := r.load(app)
	return ar.Releases, ar.Live, err
}

// Live returns app's live release, or false if it has none.
func (r *Releases) Live(app string) (Release, bool, error) {
	rels, live, err := r.List(app)
	for _, rel := range rels {
		if rel.Image.ID == live {
			return rel, true, err
		}
	}
	return Release{}, false, err
}

// beginBuild and endBuild bracket a build, so that pruning does not remove
// a file a build has just written (the same tree gives the same file) and
// not yet recorded.
func (r *Releases) beginBuild() {
	r.mu.Lock()
	r.building++
	r.mu.Unlock()
}

func (r *Releases) endBuild() {
	r.mu.Lock()
	r.building--
	r.mu.Unlock()
}

// Record makes rel the live release of app: it becomes the newest entry
// (an earlier entry with the same image is dropped), releases beyond Keep
// are forgotten, and image files no app keeps are removed.
func (r *Releases) Record(app string, rel Release) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ar, err := r.load(app)
	if err != nil {
		return err
	}
	kept := []Release{rel}
	for _, old := range ar.Releases {
		if old.Image.ID != rel.Image.ID {
			kept = append(kept, old)
		}
	}
	if len(kept) > r.keep {
		kept = kept[:r.keep]
	}
	ar.Releases, ar.Live = kept, rel.Image.ID
	if err := r.save(app, ar); err != nil {
		return err
	}
	r.pruneLocked()
	return nil
}

// RollbackTarget returns the release a rollback of app would make live:
// the one with image ID to, or with to "" the one just older than the live
// one.
func (r *Releases) RollbackTarget(app, to string) (Release, error) {
	rels, live, err := r.List(app)
	if err != nil {
		return Release{}, err
	}
	for i, rel := range rels {
		if to != "" && (rel.Image.ID == to || strings.TrimPrefix(rel.Image.ID, "sha256:") == to || (len(to) >= 12 && strings.HasPrefix(strings.TrimPrefix(rel.Image.ID, "sha256:"), to))) {
			if rel.Image.ID == live {
				return Release{}, fmt.Errorf("upload: rollback %s: %s is already live", app, to)
			}
			return rel, nil
		}
		if to == "" && rel.Image.ID == live {
			if i+1 < len(rels) {
				return rels[i+1], nil
			}
			return Release{}, fmt.Errorf("upload: rollback %s: %w (the live release is the oldest kept)", app, ErrNoRelease)
		}
	}
	if to != "" {
		return Release{}, fmt.Errorf("upload: rollback %s to %s: %w (not among the kept releases)", app, to, ErrNoRelease)
	}
	return Release{}, fmt.Errorf("upload: rollback %s: %w (nothing is live)", app, ErrNoRelease)
}

// SetLive marks the kept release with image id live, leaving the list's
// order as it is (a rollback walks back through it).
func (r *Releases) SetLive(app, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ar, err := r.load(app)
	if err != nil {
		return err
	}
	for _, rel := range ar.Releases {
		if rel.Image.ID == id {
			ar.Live = id
			return r.save(app, ar)
		}
	}
	return fmt.Errorf("upload: releases of %s: image %s is not kept", app, id)
}

// Prune removes image files that no app keeps (for an image that failed
// to activate, say). It does nothing while a build is in flight.
func (r *Releases) Prune() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked()
}

func (r *Releases) pruneLocked() {
	if r.building > 0 {
		return
	}
	keep := map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(r.dir, "releases", "*.json"))
	for _, f := range files {
		ar, err := r.load(strings.TrimSuffix(filepath.Base(f), ".json"))
		if err != nil {
			// An unreadable record might keep anything: remove
			// nothing.
			return
		}
		for _, rel := range ar.Releases {
			keep[filepath.Base(rel.Image.Path)] = true
		}
	}
	images, _ := filepath.Glob(filepath.Join(r.dir, "*.squashfs"))
	for _, img := range images {
		if !keep[filepath.Base(img)] {
			_ = os.Remove(img)
		}
	}
}

// writeFileAtomic writes data to path through a synced temporary file and
// a rename.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
