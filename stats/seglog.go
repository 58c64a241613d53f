package stats

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// segLog is an append-only log of records in segment files, used for the
// emitter's spool and the collector's journal. Each record is framed as
//
//	u32 length (little endian) | u32 CRC-32C of the payload | payload
//
// and numbered from 1 across segments; a segment's file name carries the
// number of its first record (<prefix>-<20 digits>.seg). Appends go to a
// buffer that flush writes; a failed write (a full disk) truncates the
// segment back to its last whole record and reports how many buffered
// records were lost, so what was on disk before stays readable. On open, a
// torn last record (a crash mid-write) is cut off.
type segLog struct {
	dir, prefix string
	maxSeg      int64

	// mu is the owner's mutex (the emitter's or the collector's), so that
	// the owner can append under the lock it already holds; methods named
	// ...Locked expect it held, the others take it.
	mu   *sync.Mutex
	segs []*segment // oldest first; the last is the one appended to
	f    *os.File   // the last segment, open for appending
	buf  []byte     // appended, not yet written
	nbuf int        // records in buf
	next uint64     // number of the next record appended
}

type segment struct {
	first uint64 // number of its first record
	path  string
	size  int64  // bytes written (readable)
	count uint64 // records written
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

const frameHeader = 8

// maxFrame bounds one record; anything larger in a segment is corruption.
const maxFrame = 16 << 20

func openSegLog(dir, prefix string, maxSeg int64, mu *sync.Mutex) (*segLog, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("stats: make directory %s: %w", dir, err)
	}
	l := &segLog{dir: dir, prefix: prefix, maxSeg: maxSeg, next: 1, mu: mu}
	names, err := filepath.Glob(filepath.Join(dir, prefix+"-*.seg"))
	if err != nil {
		return nil, err
	}
	for _, p := range names {
		num := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), prefix+"-"), ".seg")
		first, err := strconv.ParseUint(num, 10, 64)
		if err != nil || first == 0 {
			continue
		}
		l.segs = append(l.segs, &segment{first: first, path: p})
	}
	sort.Slice(l.segs, func(i, j int) bool { return l.segs[i].first < l.segs[j].first })
	for i, s := range l.segs {
		size, count, err := scanSegment(s.path)
		if err != nil {
			return nil, err
		}
		if i < len(l.segs)-1 && s.first+count != l.segs[i+1].first {
			// A gap or an overlap: keep going, numbering follows files.
			count = l.segs[i+1].first - s.first
		}
		s.size, s.count = size, count
	}
	if n := len(l.segs); n > 0 {
		last := l.segs[n-1]
		l.next = last.first + last.count
		if err := os.Truncate(last.path, last.size); err != nil {
			return nil, fmt.Errorf("stats: cut torn tail of %s: %w", last.path, err)
		}
		f, err := os.OpenFile(last.path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return nil, fmt.Errorf("stats: open %s: %w", last.path, err)
		}
		l.f = f
	}
	return l, nil
}

// scanSegment returns the size up to the last whole, intact record and the
// number of records.
func scanSegment(path string) (int64, uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("stats: open %s: %w", path, err)
	}
	defer f.Close()
	r := &frameReader{f: f, limit: -1}
	var n uint64
	for {
		if _, err := r.next(); err != nil {
			return r.off, n, nil
		}
		n++
	}
}

// frameReader reads frames from a segment file up to limit (or to EOF
// when limit < 0).
type frameReader struct {
	f     *os.File
	off   int64 // offset of the next frame
	limit int64
	buf   []byte
	start int // buf[start:] is unread, from file offset off
}

var errTorn = errors.New("stats: torn or corrupt frame")

func (r *frameReader) fill(n int) error {
	if len(r.buf)-r.start >= n {
		return nil
	}
	copy(r.buf, r.buf[r.start:])
	r.buf = r.buf[:len(r.buf)-r.start]
	r.start = 0
	if cap(r.buf) < n || cap(r.buf) < 256<<10 {
		nb := make([]byte, len(r.buf), max(n, 256<<10))
		copy(nb, r.buf)
		r.buf = nb
	}
	for len(r.buf) < n {
		want := cap(r.buf)
		if r.limit >= 0 {
			avail := r.limit - r.off - int64(len(r.buf))
			if int64(want-len(r.buf)) > avail {
				want = len(r.buf) + int(avail)
			}
			if want <= len(r.buf) {
				return io.EOF
			}
		}
		m, err := r.f.ReadAt(r.buf[len(r.buf):want], r.off+int64(len(r.buf)))
		r.buf = r.buf[:len(r.buf)+m]
		if len(r.buf) >= n {
			return nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return err
		}
	}
	return nil
}

