// Package imagemount keeps the read-only mounts of the images that the
// example daemons (uploadd, platform) make live, so both activate a pushed
// image the same way: mount it, point the app's spec at the mount, keep
// the previous mount while its instances drain, unmount older ones.
package imagemount

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/paaskit/paaskit/upload"
)

// Set is the mounts of every app's live and previous image, under one
// directory: <Dir>/<app>/<first 16 hex digits of the image id>.
type Set struct {
	dir string

	mu   sync.Mutex
	live map[string][]*upload.Mounted // per app, newest last
}

// New returns an empty Set mounting under dir.
func New(dir string) *Set {
	return &Set{dir: dir, live: map[string][]*upload.Mounted{}}
}

// Mount returns img's mount for app: the one the set already has (a
// rollback to the previous image, or a push of an identical tree), or a
// new one (fresh). A leftover directory from an earlier run is removed
// only if it is empty: it may be a read-only copy still in use. A fresh
// mount that is not then passed to Keep should be unmounted by the caller.
func (s *Set) Mount(ctx context.Context, app string, img *upload.Image) (m *upload.Mounted, fresh bool, err error) {
	dir := filepath.Join(s.dir, app, strings.TrimPrefix(img.ID, "sha256:")[:16])
	s.mu.Lock()
	for _, k := range s.live[app] {
		if k.Dir == dir {
			s.mu.Unlock()
			return k, false, nil
		}
	}
	s.mu.Unlock()
	_ = os.Remove(dir)
	m, err = upload.MountImage(ctx, img.Path, dir, upload.MountConfig{})
	return m, err == nil, err
}

// Keep records m as app's live mount once the app runs from it. The
// previous mount stays (its instances may still drain); older ones are
// unmounted.
func (s *Set) Keep(ctx context.Context, app string, m *upload.Mounted) {
	s.mu.Lock()
	var ms []*upload.Mounted
	for _, k := range s.live[app] {
		if k != m {
			ms = append(ms, k)
		}
	}
	ms = append(ms, m)
	var old []*upload.Mounted
	if len(ms) > 2 {
		old, ms = ms[:len(ms)-2], ms[len(ms)-2:]
	}
	s.live[app] = ms
	s.mu.Unlock()
	for _, o := range old {
		_ = o.Unmount(ctx)
	}
}

// UnmountAll unmounts every mount of the set, at shutdown.
func (s *Set) UnmountAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ms := range s.live {
		for _, m := range ms {
			_ = m.Unmount(context.Background())
		}
	}
}

// ProcfileWeb reads the web: line of a Procfile as argv (split on blanks;
// no shell runs it).
func ProcfileWeb(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "web:"); ok {
			if argv := strings.Fields(rest); len(argv) > 0 {
				return argv, nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("no web: line")
}
