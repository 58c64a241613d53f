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
// error is logged by the runner and the line is dropped. The stats package
// implements Sink; FileSink writes plain files.
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
type FileSink struct {
	dir   string
	mu    sync.Mutex
	files map[string]*fileSinkFile
}

type fileSinkFile struct {
	mu  sync.Mutex
	f   *os.File
	buf []byte
}

// NewFileSink returns a FileSink writing under dir, which it creates.
func NewFileSink(dir string) (*FileSink, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("runner: file sink directory %s: %w", dir, err)
	}
	return &FileSink{dir: dir, files: map[string]*fileSinkFile{}}, nil
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
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("runner: open log file %s: %w", p, err)
		}
		ff = &fileSinkFile{f: f}
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
	if _, err := ff.f.Write(b); err != nil {
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
			if serr := sink.WriteLine(&l); serr != nil && !reported {
				reported = true
				onErr(serr)
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}
