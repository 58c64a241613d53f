package stats

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/paaskit/paaskit/zmqloop"
)

// maxRecordOverhead bounds a framed record's bytes beside its text: frame
// header, kind, flags, varints, emitter, app, stream, name, value and the
// truncation marker.
const maxRecordOverhead = 72 + maxEmitterLen + maxAppLen + maxStreamLen + maxNameLen + len(TruncatedMarker)

// Emitter defaults.
const (
	DefaultQueueBytes    = 8 << 20
	DefaultBatchRecords  = 512
	DefaultAckInterval   = 20 * time.Millisecond
	DefaultAckTimeout    = 2 * time.Second
	DefaultProbeInterval = 250 * time.Millisecond
	DefaultSegmentBytes  = 64 << 20
)

// EmitterConfig configures an Emitter. Zero values are the documented
// defaults.
type EmitterConfig struct {
	// Collector is the collector's PULL endpoint (connected to) and Ack
	// its ack (ROUTER) endpoint. Both required. An emitter ships to one
	// collector: its seqs are checked by that collector's journal, so two
	// collectors sharing one emitter's stream would each see gaps.
	Collector, Ack []string
	// Codec signs. Required.
	Codec *zmqloop.Codec
	// SpoolDir holds the spool: records the collector has not
	// acknowledged while it is unreachable, kept across restarts.
	// Required; one emitter per directory (NewEmitter fails with
	// ErrDirInUse while another holds it, until Close).
	SpoolDir string
	// Name names the emitter (default: the host name); each start adds a
	// random suffix, so an incarnation's seqs never collide with an
	// earlier one's. [A-Za-z0-9._-], at most 64 bytes.
	Name string
	// QueueBytes bounds the memory queue, which holds records until the
	// collector acknowledges them. When it is full the records go to the
	// spool file instead. Default DefaultQueueBytes (8 MiB).
	QueueBytes int
	// MaxLineBytes bounds one log line; a longer one is cut and ends with
	// TruncatedMarker. Default DefaultMaxLineBytes (16 KiB); at most 1 MiB,
	// and a line of it must fit in one message of Codec's MaxSize (with
	// the default 1 MiB, lines up to about 760 KiB).
	MaxLineBytes int
	// BatchRecords is the most records in one pushed message; a message
	// also stays within Codec's MaxSize. Default DefaultBatchRecords.
	BatchRecords int
	// AckInterval is how often the emitter asks for acknowledgements while
	// records are unacknowledged. Default DefaultAckInterval (20ms).
	AckInterval time.Duration
	// AckTimeout is how long the emitter waits for acknowledgements to
	// progress before it treats the collector as unreachable: it spools
	// everything unacknowledged and resends it from the spool once the
	// collector answers again. Default DefaultAckTimeout (2s).
	AckTimeout time.Duration
	// ProbeInterval is how often an unreachable collector is asked again.
	// Default DefaultProbeInterval (250ms).
	ProbeInterval time.Duration
	// SegmentBytes is the size at which a spool file is rolled. Default
	// DefaultSegmentBytes (64 MiB).
	SegmentBytes int64
	// ReportApp is the app under which the emitter counts the records it
	// dropped (counter "emitter_records_dropped"). Default "paaskit".
	ReportApp string
	// Now is the clock stamped on records. Default time.Now.
	Now func() time.Time
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// EmitterStats counts what an Emitter did.
type EmitterStats struct {
	Emitted uint64 // records accepted from callers
	Acked   uint64 // records the collector acknowledged
	Queued  int    // bytes in the memory queue
	Spooled uint64 // records written to the spool
	// SpoolPending is true while the spool holds records not yet
	// acknowledged.
	SpoolPending bool
	// Dropped counts records lost because the spool could not be written
	// (a full disk). Nothing else is ever dropped.
	Dropped uint64
	// Truncated counts log lines cut to MaxLineBytes.
	Truncated uint64
	// Invalid counts records refused at the call: an app or stream that
	// is not a name, a metric name that is not [a-z0-9_:], a NaN or
	// infinite value. They are a caller's bug and are not sent.
	Invalid uint64
	// Online is true while the collector acknowledges.
	Online bool
}

// Emitter records counters, gauges, timings and log lines and ships them
// to the collector. Its recording methods are safe for concurrent use,
// never wait for the network and do not allocate: a record is encoded into
// the memory queue under a mutex. Run ships them.
type Emitter struct {
	cfg     EmitterConfig
	log     *slog.Logger
	id      string // this incarnation
	maxLine int
	chunkSz int

	mu     sync.Mutex
	seq    uint64   // last seq given out
	chunks []*chunk // memory queue, oldest first, records in seq order
	free   []*chunk
	// retired are chunks the queue gave up when it moved to the spool:
	// the shipper may still be reading one, so they go back to free only
	// from the shipper's own goroutine (trimMemLocked).
	retired []*chunk
	// mem is where chunks come from (off the heap, in huge pages where
	// the kernel allows), the heap once it is used up; Close frees it.
	mem *queueMem
	// uses numbers the chunks' turns in the queue (chunk.use).
	uses uint64
	// running is true from Run's start to its end: Close frees mem only
	// when no shipper can read a chunk.
	running  bool
	closed   bool
	queued   int
	spooling bool // new records go to the spool, not the memory queue
	gen      uint64
	spool    *segLog
	// sendSeq is the next seq to push from the memory queue.
	sendSeq uint64
	// lastErr is the last spool write error, logged by Run.
	lastErr error
	lock    *os.File // flock on SpoolDir, released by Close

	wake chan struct{}

	emitted, acked, spooled, dropped, truncated, invalid atomic.Uint64
	online                                               atomic.Bool
	spoolPending                                         atomic.Bool
}

// chunk is a piece of the memory queue: records framed as in a segLog,
// seqs first..last.
type chunk struct {
	buf         []byte
	first, last uint64
	n           int
	// use is this turn's number (Emitter.uses), so that the shipper's
	// hint of where it was in a chunk dies with the turn.
	use uint64
}

// NewEmitter validates cfg, opens the spool and returns an Emitter. It
// records from the start; Run ships.
func NewEmitter(cfg EmitterConfig) (*Emitter, error) {
	switch {
	case len(cfg.Collector) == 0 || len(cfg.Ack) == 0:
		return nil, errors.New("stats: new emitter: Collector and Ack endpoints are required")
	case cfg.Codec == nil:
		return nil, errors.New("stats: new emitter: Codec is required")
	case cfg.SpoolDir == "":
		return nil, errors.New("stats: new emitter: SpoolDir is required")
	case cfg.QueueBytes < 0 || cfg.MaxLineBytes < 0 || cfg.MaxLineBytes > 1<<20 || cfg.BatchRecords < 0 ||
		cfg.AckInterval < 0 || cfg.AckTimeout < 0 || cfg.ProbeInterval < 0 || cfg.SegmentBytes < 0:
		return nil, fmt.Errorf("stats: new emitter: a negative size or duration, or MaxLineBytes %d over 1 MiB", cfg.MaxLineBytes)
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.QueueBytes, DefaultQueueBytes)
	def(&cfg.MaxLineBytes, DefaultMaxLineBytes)
	def(&cfg.BatchRecords, DefaultBatchRecords)
	defD(&cfg.AckInterval, DefaultAckInterval)
	defD(&cfg.AckTimeout, DefaultAckTimeout)
	defD(&cfg.ProbeInterval, DefaultProbeInterval)
	if cfg.SegmentBytes == 0 {
		cfg.SegmentBytes = DefaultSegmentBytes
	}
	if need, room := cfg.MaxLineBytes+maxRecordOverhead, maxFramesFor(cfg.Codec.MaxSize()); need > room {
		return nil, fmt.Errorf("stats: new emitter: a line of MaxLineBytes %d does not fit in a message of the codec's MaxSize %d (at most %d bytes of records)",
			cfg.MaxLineBytes, cfg.Codec.MaxSize(), room)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReportApp == "" {
		cfg.ReportApp = "paaskit"
	}
	if !validApp(cfg.ReportApp) {
		return nil, fmt.Errorf("stats: new emitter: ReportApp %q is not a valid app name", cfg.ReportApp)
	}
	if cfg.Name == "" {
		h, _ := os.Hostname()
		cfg.Name = sanitizeName(h)
	}
	if !validApp(cfg.Name) {
		return nil, fmt.Errorf("stats: new emitter: Name %q is not 1-64 bytes of [A-Za-z0-9._-]", cfg.Name)
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("stats: new emitter: %w", err)
	}
	e := &Emitter{cfg: cfg, log: cfg.Logger, id: cfg.Name + "." + hex.EncodeToString(rnd[:]),
		maxLine: cfg.MaxLineBytes, wake: make(chan struct{}, 1)}
	if e.log == nil {
		e.log = slog.Default()
	}
	tuneMalloc()
	e.chunkSz = max(64<<10, 2*(cfg.MaxLineBytes+512))
	// The queue holds at most QueueBytes/chunkSz chunks and one more
	// (tailChunk); retired ones wait for the shipper on top of that, and
	// come from the heap if the mapping is used up.
	e.mem = newQueueMem((cfg.QueueBytes/e.chunkSz + 2) * e.chunkSz)
	lock, err := lockDir(cfg.SpoolDir)
	if err != nil {
		e.mem.free()
		return nil, fmt.Errorf("stats: new emitter: %w", err)
	}
	e.lock = lock
	sp, err := openSegLog(cfg.SpoolDir, "spool", cfg.SegmentBytes, &e.mu)
	if err != nil {
		lock.Close()
		e.mem.free()
		return nil, fmt.Errorf("stats: new emitter: %w", err)
	}
	e.spool = sp
	e.sendSeq = 1
	if sp.first() < sp.written() {
		// A previous incarnation left records: they go first, and so
		// everything after them goes through the spool until it drains.
		e.spooling = true
		e.spoolPending.Store(true)
	}
	return e, nil
}

func sanitizeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	if len(b) == 0 || string(b) == "." || string(b) == ".." {
		return "emitter"
	}
	return string(b)
}

// ID is this incarnation's emitter id, as records carry it.
func (e *Emitter) ID() string { return e.id }

// Count adds delta to the counter name (a count of events, for example
// "requests"; the Prometheus endpoint adds _total).
func (e *Emitter) Count(t Tags, name string, delta float64) {
	e.add(KindCounter, &t, name, delta, nil, false, 0)
}

// Gauge sets the gauge name to v, in base units (bytes, not KiB).
func (e *Emitter) Gauge(t Tags, name string, v float64) { e.add(KindGauge, &t, name, v, nil, false, 0) }

// Timing records one duration of name (the Prometheus endpoint adds
// _seconds).
func (e *Emitter) Timing(t Tags, name string, d time.Duration) {
	e.add(KindTiming, &t, name, d.Seconds(), nil, false, 0)
}

// Log records one log line, stamped now. text is copied; a line longer than
// MaxLineBytes is cut and ends with TruncatedMarker.
func (e *Emitter) Log(t Tags, text []byte) { e.add(KindLog, &t, "", 0, text, false, 0) }

// LogAt records one log line with its own time; truncated marks a piece
// of a longer line that continues in the next (as runner.Line does).
func (e *Emitter) LogAt(t Tags, at time.Time, text []byte, truncated bool) {
	e.add(KindLog, &t, "", 0, text, truncated, at.UnixNano())
}

// usage records a usage increment (see UsageMeter).
func (e *Emitter) usage(app, name string, v float64, at time.Time) {
	e.add(KindUsage, &Tags{App: app}, name, v, nil, false, at.UnixNano())
}

func (e *Emitter) add(k Kind, t *Tags, name string, v float64, text []byte, trunc bool, ts int64) {
	// The collector would refuse the whole batch of an invalid record,
	// for ever: such a record (a caller's bug) is counted and not sent.
	if !validApp(t.App) || !validStream(t.Stream) || k != KindLog && (!validMetricName(name) || math.IsNaN(v) || math.IsInf(v, 0)) {
		e.invalid.Add(1)
		return
	}
	if ts == 0 {
		ts = e.cfg.Now().UnixNano()
	}
	var cut bool
	if len(text) > e.maxLine {
		cut = true
		trunc = true
		keep := e.maxLine - len(TruncatedMarker)
		for keep > 0 && !utf8.RuneStart(text[keep]) {
			keep-- // cut at a character, not inside one
		}
		text = text[:keep]
	}
	need := 72 + len(e.id) + len(t.App) + len(t.Stream) + len(name) + len(text) + len(TruncatedMarker) // <= maxRecordOverhead + maxLine
	e.mu.Lock()
	e.seq++
	seq := e.seq
	if !e.spooling {
		if c := e.tailChunk(need); c != nil {
			c.buf = frameRecord(c.buf, k, trunc, cut, seq, ts, e.id, t, name, v, text)
			c.last = seq
			c.n++
			e.mu.Unlock()
			e.counted(cut)
			return
		}
		// The memory queue is full: everything in it, and from now on
		// every record, goes to the spool (keeping seq order).
		e.toSpoolLocked()
	}
	e.spool.buf = frameRecord(e.spool.buf, k, trunc, cut, seq, ts, e.id, t, name, v, text)
	e.spool.nbuf++
	e.spool.next++
	e.spooled.Add(1)
	if len(e.spool.buf) >= 256<<10 {
		e.flushSpoolLocked()
	}
	e.mu.Unlock()
	e.counted(cut)
}

func (e *Emitter) counted(cut bool) {
	e.emitted.Add(1)
	if cut {
		e.truncated.Add(1)
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// frameRecord appends one record framed as in a segLog (length, CRC,
// payload).
func frameRecord(b []byte, k Kind, trunc, cut bool, seq uint64, ts int64, emitter string, t *Tags, name string, v float64, text []byte) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
	b = appendRecord(b, k, trunc, seq, ts, emitter, t, name, v, text)
	if cut {
		b = fixTruncated(b, text)
	}
	p := b[start+frameHeader:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(p)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(p, crcTable))
	return b
}

// fixTruncated appends the marker to a record whose text (the last field)
// was cut: the text's length prefix is rewritten in place. The length
// prefix of a cut line (at most 1 MiB) and of the line with the marker may
// differ in varint size, so the record is re-encoded when they do.
func fixTruncated(b []byte, text []byte) []byte {
	// The text is the record's last field: b ends with uvarint(len) text.
	n := len(text)
	oldLen := uvarintLen(uint64(n))
	newLen := uvarintLen(uint64(n + len(TruncatedMarker)))
	start := len(b) - n - oldLen
	if oldLen == newLen {
		putUvarint(b[start:], uint64(n+len(TruncatedMarker)))
		return append(b, TruncatedMarker...)
	}
	b = append(b, make([]byte, newLen-oldLen)...)
	copy(b[start+newLen:], b[start+oldLen:start+oldLen+n])
	putUvarint(b[start:], uint64(n+len(TruncatedMarker)))
	return append(b, TruncatedMarker...)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func putUvarint(b []byte, v uint64) {
	i := 0
	for v >= 0x80 {
		b[i] = byte(v) | 0x80
		v >>= 7
		i++
	}
	b[i] = byte(v)
}

// tailChunk returns a chunk with room for need bytes, or nil when the
// queue is at its bound.
func (e *Emitter) tailChunk(need int) *chunk {
	if n := len(e.chunks); n > 0 {
		c := e.chunks[n-1]
		if len(c.buf)+need <= cap(c.buf) {
			return c
		}
	}
	if e.queued+e.chunkSz > e.cfg.QueueBytes && len(e.chunks) > 0 {
		return nil
	}
	var c *chunk
	if n := len(e.free); n > 0 {
		c = e.free[n-1]
		e.free = e.free[:n-1]
		c.buf = c.buf[:0]
	} else if b := e.mem.take(e.chunkSz); b != nil {
		c = &chunk{buf: b}
	} else {
		c = &chunk{buf: make([]byte, 0, e.chunkSz)}
	}
	e.uses++
	c.first, c.last, c.n, c.use = e.seq, e.seq-1, 0, e.uses
	e.chunks = append(e.chunks, c)
	e.queued += e.chunkSz
	return c
}

// toSpoolLocked moves the memory queue into the spool, in order, and
// switches new records to the spool. The chunks are not reused at once:
// the shipper may still be reading them (they are retired until it calls
// trimMemLocked).
func (e *Emitter) toSpoolLocked() {
	for _, c := range e.chunks {
		e.spool.buf = append(e.spool.buf, c.buf...)
		e.spool.nbuf += c.n
		e.spool.next += uint64(c.n)
		e.spooled.Add(uint64(c.n))
	}
	e.retired = append(e.retired, e.chunks...)
	e.chunks, e.queued = nil, 0
	e.spooling = true
	e.gen++
	e.spoolPending.Store(true)
	e.flushSpoolLocked()
}

func (e *Emitter) flushSpoolLocked() {
	lost, err := e.spool.flushLocked()
	e.lostLocked(lost)
	if err != nil {
		e.lastErr = err
	}
}

// Stats returns a snapshot of the counters.
func (e *Emitter) Stats() EmitterStats {
	e.mu.Lock()
	q := e.queued
	e.mu.Unlock()
	return EmitterStats{Emitted: e.emitted.Load(), Acked: e.acked.Load(), Queued: q, Spooled: e.spooled.Load(),
		SpoolPending: e.spoolPending.Load(), Dropped: e.dropped.Load(), Truncated: e.truncated.Load(), Invalid: e.invalid.Load(), Online: e.online.Load()}
}

// lostLocked counts records the spool could not write. They were the
// newest (while spooling, nothing newer is anywhere else), so their seqs
// are given out again: the collector sees no gap, only fewer records.
func (e *Emitter) lostLocked(lost int) {
	if lost > 0 {
		e.dropped.Add(uint64(lost))
		e.spooled.Add(^uint64(lost - 1))
		e.seq -= uint64(lost)
	}
}
