package pyinstall

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"deps.dev/util/semver"
)

// ErrNotFound is returned when an index has no such project or file.
var ErrNotFound = errors.New("not found")

// link is one distribution file offered by an index or a find-links location.
type link struct {
	URL            string // http(s) URL or absolute local path
	Filename       string
	SHA256         string // hex, from the URL fragment; "" when unknown
	RequiresPython string
	Yanked         bool
	// MetadataSHA256 is set when a PEP 658 metadata file exists ("" hash
	// when the index says only "true").
	HasMetadata    bool
	MetadataSHA256 string

	Project string // normalized
	Version string
	Wheel   bool
	Tags    string // "py-abi-plat" for wheels
}

var (
	anchorRe = regexp.MustCompile(`(?is)<a\s([^>]*)>`)
	attrRe   = regexp.MustCompile(`(?s)([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')`)
	wheelRe  = regexp.MustCompile(`^([^-]+)-([^-]+)(?:-([0-9][^-]*))?-([^-]+-[^-]+-[^-]+)\.whl$`)
)

// parseFilename fills Project, Version, Wheel and Tags from the filename. It
// reports false for files that are not wheels or sdists.
func (l *link) parseFilename() bool {
	fn := l.Filename
	if m := wheelRe.FindStringSubmatch(fn); m != nil {
		l.Project, l.Version, l.Wheel, l.Tags = NormalizeName(m[1]), m[2], true, m[4]
		return true
	}
	var stem string
	switch {
	case strings.HasSuffix(fn, ".tar.gz"):
		stem = strings.TrimSuffix(fn, ".tar.gz")
	case strings.HasSuffix(fn, ".zip"):
		stem = strings.TrimSuffix(fn, ".zip")
	default:
		return false
	}
	i := strings.LastIndexByte(stem, '-')
	if i <= 0 {
		return false
	}
	l.Project, l.Version = NormalizeName(stem[:i]), stem[i+1:]
	if _, err := semver.PyPI.Parse(l.Version); err != nil {
		return false
	}
	return true
}

// parseLinks extracts distribution links from a PEP 503 page fetched from
// base.
func parseLinks(page []byte, base *url.URL) []link {
	var out []link
	for _, m := range anchorRe.FindAllSubmatch(page, -1) {
		attrs := map[string]string{}
		for _, a := range attrRe.FindAllSubmatch(m[1], -1) {
			v := string(a[2])
			if len(a[3]) > 0 {
				v = string(a[3])
			}
			attrs[strings.ToLower(string(a[1]))] = html.UnescapeString(v)
		}
		href, ok := attrs["href"]
		if !ok {
			continue
		}
		u, err := base.Parse(href)
		if err != nil {
			continue
		}
		l := link{RequiresPython: attrs["data-requires-python"]}
		_, l.Yanked = attrs["data-yanked"]
		if frag := u.Fragment; strings.HasPrefix(frag, "sha256=") {
			l.SHA256 = strings.ToLower(strings.TrimPrefix(frag, "sha256="))
		}
		u.Fragment = ""
		l.URL = u.String()
		l.Filename = filepath.Base(u.Path)
		md, ok := attrs["data-core-metadata"]
		if !ok {
			md, ok = attrs["data-dist-info-metadata"]
		}
		if ok && md != "false" {
			l.HasMetadata = true
			if h, ok := strings.CutPrefix(md, "sha256="); ok {
				l.MetadataSHA256 = strings.ToLower(h)
			}
		}
		if l.parseFilename() {
			out = append(out, l)
		}
	}
	return out
}

// fetcher does HTTP GETs with retries and keeps index pages for the life of
// one installation.
type fetcher struct {
	client  *http.Client
	retries int
	onRetry func(url string, attempt int, err error)
	// cache keeps index pages across installations (nil: none); now is
	// the clock their freshness is judged by.
	cache *Cache
	now   func() time.Time
	// requests counts HTTP requests sent.
	requests atomic.Int64

	mu    sync.Mutex
	pages map[string]*pageCall
}

type pageCall struct {
	done  chan struct{}
	links []link
	err   error
}

// retryable reports whether a failed GET is worth another try.
func retryable(err error) bool {
	if errors.Is(err, ErrNotFound) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var se *statusError
	if errors.As(err, &se) {
		return se.code >= 500 || se.code == http.StatusTooManyRequests
	}
	return true
}

type statusError struct {
	url  string
	code int
}

func (e *statusError) Error() string { return fmt.Sprintf("GET %s: HTTP %d", e.url, e.code) }

