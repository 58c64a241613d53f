package pyinstall

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cachedPage is an index page kept on disk with what HTTP needs to reuse or
// revalidate it (RFC 9111): its validators and its freshness lifetime.
type cachedPage struct {
	URL          string    `json:"url"`
	ContentType  string    `json:"content_type"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	Fetched      time.Time `json:"fetched"`
	// MaxAge is the freshness lifetime (Cache-Control max-age), 0 when
	// the response gave none.
	MaxAge time.Duration `json:"max_age"`
	// NoCache: the response said no-cache; it is revalidated every time.
	NoCache bool   `json:"no_cache,omitempty"`
	Body    []byte `json:"body"`
}

// fresh reports whether the page may be used at now without asking.
func (p *cachedPage) fresh(now time.Time) bool {
	return !p.NoCache && p.MaxAge > 0 && now.Before(p.Fetched.Add(p.MaxAge)) && !now.Before(p.Fetched.Add(-time.Minute))
}

// cacheControl reads the directives of a response that matter to a private
// cache: max-age, no-cache, no-store (and Age, which a shared cache in
// front may add).
func cacheControl(h http.Header) (maxAge time.Duration, noCache, noStore bool) {
	for _, d := range strings.Split(strings.ToLower(h.Get("Cache-Control")), ",") {
		d = strings.TrimSpace(d)
		switch {
		case d == "no-cache":
			noCache = true
		case d == "no-store":
			noStore = true
		case strings.HasPrefix(d, "max-age="):
			if n, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(d, "max-age="), `"`), 10, 64); err == nil && n > 0 {
				maxAge = time.Duration(n) * time.Second
			}
		}
	}
	if age, err := strconv.ParseInt(h.Get("Age"), 10, 64); err == nil && age > 0 {
		maxAge -= time.Duration(age) * time.Second
		if maxAge < 0 {
			maxAge = 0
		}
	}
	return maxAge, noCache, noStore
}

func (c *Cache) pagePath(url string) string {
	sum := sha256.Sum256([]byte(url))
	return filepath.Join(c.dir, "pages", hex.EncodeToString(sum[:16])+".json")
}

// page returns the stored copy of an index page, if any.
func (c *Cache) page(url string) *cachedPage {
	data, err := os.ReadFile(c.pagePath(url))
	if err != nil {
		return nil
	}
	var p cachedPage
	if err := json.Unmarshal(data, &p); err != nil || p.URL != url {
		// A torn file cannot be (writes are atomic); anything else
		// unreadable is dropped and fetched again.
		c.log.Warn("cache: removing unreadable page", "url", url, "err", err)
		_ = os.Remove(c.pagePath(url))
		return nil
	}
	return &p
}

// setPage stores an index page (temporary file, then rename).
func (c *Cache) setPage(p *cachedPage) error {
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return writeFileAtomic(c.pagePath(p.URL), data)
}
