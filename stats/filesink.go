package stats

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/paaskit/paaskit/internal/threadprio"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// File sink defaults.
const (
	DefaultChunkBytes = 64 << 20
	DefaultChunkAge   = time.Hour
	// markEvery is how many bytes of a chunk lie between two marks of its
	// index (offset and the newest time so far), which "since T" seeks by.
	markEvery = 1 << 20
	// compressorNice is the nice value rotated chunks are gzipped at (on
	// a thread of the process's own, see internal/threadprio).
	compressorNice = 10
)

// FileSinkConfig configures a FileSink. Zero values are the documented
// defaults.
type FileSinkConfig struct {
	// Dir holds a directory per app. Required.
	Dir string
	// ChunkBytes and ChunkAge rotate an app's chunk when it reaches that
	// size or has been open that long. Defaults DefaultChunkBytes (64 MiB)
	// and DefaultChunkAge (1h).
	ChunkBytes int64
	ChunkAge   time.Duration
	// NoCompress keeps rotated chunks as they are; by default they are
	// gzipped in the background.
	NoCompress bool
	// NoSync skips the fsync of chunks and index at the end of each Write
	// (a crash of the machine, not of the process, may then cost a replay
	// from the journal that the index no longer covers). Default: sync.
	NoSync bool
	// Now is the clock that ages chunks. Default time.Now.
	Now func() time.Time
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// FileSink writes each app's log lines to chunked files:
//
//	<Dir>/<app>/chunk-<000001>.log      the chunk being written
//	<Dir>/<app>/chunk-<000000>.log.gz   rotated, compressed chunks
//	<Dir>/<app>/index.json              the chunks, their times and line counts
//
// One line per record: the time (RFC 3339 with nine fraction digits, UTC), the
// instance, the stream with a '+' on a cut line, '|', and the text with
// '\' and newlines escaped (\\, \n, \r). Metrics and usage records are not
// written here.
//
// The index is what makes the sink idempotent: it records, with each
// chunk's size, the journal index it holds records through; after a crash
// the open chunk is cut back to the indexed size and records the index
// covers are skipped on replay.
type FileSink struct {
	cfg  FileSinkConfig
	log  *slog.Logger
	mu   sync.Mutex
	apps map[string]*appLog

	compress chan compressJob
	wg       sync.WaitGroup
	closed   bool
}

type compressJob struct {
	a *appLog
	n int
}

// appLog is one app's files. mu guards idx and the active file; Write
// holds it while writing, readers while copying idx.
type appLog struct {
	dir     string
	mu      sync.Mutex
	idx     appIndex
	f       *os.File
	buf     []byte
	lt      lineTime
	changed chan struct{} // closed and replaced when lines are added
}

type appIndex struct {
	// Through is the journal index of the last record written.
	Through uint64       `json:"through"`
	Chunks  []chunkIndex `json:"chunks"`
}

type chunkIndex struct {
	N          int    `json:"n"`
	Compressed bool   `json:"compressed,omitempty"`
	Opened     int64  `json:"opened"` // unix nanos, the sink's clock
	Bytes      int64  `json:"bytes"`
	Lines      int64  `json:"lines"`
	MinTime    int64  `json:"min_time"` // unix nanos, the records' times
	MaxTime    int64  `json:"max_time"`
	Marks      []mark `json:"marks,omitempty"`
}

// mark records that MaxTime is the newest time of the chunk's lines
// before byte Off, so a line stamped at or after T lies past the last mark
// with MaxTime < T (times need not be in order: the running maximum is).
type mark struct {
	Off     int64 `json:"off"`
	MaxTime int64 `json:"max_time"`
}

// NewFileSink validates cfg and returns a FileSink; Close stops its
// compressor.
func NewFileSink(cfg FileSinkConfig) (*FileSink, error) {
	if cfg.Dir == "" {
		return nil, errors.New("stats: new file sink: Dir is required")
	}
	if cfg.ChunkBytes < 0 || cfg.ChunkAge < 0 {
		return nil, errors.New("stats: new file sink: negative ChunkBytes or ChunkAge")
	}
	if cfg.ChunkBytes == 0 {
		cfg.ChunkBytes = DefaultChunkBytes
	}
	if cfg.ChunkAge == 0 {
		cfg.ChunkAge = DefaultChunkAge
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("stats: new file sink: %w", err)
	}
	s := &FileSink{cfg: cfg, log: cfg.Logger, apps: map[string]*appLog{}, compress: make(chan compressJob, 1024)}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.wg.Add(1)
	go s.compressor()
	return s, nil
}

// Name is "files".
func (s *FileSink) Name() string { return "files" }

// Close waits for pending compressions and closes the files.
func (s *FileSink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.compress)
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	apps := make([]*appLog, 0, len(s.apps))
	for _, a := range s.apps {
		apps = append(apps, a)
	}
	s.mu.Unlock()
	var first error
	for _, a := range apps {
		a.mu.Lock()
		if a.f != nil {
			if err := a.f.Close(); err != nil && first == nil {
				first = err
			}
			a.f = nil
		}
		a.mu.Unlock()
	}
	return first
}

