package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// specWatcher loads the spec directory and reloads it on change. Any event
// triggers a rescan of the whole directory (after a short quiet period), so
// a missed or coalesced event cannot leave the runner out of date.
type specWatcher struct {
	r *Runner
	w *fsnotify.Watcher
}

// specDebounce is the quiet period after a change before the rescan, so an
// editor's write-rename dance is seen as one change.
const specDebounce = 30 * time.Millisecond

func (r *Runner) newWatcher() (*specWatcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("runner: watch spec directory: %w", err)
	}
	if err := w.Add(r.cfg.SpecDir); err != nil {
		w.Close()
		return nil, fmt.Errorf("runner: watch spec directory %s: %w", r.cfg.SpecDir, err)
	}
	sw := &specWatcher{r: r, w: w}
	r.ScanSpecDir()
	return sw, nil
}

func (sw *specWatcher) run(ctx context.Context) {
	defer sw.w.Close()
	var timer *time.Timer
	var fire <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case ev, ok := <-sw.w.Events:
			if !ok {
				return
			}
			if !isSpecFile(ev.Name) {
				continue
			}
			if timer == nil {
				timer = time.NewTimer(specDebounce)
			} else {
				timer.Reset(specDebounce)
			}
			fire = timer.C
		case err, ok := <-sw.w.Errors:
			if !ok {
				return
			}
			// An overflow loses events: rescan to be sure.
			sw.r.log.Warn("runner: spec directory watch error; rescanning", "dir", sw.r.cfg.SpecDir, "err", err)
			sw.r.ScanSpecDir()
		case <-fire:
			fire = nil
			sw.r.ScanSpecDir()
		}
	}
}

func isSpecFile(p string) bool {
	b := filepath.Base(p)
	return strings.HasSuffix(b, ".json") && !strings.HasPrefix(b, ".")
}

// ScanSpecDir loads Config.SpecDir now and applies the differences: new
// files add apps, missing files remove theirs, changed files replace
// theirs. A bad file is logged and listed in Status().SpecErrors, and the
// app it described (if it was good before) keeps its last good spec. Run
// calls it at start and on every change; it is exported for operators who
// want a reload on demand.
func (r *Runner) ScanSpecDir() {
	dir := r.cfg.SpecDir
	if dir == "" {
		return
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		r.log.Error("runner: read spec directory", "dir", dir, "err", err)
		return
	}
	var files []string
	for _, e := range ents {
		if isSpecFile(e.Name()) && !e.IsDir() {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(files)
	present := map[string]bool{}
	claimed := map[string]string{} // app -> file, in this scan
	for _, f := range files {
		present[f] = true
		s, err := LoadSpecFile(f)
		if err == nil {
			if other, ok := claimed[s.Name]; ok {
				err = &SpecError{File: f, App: s.Name, Err: fmt.Errorf("app %q is already defined by %s", s.Name, other)}
			}
		}
		if err == nil {
			r.mu.Lock()
			prevName, had := r.fileApps[f]
			r.mu.Unlock()
			if had && prevName != s.Name {
				// The file now describes another app: the old one goes.
				r.removeFileApp(f, prevName)
			}
			cur, exists := r.App(s.Name)
			if !exists || !cur.equal(&s) {
				err = r.put(s, f)
			}
		}
		r.mu.Lock()
		prevErr := r.specErrors[f]
		if err != nil {
			r.specErrors[f] = err.Error()
		} else {
			delete(r.specErrors, f)
			r.fileApps[f] = s.Name
			claimed[s.Name] = f
		}
		r.mu.Unlock()
		if err != nil && prevErr != err.Error() {
			r.log.Error("runner: bad spec file; other apps unaffected", "file", f, "err", err)
		}
		if err != nil {
			// Keep the app the file used to describe, if any.
			r.mu.Lock()
			if n, ok := r.fileApps[f]; ok {
				claimed[n] = f
			}
			r.mu.Unlock()
		}
	}
	r.mu.Lock()
	var gone []string
	for f := range r.fileApps {
		if !present[f] {
			gone = append(gone, f)
		}
	}
	for f := range r.specErrors {
		if !present[f] {
			delete(r.specErrors, f)
		}
	}
	r.mu.Unlock()
	for _, f := range gone {
		r.mu.Lock()
		name := r.fileApps[f]
		r.mu.Unlock()
		if claimed[name] != "" {
			// Renamed: another file describes the app now.
			r.mu.Lock()
			delete(r.fileApps, f)
			r.mu.Unlock()
			continue
		}
		r.removeFileApp(f, name)
	}
}

func (r *Runner) removeFileApp(file, name string) {
	r.mu.Lock()
	delete(r.fileApps, file)
	r.mu.Unlock()
	if err := r.Remove(name); err != nil && !errors.Is(err, ErrUnknownApp) {
		r.log.Error("runner: remove app of spec file", "file", file, "app", name, "err", err)
	}
}
