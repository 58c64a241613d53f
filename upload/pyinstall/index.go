package pyinstall

import (
	"context"
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
		last = f.once(ctx, rawURL, w)
		if last == nil || !retryable(last) {
			return last
		}
	}
	return fmt.Errorf("GET %s: giving up after %d attempts: %w", rawURL, f.retries+1, last)
}

func (f *fetcher) once(ctx context.Context, rawURL string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/html")
	resp, err := f.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
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
	var buf strings.Builder
	err = f.get(ctx, pageURL, &buf, func() error { buf.Reset(); return nil })
	if err != nil {
		return nil, err
	}
	return parseLinks([]byte(buf.String()), base), nil
}