// get fetches a URL (or reads a local path) into w, retrying transient
// failures with backoff. reset is called before each retry so w can start
// over.
func (f *fetcher) get(ctx context.Context, rawURL string, w io.Writer, reset func() error) error {
	return f.getWith(ctx, rawURL, w, reset, nil, nil)
}

// getWith is get with request headers, and onResp told the status and
// headers of the response that ended it (a 304 writes nothing to w).
func (f *fetcher) getWith(ctx context.Context, rawURL string, w io.Writer, reset func() error, hdr http.Header, onResp func(int, http.Header)) error {
	if !strings.Contains(rawURL, "://") {
		fh, err := os.Open(rawURL)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", rawURL, ErrNotFound)
		} else if err != nil {
			return err
		}
		defer fh.Close()
		_, err = io.Copy(w, fh)
		return err
	}
	var last error
	for attempt := 0; attempt <= f.retries; attempt++ {
		if attempt > 0 {
			if f.onRetry != nil {
				f.onRetry(rawURL, attempt, last)
			}
			if reset != nil {
				if err := reset(); err != nil {
					return err
				}
			}
			t := time.NewTimer(time.Duration(25<<attempt) * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		last = f.once(ctx, rawURL, w, hdr, onResp)
		if last == nil || !retryable(last) {
			return last
		}
	}
	return fmt.Errorf("GET %s: giving up after %d attempts: %w", rawURL, f.retries+1, last)
}

func (f *fetcher) once(ctx context.Context, rawURL string, w io.Writer, hdr http.Header, onResp func(int, http.Header)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	f.requests.Add(1)
	resp, err := f.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if onResp != nil {
		onResp(resp.StatusCode, resp.Header)
	}
	switch {
	case resp.StatusCode == http.StatusNotModified && hdr.Get("If-None-Match")+hdr.Get("If-Modified-Since") != "":
		return nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return fmt.Errorf("GET %s: %w", rawURL, ErrNotFound)
	case resp.StatusCode != http.StatusOK:
		return &statusError{url: rawURL, code: resp.StatusCode}
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: after %d bytes: %w", rawURL, n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return fmt.Errorf("GET %s: got %d of %d bytes: %w", rawURL, n, resp.ContentLength, io.ErrUnexpectedEOF)
	}
	return nil
}

// links returns the files one source offers for a project: an index's
// project page, or a find-links page or directory (filtered by project).
// Each distinct page is fetched once, however many goroutines ask.
func (f *fetcher) links(ctx context.Context, pageURL, project string) ([]link, error) {
	f.mu.Lock()
	c, ok := f.pages[pageURL]
	if !ok {
		c = &pageCall{done: make(chan struct{})}
		f.pages[pageURL] = c
		f.mu.Unlock()
		c.links, c.err = f.fetchLinks(ctx, pageURL)
		close(c.done)
	} else {
		f.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if c.err != nil {
		return nil, c.err
	}
	var out []link
	for _, l := range c.links {
		if l.Project == project {
			out = append(out, l)
		}
	}
	return out, nil
}

func (f *fetcher) fetchLinks(ctx context.Context, pageURL string) ([]link, error) {
	if !strings.Contains(pageURL, "://") {
		// A find-links directory.
		ents, err := os.ReadDir(pageURL)
		if err != nil {
			return nil, fmt.Errorf("find-links %s: %w", pageURL, err)
		}
		var out []link
		for _, e := range ents {
			if !e.Type().IsRegular() {
				continue
			}
			l := link{URL: filepath.Join(pageURL, e.Name()), Filename: e.Name()}
			if l.parseFilename() {
				out = append(out, l)
			}
		}
		return out, nil
	}
	base, err := url.Parse(pageURL)
	if err != nil {
		return nil, fmt.Errorf("index URL %q: %w", pageURL, err)
	}
	body, ctype, err := f.page(ctx, pageURL)
	if err != nil {
		return nil, err
	}
	if isJSONPage(ctype) {
		links, err := parseJSONLinks(body, base)
		if err != nil {
			return nil, fmt.Errorf("index page %s: %w", pageURL, err)
		}
		return links, nil
	}
	return parseLinks(body, base), nil
}

// acceptPages asks for PEP 691 JSON first, PEP 503 HTML otherwise.
const acceptPages = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"

func isJSONPage(contentType string) bool {
	return strings.HasPrefix(strings.TrimSpace(strings.ToLower(contentType)), "application/vnd.pypi.simple.v1+json")
}

// page returns an index page's body and content type: from the on-disk
// cache without a request while it is fresh (Cache-Control max-age),
// revalidated with If-None-Match / If-Modified-Since when it is stale (a 304
// reuses it), fetched otherwise.
func (f *fetcher) page(ctx context.Context, pageURL string) ([]byte, string, error) {
	var old *cachedPage
	if f.cache != nil {
		old = f.cache.page(pageURL)
	}
	now := f.now()
	if old != nil && old.fresh(now) {
		return old.Body, old.ContentType, nil
	}
	hdr := http.Header{"Accept": {acceptPages}}
	if old != nil {
		if old.ETag != "" {
			hdr.Set("If-None-Match", old.ETag)
		}
		if old.LastModified != "" {
			hdr.Set("If-Modified-Since", old.LastModified)
		}
	}
	var buf bytes.Buffer
	var status int
	var rh http.Header
	err := f.getWith(ctx, pageURL, &buf, func() error { buf.Reset(); return nil }, hdr, func(st int, h http.Header) { status, rh = st, h })
	if err != nil {
		return nil, "", err
	}
	maxAge, noCache, noStore := cacheControl(rh)
	if status == http.StatusNotModified && old != nil {
		old.Fetched, old.MaxAge, old.NoCache = now, maxAge, noCache
		if et := rh.Get("ETag"); et != "" {
			old.ETag = et
		}
		f.store(old)
		return old.Body, old.ContentType, nil
	}
	p := &cachedPage{URL: pageURL, ContentType: rh.Get("Content-Type"), ETag: rh.Get("ETag"), LastModified: rh.Get("Last-Modified"),
		Fetched: now, MaxAge: maxAge, NoCache: noCache, Body: buf.Bytes()}
	if !noStore && (maxAge > 0 || p.ETag != "" || p.LastModified != "") {
		f.store(p)
	}
	return p.Body, p.ContentType, nil
}

func (f *fetcher) store(p *cachedPage) {
	if f.cache == nil {
		return
	}
	if err := f.cache.setPage(p); err != nil {
		f.cache.log.Warn("cache: cannot store index page", "url", p.URL, "err", err)
	}
}

// parseJSONLinks reads a PEP 691 JSON project page fetched from base.
func parseJSONLinks(page []byte, base *url.URL) ([]link, error) {
	var doc struct {
		Meta struct {
			APIVersion string `json:"api-version"`
		} `json:"meta"`
		Files []struct {
			Filename         string            `json:"filename"`
			URL              string            `json:"url"`
			Hashes           map[string]string `json:"hashes"`
			RequiresPython   *string           `json:"requires-python"`
			Yanked           any               `json:"yanked"`
			CoreMetadata     any               `json:"core-metadata"`
			DistInfoMetadata any               `json:"dist-info-metadata"`
		} `json:"files"`
	}
	if err := json.Unmarshal(page, &doc); err != nil {
		return nil, fmt.Errorf("PEP 691 JSON: %w", err)
	}
	if major, _, _ := strings.Cut(doc.Meta.APIVersion, "."); major != "1" {
		return nil, fmt.Errorf("PEP 691 JSON: unsupported api-version %q", doc.Meta.APIVersion)
	}
	var out []link
	for _, jf := range doc.Files {
		u, err := base.Parse(jf.URL)
		if err != nil {
			continue
		}
		l := link{Filename: jf.Filename}
		if jf.RequiresPython != nil {
			l.RequiresPython = *jf.RequiresPython
		}
		switch y := jf.Yanked.(type) {
		case bool:
			l.Yanked = y
		case string:
			l.Yanked = true
		}
		if h := jf.Hashes["sha256"]; h != "" {
			l.SHA256 = strings.ToLower(h)
		} else if h, ok := strings.CutPrefix(u.Fragment, "sha256="); ok {
			l.SHA256 = strings.ToLower(h)
		}
		u.Fragment = ""
		l.URL = u.String()
		md := jf.CoreMetadata // PEP 714's name, preferred
		if md == nil {
			md = jf.DistInfoMetadata
		}
		switch m := md.(type) {
		case bool:
			l.HasMetadata = m
		case map[string]any:
			l.HasMetadata = true
			if h, ok := m["sha256"].(string); ok {
				l.MetadataSHA256 = strings.ToLower(h)
			}
		}
		if l.Filename == "" || strings.ContainsAny(l.Filename, "/\\") {
			continue
		}
		if l.parseFilename() {
			out = append(out, l)
		}
	}
	return out, nil
}