func (a *appLog) chunkPath(c *chunkIndex) string {
	name := fmt.Sprintf("chunk-%06d.log", c.N)
	if c.Compressed {
		name += ".gz"
	}
	return filepath.Join(a.dir, name)
}

func (a *appLog) indexPath() string { return filepath.Join(a.dir, "index.json") }

// app returns the app's log, opening it (and cutting a torn chunk back to
// the indexed size) on first use.
func (s *FileSink) app(name string) (*appLog, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.apps[name]; a != nil {
		return a, nil
	}
	if !validApp(name) {
		return nil, fmt.Errorf("stats: file sink: bad app name %q", name)
	}
	a := &appLog{dir: filepath.Join(s.cfg.Dir, name), changed: make(chan struct{})}
	if err := os.MkdirAll(a.dir, 0o750); err != nil {
		return nil, fmt.Errorf("stats: file sink: %w", err)
	}
	if b, err := os.ReadFile(a.indexPath()); err == nil {
		if err := json.Unmarshal(b, &a.idx); err != nil {
			return nil, fmt.Errorf("stats: file sink: index %s: %w", a.indexPath(), err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("stats: file sink: %w", err)
	}
	for i := range a.idx.Chunks[:max(0, len(a.idx.Chunks)-1)] {
		c := &a.idx.Chunks[i]
		if !c.Compressed && !s.cfg.NoCompress {
			s.queueCompress(a, c.N)
		}
	}
	s.apps[name] = a
	return a, nil
}

func (s *FileSink) queueCompress(a *appLog, n int) {
	select {
	case s.compress <- compressJob{a, n}:
	default:
		s.log.Warn("stats: file sink: compression queue full; chunk stays uncompressed", "dir", a.dir, "chunk", n)
	}
}

// openActive opens (or starts) the app's active chunk for appending.
func (s *FileSink) openActive(a *appLog, now time.Time) error {
	if len(a.idx.Chunks) == 0 {
		a.idx.Chunks = append(a.idx.Chunks, chunkIndex{N: 1, Opened: now.UnixNano()})
	}
	c := &a.idx.Chunks[len(a.idx.Chunks)-1]
	p := a.chunkPath(c)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("stats: file sink: open %s: %w", p, err)
	}
	// Anything past the indexed size was written but not committed.
	if err := f.Truncate(c.Bytes); err != nil {
		f.Close()
		return fmt.Errorf("stats: file sink: truncate %s: %w", p, err)
	}
	if _, err := f.Seek(c.Bytes, io.SeekStart); err != nil {
		f.Close()
		return err
	}
	a.f = f
	return nil
}

// Write appends the batch's log lines to their apps' chunks.
func (s *FileSink) Write(ctx context.Context, recs []Record) error {
	now := s.cfg.Now()
	touched := map[*appLog]bool{}
	var last *appLog
	var lastName string
	for i := range recs {
		r := &recs[i]
		if r.Kind != KindLog {
			continue
		}
		a := last
		if a == nil || r.App != lastName {
			var err error
			if a, err = s.app(r.App); err != nil {
				s.unlockAll(touched, false)
				return err
			}
			last, lastName = a, r.App
		}
		if !touched[a] {
			a.mu.Lock()
			touched[a] = true
			if a.f == nil {
				if err := s.openActive(a, now); err != nil {
					s.unlockAll(touched, false)
					return err
				}
			}
		}
		if r.Index <= a.idx.Through {
			continue // written before a crash or a failed Write: a replay
		}
		if err := s.appendLine(a, r, now); err != nil {
			s.unlockAll(touched, false)
			return err
		}
	}
	var first error
	for a := range touched {
		if err := s.commit(a); err != nil && first == nil {
			first = err
		}
	}
	s.unlockAll(touched, first == nil)
	return first
}

func (s *FileSink) unlockAll(touched map[*appLog]bool, ok bool) {
	for a := range touched {
		if !ok {
			// Forget what this Write did: reopen from the index.
			a.buf = a.buf[:0]
			if a.f != nil {
				a.f.Close()
				a.f = nil
			}
			if b, err := os.ReadFile(a.indexPath()); err == nil {
				var idx appIndex
				if json.Unmarshal(b, &idx) == nil {
					a.idx = idx
				}
			} else {
				a.idx = appIndex{}
			}
		}
		a.mu.Unlock()
	}
}

// appendLine formats r into the app's buffer, rotating first when the
// chunk is full or old.
func (s *FileSink) appendLine(a *appLog, r *Record, now time.Time) error {
	c := &a.idx.Chunks[len(a.idx.Chunks)-1]
	pending := int64(len(a.buf))
	age := now.Sub(time.Unix(0, c.Opened)) // negative if the clock went back: no rotation
	if c.Lines > 0 && (c.Bytes+pending >= s.cfg.ChunkBytes || age >= s.cfg.ChunkAge) {
		if err := s.rotate(a, now); err != nil {
			return err
		}
		c = &a.idx.Chunks[len(a.idx.Chunks)-1]
		pending = 0
	}
	start := c.Bytes + pending
	ts := r.Time.UnixNano()
	if c.Lines == 0 {
		c.MinTime, c.MaxTime = ts, ts
	}
	if n := len(c.Marks); start >= int64(n+1)*markEvery {
		c.Marks = append(c.Marks, mark{Off: start, MaxTime: c.MaxTime})
	}
	c.MinTime, c.MaxTime = min(c.MinTime, ts), max(c.MaxTime, ts)
	a.buf = appendLogLine(a.buf, &a.lt, r)
	c.Lines++
	a.idx.Through = r.Index
	if len(a.buf) >= 1<<20 {
		return s.writeBuf(a)
	}
	return nil
}

func (s *FileSink) writeBuf(a *appLog) error {
	if len(a.buf) == 0 {
		return nil
	}
	c := &a.idx.Chunks[len(a.idx.Chunks)-1]
	n, err := a.f.Write(a.buf)
	c.Bytes += int64(n)
	if err != nil {
		return fmt.Errorf("stats: file sink: write %s: %w", a.chunkPath(c), err)
	}
	a.buf = a.buf[:0]
	return nil
}

func (s *FileSink) rotate(a *appLog, now time.Time) error {
	if err := s.writeBuf(a); err != nil {
		return err
	}
	if !s.cfg.NoSync {
		if err := a.f.Sync(); err != nil {
			return fmt.Errorf("stats: file sink: sync: %w", err)
		}
	}
	a.f.Close()
	a.f = nil
	old := a.idx.Chunks[len(a.idx.Chunks)-1].N
	a.idx.Chunks = append(a.idx.Chunks, chunkIndex{N: old + 1, Opened: now.UnixNano()})
	// The index must name the new chunk before it is compressed.
	if err := s.saveIndex(a); err != nil {
		return err
	}
	if err := s.openActive(a, now); err != nil {
		return err
	}
	if !s.cfg.NoCompress {
		s.queueCompress(a, old)
	}
	return nil
}

func (s *FileSink) saveIndex(a *appLog) error {
	b, err := json.Marshal(&a.idx)
	if err != nil {
		return err
	}
	if s.cfg.NoSync {
		tmp := a.indexPath() + ".tmp"
		if err := os.WriteFile(tmp, b, 0o640); err != nil {
			return fmt.Errorf("stats: file sink: %w", err)
		}
		return os.Rename(tmp, a.indexPath())
	}
	if err := writeFileAtomic(a.indexPath(), b); err != nil {
		return fmt.Errorf("stats: file sink: save index: %w", err)
	}
	return nil
}

// commit writes the app's buffer, syncs it and saves the index.
func (s *FileSink) commit(a *appLog) error {
	if err := s.writeBuf(a); err != nil {
		return err
	}
	if !s.cfg.NoSync {
		if err := a.f.Sync(); err != nil {
			return fmt.Errorf("stats: file sink: sync: %w", err)
		}
	}
	if err := s.saveIndex(a); err != nil {
		return err
	}
	close(a.changed)
	a.changed = make(chan struct{})
	return nil
}

// lineTime formats times as RFC 3339 with nine fraction digits, UTC,
// caching the part up to the second (lines of a batch share it).
type lineTime struct {
	sec    int64
	prefix []byte // "2006-01-02T15:04:05."
}

func (lt *lineTime) append(b []byte, t time.Time) []byte {
	sec, ns := t.Unix(), t.Nanosecond()
	if lt.prefix == nil || sec != lt.sec {
		lt.sec = sec
		lt.prefix = append(time.Unix(sec, 0).UTC().AppendFormat(lt.prefix[:0], "2006-01-02T15:04:05"), '.')
	}
	b = append(b, lt.prefix...)
	var d [9]byte
	for i := 8; i >= 0; i-- {
		d[i] = byte('0' + ns%10)
		ns /= 10
	}
	b = append(b, d[:]...)
	return append(b, 'Z')
}

func appendLogLine(b []byte, lt *lineTime, r *Record) []byte {
	b = lt.append(b, r.Time)
	b = append(b, ' ')
	b = strconv.AppendInt(b, r.Instance, 10)
	b = append(b, ' ')
	b = append(b, r.Stream...)
	if r.Truncated {
		b = append(b, '+')
	}
	b = append(b, '|')
	t := r.Text
	if bytes.IndexByte(t, '\\') < 0 && bytes.IndexByte(t, '\n') < 0 && bytes.IndexByte(t, '\r') < 0 {
		b = append(b, t...)
		return append(b, '\n')
	}
	start := 0
	for i, c := range t {
		var esc byte
		switch c {
		case '\\':
			esc = '\\'
		case '\n':
			esc = 'n'
		case '\r':
			esc = 'r'
		default:
			continue
		}
		b = append(b, t[start:i]...)
		b = append(b, '\\', esc)
		start = i + 1
	}
	b = append(b, t[start:]...)
	return append(b, '\n')
}

// LogLine is one line read back from the files.
type LogLine struct {
	Time      time.Time
	Instance  int64
	Stream    string
	Text      []byte
	Truncated bool
}

func parseLogLine(b []byte) (LogLine, error) {
	var l LogLine
	sp := bytes.IndexByte(b, ' ')
	bar := bytes.IndexByte(b, '|')
	if sp < 0 || bar < sp {
		return l, fmt.Errorf("stats: bad log line %.60q", b)
	}
	t, err := time.Parse(time.RFC3339Nano, string(b[:sp]))
	if err != nil {
		return l, fmt.Errorf("stats: bad log line time: %w", err)
	}
	l.Time = t
	rest := b[sp+1 : bar]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 < 0 {
		return l, fmt.Errorf("stats: bad log line %.60q", b)
	}
	if l.Instance, err = strconv.ParseInt(string(rest[:sp2]), 10, 64); err != nil {
		return l, fmt.Errorf("stats: bad log line instance: %w", err)
	}
	st := rest[sp2+1:]
	if n := len(st); n > 0 && st[n-1] == '+' {
		l.Truncated, st = true, st[:n-1]
	}
	l.Stream = string(st)
	text := b[bar+1:]
	out := make([]byte, 0, len(text))
	for i := 0; i < len(text); i++ {
		if text[i] == '\\' && i+1 < len(text) {
			i++
			switch text[i] {
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			default:
				out = append(out, text[i])
			}
			continue
		}
		out = append(out, text[i])
	}
	l.Text = out
	return l, nil
}

func (s *FileSink) compressor() {
	defer s.wg.Done()
	for job := range s.compress {
		if err := s.compressChunk(job.a, job.n); err != nil {
			s.log.Error("stats: file sink: compress chunk", "dir", job.a.dir, "chunk", job.n, "err", err)
		}
	}
}

func (s *FileSink) compressChunk(a *appLog, n int) error {
	a.mu.Lock()
	var c chunkIndex
	found := false
	for _, ci := range a.idx.Chunks[:max(0, len(a.idx.Chunks)-1)] {
		if ci.N == n && !ci.Compressed {
			c, found = ci, true
		}
	}
	a.mu.Unlock()
	if !found {
		return nil
	}
	src := a.chunkPath(&c)
	c.Compressed = true
	dst := a.chunkPath(&c)
	// Ingestion (the collector's receive, journal and sink writes) comes
	// first when the cores are busy; the gzip, which only has to keep up
	// on average, runs on the process's thread at compressorNice and
	// takes what is left. The index update below takes a.mu, which Write
	// waits for, so it runs here, at the sink's own priority: a starved
	// low-priority thread must not hold up ingestion.
	var err error
	_ = threadprio.Do(compressorNice, func() { err = s.gzipChunk(src, dst, c.Bytes) })
	if err != nil {
		return err
	}
	a.mu.Lock()
	for i := range a.idx.Chunks {
		if a.idx.Chunks[i].N == n {
			a.idx.Chunks[i].Compressed = true
		}
	}
	err = s.saveIndex(a)
	a.mu.Unlock()
	if err != nil {
		return err
	}
	return os.Remove(src)
}

// gzipChunk writes the first size bytes of src, gzipped, to dst (by way
// of dst.tmp, renamed once synced).
func (s *FileSink) gzipChunk(src, dst string, size int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst + ".tmp")
	if err != nil {
		return err
	}
	zw, _ := gzip.NewWriterLevel(out, gzip.BestSpeed)
	_, err = io.Copy(zw, io.LimitReader(in, size))
	if err == nil {
		err = zw.Close()
	}
	if err == nil && !s.cfg.NoSync {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(dst+".tmp", dst)
	}
	if err != nil {
		os.Remove(dst + ".tmp")
	}
	return err
}

