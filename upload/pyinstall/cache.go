package pyinstall

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Cache is the content-addressed store of downloaded and built
// distributions, shared by every app and every installer process on a host.
//
// Layout under its directory:
//
//	blobs/sha256/ab/abcdef…   a file, named by the SHA-256 of its bytes
//	built/<tags>/<source>     "<wheel filename> <wheel sha256>": the wheel
//	                          built from that source (an sdist's SHA-256, or
//	                          the SHA-256 of a git URL and commit) by an
//	                          interpreter with those tags (a hash of its
//	                          supported wheel tags: two Pythons sharing the
//	                          cache never get each other's wheels)
//	meta/<tags>/<source>      the METADATA its prepare_metadata_for_build_wheel
//	                          hook returned
//	pages/<url hash>.json     an index page with its HTTP validators
//	vcs/<url hash>/<commit>/  a git checkout of that commit
//	tmp/                      files being written
//
// Every write goes to a temporary file in tmp/ and is renamed into place, so
// another process sees either no file or a whole one; two processes that
// fetch or build the same thing both rename a complete file, and the last
// rename wins without harm. Every read is verified against the name's hash
// (once per process): a truncated or tampered blob is removed and reported as
// a miss, so it is fetched or rebuilt again.
type Cache struct {
	dir string
	log *slog.Logger

	mu       sync.Mutex
	verified map[string]bool
}

// OpenCache opens (creating it if needed) the cache at dir.
func OpenCache(dir string, log *slog.Logger) (*Cache, error) {
	if dir == "" {
		return nil, errors.New("pyinstall: cache directory is empty")
	}
	if log == nil {
		log = slog.Default()
	}
	for _, d := range []string{"blobs/sha256", "built", "meta", "pages", "vcs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("pyinstall: cache %s: %w", dir, err)
		}
	}
	return &Cache{dir: dir, log: log, verified: map[string]bool{}}, nil
}

// Dir is the cache's directory.
func (c *Cache) Dir() string { return c.dir }

func validSHA(sha string) bool {
	if len(sha) != 64 {
		return false
	}
	_, err := hex.DecodeString(sha)
	return err == nil
}

// BlobPath is where the blob with this SH-256 (hex) lives.
func (c *Cache) BlobPath(sha string) string {
	return filepath.Join(c.dir, "blobs", "sha256", sha[:2], sha)
}

// Blob returns the path of the verified blob with this hash, or ok=false if
// it is missing or was corrupt (and has been removed).
func (c *Cache) Blob(sha string) (string, bool) {
	if !validSHA(sha) {
		return "", false
	}
	p := c.BlobPath(sha)
	c.mu.Lock()
	ok := c.verified[sha]
	c.mu.Unlock()
	if ok {
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
	}
	got, err := fileSHA256(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false
	}
	if err != nil || got != sha {
		c.log.Warn("cache: removing corrupt blob", "blob", p, "want", sha, "got", got, "err", err)
		_ = os.Remove(p)
		return "", false
	}
	c.mu.Lock()
	c.verified[sha] = true
	c.mu.Unlock()
	return p, true
}

// Writer starts a new blob. Write to it, then Commit (which names it by its
// hash and checks it against want, if want is not empty) or Abort.
func (c *Cache) Writer() (*BlobWriter, error) {
	f, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), "blob-")
	if err != nil {
		return nil, fmt.Errorf("pyinstall: cache: %w", err)
	}
	return &BlobWriter{c: c, f: f, h: sha256.New()}, nil
}

// BlobWriter writes one blob through a temporary file.
type BlobWriter struct {
	c *Cache
	f *os.File
	h hash.Hash
	n int64
}

func (w *BlobWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	return n, err
}

// Reset discards what was written (for a retried download).
func (w *BlobWriter) Reset() error {
	if _, err := w.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := w.f.Truncate(0); err != nil {
		return err
	}
	w.h.Reset()
	w.n = 0
	return nil
}

// HashMismatchError is a download or build whose bytes do not have the
// expected SHA-256.
type HashMismatchError struct {
	What      string
	Want, Got string
}

func (e *HashMismatchError) Error() string {
	return fmt.Sprintf("%s: sha256 %s, expected %s", e.What, e.Got, e.Want)
}