// next returns the next frame's payload, valid until the next call; io.EOF
// at the end (or a torn frame at the limit), errTorn on a bad frame.
func (r *frameReader) next() ([]byte, error) {
	if err := r.fill(frameHeader); err != nil {
		return nil, err
	}
	h := r.buf[r.start:]
	n := binary.LittleEndian.Uint32(h)
	sum := binary.LittleEndian.Uint32(h[4:])
	if n > maxFrame {
		return nil, errTorn
	}
	if err := r.fill(frameHeader + int(n)); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errTorn
		}
		return nil, err
	}
	p := r.buf[r.start+frameHeader : r.start+frameHeader+int(n)]
	if crc32.Checksum(p, crcTable) != sum {
		return nil, errTorn
	}
	r.start += frameHeader + int(n)
	r.off += frameHeader + int64(n)
	return p, nil
}

func (l *segLog) appendLocked(payload []byte) uint64 {
	l.buf = binary.LittleEndian.AppendUint32(l.buf, uint32(len(payload)))
	l.buf = binary.LittleEndian.AppendUint32(l.buf, crc32.Checksum(payload, crcTable))
	l.buf = append(l.buf, payload...)
	l.nbuf++
	n := l.next
	l.next++
	return n
}

// appendFrameLocked appends a record already framed (length, CRC,
// payload), its CRC checked by the caller.
func (l *segLog) appendFrameLocked(frame []byte) uint64 {
	l.buf = append(l.buf, frame...)
	l.nbuf++
	n := l.next
	l.next++
	return n
}

// flush writes the buffer. On a write error the segment is cut back to
// its last whole record and the buffered records are given up: lost says
// how many, and the numbers they had are reused.
func (l *segLog) flush() (lost int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flushLocked()
}

func (l *segLog) flushLocked() (int, error) {
	if len(l.buf) == 0 {
		return 0, nil
	}
	first := l.next - uint64(l.nbuf)
	if l.f == nil || len(l.segs) > 0 && l.segs[len(l.segs)-1].size >= l.maxSeg {
		if err := l.rollLocked(first); err != nil {
			return l.dropBufLocked(), err
		}
	}
	s := l.segs[len(l.segs)-1]
	n, err := l.f.Write(l.buf)
	if err != nil {
		if n > 0 {
			_ = l.f.Truncate(s.size)
		}
		return l.dropBufLocked(), fmt.Errorf("stats: write %s: %w", s.path, err)
	}
	s.size += int64(n)
	s.count += uint64(l.nbuf)
	l.buf, l.nbuf = l.buf[:0], 0
	return 0, nil
}

func (l *segLog) dropBufLocked() int {
	n := l.nbuf
	l.next -= uint64(n)
	l.buf, l.nbuf = l.buf[:0], 0
	return n
}

func (l *segLog) rollLocked(first uint64) error {
	p := filepath.Join(l.dir, fmt.Sprintf("%s-%020d.seg", l.prefix, first))
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("stats: create segment %s: %w", p, err)
	}
	if l.f != nil {
		_ = l.f.Sync()
		l.f.Close()
	}
	l.f = f
	l.segs = append(l.segs, &segment{first: first, path: p})
	return nil
}

// fsync makes what was written before the call durable: it fsyncs the
// last segment, without the lock, so appends go on meanwhile. It does not
// write the buffer: the owner does that under its lock, where it can
// handle a failed write (the collector rewinds its emitters' positions;
// a write failed here would drop records the collector counts as
// journaled, and their resends would be skipped as duplicates).
func (l *segLog) fsync() error {
	l.mu.Lock()
	f := l.f
	l.mu.Unlock()
	if f != nil {
		// A segment rolled meanwhile was synced before it was closed.
		if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			return fmt.Errorf("stats: fsync %s: %w", f.Name(), err)
		}
	}
	return nil
}

// syncLocked flushes the buffer and fsyncs the last segment, with the
// lock held throughout.
func (l *segLog) syncLocked() (int, error) {
	lost, err := l.flushLocked()
	if err != nil {
		return lost, err
	}
	if l.f != nil {
		if err := l.f.Sync(); err != nil {
			return 0, fmt.Errorf("stats: fsync %s: %w", l.f.Name(), err)
		}
	}
	return 0, nil
}

// written is the number after the last record written (readable).
func (l *segLog) written() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writtenLocked()
}

func (l *segLog) writtenLocked() uint64 { return l.next - uint64(l.nbuf) }

// first is the number of the oldest record still kept.
func (l *segLog) first() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.segs) == 0 {
		return l.next - uint64(l.nbuf)
	}
	return l.segs[0].first
}

