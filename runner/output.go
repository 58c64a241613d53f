package runner

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Stream names an output stream of an instance.
type Stream string

// The two streams captured from every instance.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// Line is one line of an instance's output.
type Line struct {
	App      string
	Instance int64
	Stream   Stream
	Time     time.Time
	// Text is the line without its newline. It is only valid during the
	// WriteLine call: a sink that keeps it must copy it.
	Text []byte
	// Truncated is set on a piece of a line longer than the runner's
	// bound (Config.MaxLineBytes): the line continues in the next Line.
	Truncated bool
}

// Sink receives instance output, line by line. The runner calls WriteLine
// from one goroutine per instance stream, so calls for different streams
// and instances are concurrent; calls for one stream are in order. A sink
// that blocks slows that app down (its pipe fills) but loses nothing; an
// error is logged by the runner and the line is dropped, so a sink that
// must lose nothing never returns one: stats.Emitter spools to disk
// instead (examples/platform wraps it in a SinkFunc). FileSink writes
// plain files. A panic in WriteLine is recovered and reported like an
// error (with its stack); that line is dropped and the app runs on.
type Sink interface {
	WriteLine(l *Line) error
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(l *Line) error

// WriteLine calls f(l).
func (f SinkFunc) WriteLine(l *Line) error { return f(l) }

// FileSink appends each app's output to <Dir>/<app>.log, one line per
// Line: time (RFC 3339, UTC), instance, stream, a '+' on a truncated piece
// and '|', then the text.
//
// A file that would grow past its bound is rotated: <app>.log becomes
// <app>.log.1, .1 becomes .2 and so on, and the oldest beyond the number
// kept is deleted, so an app that floods its output costs the node a
// bounded amount of disk.
type FileSink struct {
	dir      string
	maxBytes int64
	keep     int
	mu       sync.Mutex
	files    map[string]*fileSinkFile
}

type fileSinkFile struct {
	mu   sync.Mutex
	path string
	f    *os.File
	size int64
	buf  []byte
}

// Defaults of NewFileSink's rotation.
const (
	DefaultLogFileBytes = 64 << 20
	DefaultLogFiles     = 4
)

// NewFileSink returns a FileSink writing under dir, which it creates,
// rotating each app's file at DefaultLogFileBytes and keeping
// DefaultLogFiles rotated files.
func NewFileSink(dir string) (*FileSink, error) {
	return NewRotatingFileSink(dir, DefaultLogFileBytes, DefaultLogFiles)
}

// NewRotatingFileSink is NewFileSink with its own bounds: a file is
// rotated before it would pass maxBytes, and keep rotated files are kept
// (so an app's output takes at most about (keep+1)*maxBytes).
func NewRotatingFileSink(dir string, maxBytes int64, keep int) (*FileSink, error) {
	if maxBytes < 4096 || keep < 1 || keep > 1000 {
		return nil, fmt.Errorf("runner: file sink rotation at %d bytes keeping %d files: want at least 4096 bytes and 1-1000 files", maxBytes, keep)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("runner: file sink directory %s: %w", dir, err)
	}
	return &FileSink{dir: dir, maxBytes: maxBytes, keep: keep, files: map[string]*fileSinkFile{}}, nil
}

func openLog(p string) (*os.File, int64, error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW, 0o640)
	if err != nil {
		return nil, 0, fmt.Errorf("runner: open log file %s: %w", p, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("runner: stat log file %s: %w", p, err)
	}
	return f, fi.Size(), nil
}

// rotate shifts the files of ff and opens a fresh one; ff.mu is held.
func (s *FileSink) rotate(ff *fileSinkFile) error {
	if err := ff.f.Close(); err != nil {
		return fmt.Errorf("runner: close log file %s: %w", ff.path, err)
	}
	_ = os.Remove(ff.path + "." + strconv.Itoa(s.keep))
	for k := s.keep - 1; k >= 1; k-- {
		if err := os.Rename(ff.path+"."+strconv.Itoa(k), ff.path+"."+strconv.Itoa(k+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("runner: rotate log file %s: %w", ff.path, err)
		}
	}
	if err := os.Rename(ff.path, ff.path+".1"); err != nil {
		return fmt.Errorf("runner: rotate log file %s: %w", ff.path, err)
	}
	f, size, err := openLog(ff.path)
	if err != nil {
		return err
	}
	ff.f, ff.size = f, size
	return nil
}

// WriteLine appends l to its app's file.
func (s *FileSink) WriteLine(l *Line) error {
	s.mu.Lock()
	if s.files == nil {
		s.mu.Unlock()
		return errors.New("runner: file sink is closed")
	}
	ff, ok := s.files[l.App]
	if !ok {
		p := filepath.Join(s.dir, l.App+".log")
		f, size, err := openLog(p)
		if err != nil {
			s.mu.Unlock()
			return err
		}
		ff = &fileSinkFile{path: p, f: f, size: size}
		s.files[l.App] = ff
	}
	s.mu.Unlock()
	ff.mu.Lock()
	defer ff.mu.Unlock()
	b := ff.buf[:0]
	b = l.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, ' ')
	b = strconv.AppendInt(b, l.Instance, 10)
	b = append(b, ' ')
	b = append(b, l.Stream...)
	if l.Truncated {
		b = append(b, '+')
	}
	b = append(b, " |"...)
	b = append(b, l.Text...)
	b = append(b, '\n')
	ff.buf = b
	if cap(ff.buf) > 256<<10 {
		ff.buf = nil
	}
	if ff.size > 0 && ff.size+int64(len(b)) > s.maxBytes {
		if err := s.rotate(ff); err != nil {
			return err
		}
	}
	n, err := ff.f.Write(b)
	ff.size += int64(n)
	if err != nil {
		return fmt.Errorf("runner: write log of app %q: %w", l.App, err)
	}
	return nil
}

// Close closes the files; later writes fail.
func (s *FileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for _, ff := range s.files {
		ff.mu.Lock()
		if err := ff.f.Close(); err != nil && first == nil {
			first = err
		}
		ff.mu.Unlock()
	}
	s.files = nil
	return first
}

// tail keeps the last lines of a stream, bounded in count and length, for
// error messages.
type tail struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

const (
	tailLines   = 20
	tailLineMax = 512
)

func (t *tail) add(b []byte) {
	if len(b) > tailLineMax {
		b = b[:tailLineMax]
	}
	s := string(b)
	t.mu.Lock()
	if t.lines == nil {
		t.lines = make([]string, tailLines)
	}
	t.lines[t.next] = s
	t.next = (t.next + 1) % tailLines
	if t.next == 0 {
		t.full = true
	}
	t.mu.Unlock()
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []byte
	emit := func(s string) {
		out = append(out, s...)
		out = append(out, '\n')
	}
	if t.full {
		for _, s := range t.lines[t.next:] {
			emit(s)
		}
	}
	for _, s := range t.lines[:t.next] {
		emit(s)
	}
	return string(out)
}

// capture reads r line by line into sink until EOF. Lines longer than max
// are cut into pieces marked Truncated, so a flood without newlines holds
// at most max bytes here.
func capture(r io.Reader, max int, tmpl Line, sink Sink, t *tail, onErr func(error)) {
	br := bufio.NewReaderSize(r, max)
	l := tmpl
	reported := false
	for {
		b, err := br.ReadSlice('\n')
		if len(b) == 0 && err != nil {
			return
		}
		l.Truncated = errors.Is(err, bufio.ErrBufferFull)
		if n := len(b); n > 0 && b[n-1] == '\n' {
			b = b[:n-1]
			if n := len(b); n > 0 && b[n-1] == '\r' {
				b = b[:n-1]
			}
		}
		l.Time = time.Now()
		l.Text = b
		if t != nil {
			t.add(b)
		}
		if sink != nil {
			if serr := writeLineSafe(sink, &l); serr != nil && !reported {
				reported = true
				onErr(serr)
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}