// Commit syncs the blob and renames it into place. It returns the blob's
// path and hash.
func (w *BlobWriter) Commit(want, what string) (string, string, error) {
	sum := hex.EncodeToString(w.h.Sum(nil))
	if want != "" && !strings.EqualFold(want, sum) {
		w.Abort()
		return "", "", &HashMismatchError{What: what, Want: want, Got: sum}
	}
	if err := w.f.Sync(); err != nil {
		w.Abort()
		return "", "", err
	}
	if err := w.f.Close(); err != nil {
		_ = os.Remove(w.f.Name())
		return "", "", err
	}
	p := w.c.BlobPath(sum)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		_ = os.Remove(w.f.Name())
		return "", "", err
	}
	if err := os.Chmod(w.f.Name(), 0o644); err != nil {
		_ = os.Remove(w.f.Name())
		return "", "", err
	}
	if err := os.Rename(w.f.Name(), p); err != nil {
		_ = os.Remove(w.f.Name())
		return "", "", err
	}
	w.c.mu.Lock()
	w.c.verified[sum] = true
	w.c.mu.Unlock()
	return p, sum, nil
}

// Abort removes the temporary file.
func (w *BlobWriter) Abort() {
	_ = w.f.Close()
	_ = os.Remove(w.f.Name())
}

// PutFile moves a finished file (in the cache's tmp directory or on the
// same filesystem) into the store; it returns the blob path and hash.
func (c *Cache) PutFile(path string) (string, string, error) {
	w, err := c.Writer()
	if err != nil {
		return "", "", err
	}
	f, err := os.Open(path)
	if err != nil {
		w.Abort()
		return "", "", err
	}
	_, err = io.Copy(w, f)
	f.Close()
	if err != nil {
		w.Abort()
		return "", "", err
	}
	return w.Commit("", path)
}

// Built returns the wheel built earlier from the source with this key
// (an sdist's SHA-256, hex) by an interpreter with these tags (TagsKey): its
// filename and verified blob path.
func (c *Cache) Built(tags, source string) (filename, path string, ok bool) {
	if !validKey(tags) || !validSHA(source) {
		return "", "", false
	}
	rec := filepath.Join(c.dir, "built", tags, source)
	data, err := os.ReadFile(rec)
	if err != nil {
		return "", "", false
	}
	fields := strings.Fields(string(data))
	if len(fields) != 2 || !strings.HasSuffix(fields[0], ".whl") || strings.ContainsAny(fields[0], "/\\") {
		c.log.Warn("cache: removing malformed build record", "record", rec)
		_ = os.Remove(rec)
		return "", "", false
	}
	p, ok := c.Blob(fields[1])
	if !ok {
		return "", "", false
	}
	return fields[0], p, true
}

// SetBuilt records that the source with this key builds the given wheel
// for an interpreter with these tags.
func (c *Cache) SetBuilt(tags, source, wheelFilename, wheelSHA string) error {
	if !validKey(tags) || !validSHA(source) {
		return fmt.Errorf("pyinstall: cache: bad build key %q/%q", tags, source)
	}
	return writeFileAtomic(filepath.Join(c.dir, "built", tags, source), []byte(wheelFilename+" "+wheelSHA+"\n"))
}

// hookMetadata returns the METADATA the metadata hook gave earlier for
// this source and interpreter.
func (c *Cache) hookMetadata(tags, source string) ([]byte, bool) {
	if !validKey(tags) || !validSHA(source) {
		return nil, false
	}
	data, err := os.ReadFile(filepath.Join(c.dir, "meta", tags, source))
	return data, err == nil
}

func (c *Cache) setHookMetadata(tags, source string, data []byte) error {
	if !validKey(tags) || !validSHA(source) {
		return fmt.Errorf("pyinstall: cache: bad metadata key %q/%q", tags, source)
	}
	return writeFileAtomic(filepath.Join(c.dir, "meta", tags, source), data)
}

func (c *Cache) removeHookMetadata(tags, source string) {
	if validKey(tags) && validSHA(source) {
		_ = os.Remove(filepath.Join(c.dir, "meta", tags, source))
	}
}

// validKey accepts the short hex keys of the cache's subdirectories.
func validKey(k string) bool {
	if len(k) < 8 || len(k) > 64 {
		return false
	}
	_, err := hex.DecodeString(k)
	return err == nil
}

// TagsKey is the cache's short name for an interpreter's supported wheel
// tags.
func TagsKey(in *Interpreter) string {
	sum := sha256.Sum256([]byte(strings.Join(in.Tags, "\n")))
	return hex.EncodeToString(sum[:8])
}

// TempDir makes a private directory for work (a build) on the cache's
// filesystem.
func (c *Cache) TempDir(prefix string) (string, error) {
	return os.MkdirTemp(filepath.Join(c.dir, "tmp"), prefix)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