// trim deletes whole segments whose records are all below n; the last
// segment is always kept (it carries the numbering).
func (l *segLog) trim(n uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.segs) > 1 && l.segs[1].first <= n {
		if err := os.Remove(l.segs[0].path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("stats: remove segment: %w", err)
		}
		l.segs = l.segs[1:]
	}
	return nil
}

// reset removes every segment and starts numbering at next.
func (l *segLog) resetLocked(next uint64) error {
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	for _, s := range l.segs {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("stats: remove segment: %w", err)
		}
	}
	l.segs, l.buf, l.nbuf, l.next = nil, l.buf[:0], 0, next
	return nil
}

func (l *segLog) closeLocked() error {
	_, err := l.flushLocked()
	if l.f != nil {
		if e := l.f.Close(); err == nil {
			err = e
		}
		l.f = nil
	}
	return err
}

// segCursor reads records from number n on, following appends.
type segCursor struct {
	l    *segLog
	n    uint64 // number of the next record next returns
	seg  uint64 // first of the segment r reads
	r    *frameReader
	file *os.File
	// last and lastN are what next returned last; back makes next return
	// them again (see unread).
	last  []byte
	lastN uint64
	back  bool
	// lim is the log's written count when the cursor last looked (under
	// the lock): records below it are on disk, and those in r's segment
	// below r's limit are read without taking the lock again.
	lim uint64
}

func (l *segLog) cursor(n uint64) *segCursor { return &segCursor{l: l, n: n} }

// next returns the next record's number and payload (valid until the next
// call), or io.EOF when every written record has been read.
func (c *segCursor) next() (uint64, []byte, error) {
	if c.back {
		c.back = false
		c.n = c.lastN + 1
		return c.lastN, c.last, nil
	}
	if c.r != nil && c.n < c.lim {
		// Known written, and in r's segment unless r is at its limit:
		// no lock (the owner holds it while it appends).
		p, err := c.r.next()
		if err == nil {
			n := c.n
			c.n++
			c.last, c.lastN = p, n
			return n, p, nil
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, errTorn) {
			return 0, nil, err
		}
		// At r's limit: look again under the lock.
	}
	for {
		c.l.mu.Lock()
		written := c.l.next - uint64(c.l.nbuf)
		c.lim = written
		if c.n >= written {
			c.l.mu.Unlock()
			return 0, nil, io.EOF
		}
		// Find the segment holding c.n.
		var s *segment
		idx := sort.Search(len(c.l.segs), func(i int) bool { return c.l.segs[i].first > c.n }) - 1
		if idx < 0 {
			// Trimmed away: skip to the oldest kept.
			if len(c.l.segs) == 0 {
				c.l.mu.Unlock()
				return 0, nil, io.EOF
			}
			idx = 0
			c.n = c.l.segs[0].first
		}
		s = c.l.segs[idx]
		size := s.size
		c.l.mu.Unlock()
		if c.r == nil || c.seg != s.first {
			if c.file != nil {
				c.file.Close()
			}
			f, err := os.Open(s.path)
			if err != nil {
				return 0, nil, fmt.Errorf("stats: open segment %s: %w", s.path, err)
			}
			c.file, c.seg = f, s.first
			c.r = &frameReader{f: f}
			// Skip to c.n.
			for k := s.first; k < c.n; k++ {
				c.r.limit = size
				if _, err := c.r.next(); err != nil {
					return 0, nil, fmt.Errorf("stats: seek in %s: %w", s.path, err)
				}
			}
		}
		c.r.limit = size
		p, err := c.r.next()
		if err == nil {
			n := c.n
			c.n++
			c.last, c.lastN = p, n
			return n, p, nil
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, errTorn) {
			return 0, nil, err
		}
		// This segment is exhausted; the record is in a later one.
		if c.r.off < size {
			return 0, nil, fmt.Errorf("stats: corrupt record %d in %s at offset %d", c.n, s.path, c.r.off)
		}
		c.l.mu.Lock()
		later := idx+1 < len(c.l.segs)
		if later {
			c.n = max(c.n, c.l.segs[idx+1].first)
		}
		c.l.mu.Unlock()
		if !later {
			return 0, nil, io.EOF
		}
		c.r = nil
	}
}

// seek moves the cursor to record n. The next read opens the segment
// again and skips to n from its start: to step back over the record just
// read, unread costs nothing.
func (c *segCursor) seek(n uint64) {
	c.n = n
	c.r = nil
	c.back = false
}

// unread puts back the record next returned last, which the next call
// returns again. Call it at most once after a successful next.
func (c *segCursor) unread() {
	c.back = true
	c.n = c.lastN
}

func (c *segCursor) close() {
	if c.file != nil {
		c.file.Close()
		c.file = nil
	}
	c.r = nil
	c.back = false
}