// snapshot copies an app's index for a reader; ok is false for an app
// with no lines.
func (s *FileSink) snapshot(app string) (appIndex, *appLog, error) {
	a, err := s.app(app)
	if err != nil {
		return appIndex{}, nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	idx := appIndex{Through: a.idx.Through, Chunks: append([]chunkIndex(nil), a.idx.Chunks...)}
	return idx, a, nil
}

// openChunk opens a chunk for reading from the start (decompressing).
// A chunk compressed since the caller's snapshot is found under its new
// name.
func openChunk(a *appLog, c chunkIndex) (io.ReadCloser, error) {
	f, err := os.Open(a.chunkPath(&c))
	if err != nil && !c.Compressed && errors.Is(err, os.ErrNotExist) {
		c.Compressed = true
		f, err = os.Open(a.chunkPath(&c))
	}
	if err != nil {
		return nil, fmt.Errorf("stats: open chunk: %w", err)
	}
	type readCloser struct {
		io.Reader
		io.Closer
	}
	if !c.Compressed {
		return readCloser{io.LimitReader(f, c.Bytes), f}, nil
	}
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 256<<10))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stats: open chunk %s: %w", f.Name(), err)
	}
	return readCloser{io.LimitReader(zr, c.Bytes), f}, nil
}

// scanChunk calls fn for each line of c from byte off (of the
// uncompressed chunk) on.
func scanChunk(a *appLog, c chunkIndex, off int64, fn func(line []byte) error) error {
	rc, err := openChunk(a, c)
	if err != nil {
		return err
	}
	defer rc.Close()
	if off > 0 {
		if _, err := io.CopyN(io.Discard, rc, off); err != nil {
			return fmt.Errorf("stats: seek chunk %d: %w", c.N, err)
		}
	}
	br := bufio.NewReaderSize(rc, 256<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			if err := fn(line[:len(line)-1]); err != nil {
				return err
			}
			continue
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: read it whole.
			rest, err2 := br.ReadBytes('\n')
			full := append(append([]byte(nil), line...), rest...)
			if err2 == nil {
				if err := fn(full[:len(full)-1]); err != nil {
					return err
				}
				continue
			}
			err = err2
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Tail returns the app's last n lines, oldest first.
func (s *FileSink) Tail(app string, n int) ([]LogLine, error) {
	idx, a, err := s.snapshot(app)
	if err != nil {
		return nil, err
	}
	return tailOf(a, idx, n)
}

func tailOf(a *appLog, idx appIndex, n int) ([]LogLine, error) {
	if n <= 0 {
		return nil, nil
	}
	// Walk back through the index to the chunk the last n lines start in.
	first, need := len(idx.Chunks), int64(n)
	for first > 0 && need > 0 {
		first--
		need -= idx.Chunks[first].Lines
	}
	skip := max(0, -need) // lines of the first chunk before the tail
	var out []LogLine
	for i := first; i < len(idx.Chunks); i++ {
		k := int64(0)
		err := scanChunk(a, idx.Chunks[i], 0, func(line []byte) error {
			k++
			if i == first && k <= skip {
				return nil
			}
			l, err := parseLogLine(line)
			if err != nil {
				return err
			}
			out = append(out, l)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out, nil
}

// Since returns the app's lines stamped at or after t, in the order they
// were written, at most limit of them (0: no limit). The index skips the
// chunks, and the parts of a chunk, that hold only older lines.
func (s *FileSink) Since(app string, t time.Time, limit int) ([]LogLine, error) {
	idx, a, err := s.snapshot(app)
	if err != nil {
		return nil, err
	}
	var out []LogLine
	tn := t.UnixNano()
	errLimit := errors.New("limit")
	for _, c := range idx.Chunks {
		if c.Lines == 0 || c.MaxTime < tn {
			continue
		}
		var off int64
		for _, m := range c.Marks {
			if m.MaxTime < tn && m.Off <= c.Bytes {
				off = m.Off
			}
		}
		err := scanChunk(a, c, off, func(line []byte) error {
			l, err := parseLogLine(line)
			if err != nil {
				return err
			}
			if !l.Time.Before(t) {
				out = append(out, l)
				if limit > 0 && len(out) >= limit {
					return errLimit
				}
			}
			return nil
		})
		if errors.Is(err, errLimit) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Follow calls fn with the app's last n lines and then with every line
// written after them, as they are written, until ctx is done or fn
// returns an error (which Follow returns). It returns nil on cancel. fn
// runs on Follow's goroutine.
func (s *FileSink) Follow(ctx context.Context, app string, n int, fn func(LogLine) error) error {
	a, err := s.app(app)
	if err != nil {
		return err
	}
	a.mu.Lock()
	changed := a.changed
	idx := appIndex{Chunks: append([]chunkIndex(nil), a.idx.Chunks...)}
	a.mu.Unlock()
	var posChunk int
	var posOff int64
	if k := len(idx.Chunks); k > 0 {
		posChunk, posOff = idx.Chunks[k-1].N, idx.Chunks[k-1].Bytes
	}
	tail, err := tailOf(a, idx, n)
	if err != nil {
		return err
	}
	for _, l := range tail {
		if err := fn(l); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-time.After(time.Second):
		}
		a.mu.Lock()
		changed = a.changed
		chunks := append([]chunkIndex(nil), a.idx.Chunks...)
		a.mu.Unlock()
		for _, c := range chunks {
			if c.N < posChunk {
				continue
			}
			if c.N > posChunk {
				posChunk, posOff = c.N, 0
			}
			if c.Bytes <= posOff {
				continue
			}
			end := c.Bytes
			err := scanChunk(a, c, posOff, func(line []byte) error {
				l, err := parseLogLine(line)
				if err != nil {
					return err
				}
				return fn(l)
			})
			if err != nil {
				return err
			}
			posOff = end
		}
	}
}
