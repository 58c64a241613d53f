package stats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/paaskit/paaskit/zmqloop"
)

// Sink is where the collector writes records: chunked log files,
// PostgreSQL, Redis, or one of the host's own.
//
// The collector calls Write from one goroutine per sink, with records in
// journal order (each emitter's in seq order), in batches. Write returns
// nil only once every record of the batch is written; on an error the
// collector keeps the batch in its journal and calls Write again with the
// same records (and maybe more) after RetryInterval, for as long as it
// takes. So a sink sees a record at least once, and must make a repeat
// harmless: records carry Emitter and Seq (unique, gapless per emitter) and
// Index (their journal position, increasing), which is what the sinks here
// use to write each record exactly once. Write must return promptly when
// ctx is cancelled. The records and their Text are the collector's again
// once Write returns: a sink that keeps any copies it.
type Sink interface {
	Name() string
	Write(ctx context.Context, recs []Record) error
}

// Collector defaults.
const (
	DefaultSinkBatch     = 16384
	DefaultRetryInterval = time.Second
	DefaultFlushInterval = 10 * time.Millisecond
)

// CollectorConfig configures a Collector. Zero values are the documented
// defaults.
type CollectorConfig struct {
	// Bind lists the PULL endpoints emitters push to; AckBind the ROUTER
	// endpoints they ask for acknowledgements. Both required.
	Bind, AckBind []string
	// Codec verifies. Required.
	Codec *zmqloop.Codec
	// Dir holds the journal, the sinks' positions in it and the emitters'
	// state. Required; one collector per directory (NewCollector fails
	// with ErrDirInUse while another holds it, until its Run returns).
	Dir string
	// Sinks are written independently: one that is down does not hold
	// the others back; its backlog stays in the journal.
	Sinks []Sink
	// MaxLineBytes bounds a log line; a longer one is cut and ends with
	// TruncatedMarker. Default DefaultMaxLineBytes (16 KiB).
	MaxLineBytes int
	// SegmentBytes is the journal's segment size. Default
	// DefaultSegmentBytes (64 MiB).
	SegmentBytes int64
	// SinkBatch is the most records handed to one Write. Default
	// DefaultSinkBatch (16,384).
	SinkBatch int
	// RetryInterval is how long a sink that failed rests before the next
	// try. Default DefaultRetryInterval (1s).
	RetryInterval time.Duration
	// FlushInterval is how often journal appends are written for the
	// sinks to read. Default DefaultFlushInterval (10ms).
	FlushInterval time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// CollectorStats counts what a Collector did.
type CollectorStats struct {
	// Accepted counts records journaled; Duplicates records already
	// journaled (a resend), skipped; Gaps records refused because an
	// earlier one of their emitter is missing (the emitter resends).
	Accepted, Duplicates, Gaps uint64
	// Malformed counts batches that were authentic but did not decode or
	// validate; Rejected messages zmqloop refused (unsigned, bad MAC,
	// stale, replayed, oversized, malformed envelope). Both are dropped.
	Malformed, Rejected uint64
	// Truncated counts log lines cut to MaxLineBytes here.
	Truncated uint64
	// JournalErrors counts failed journal writes (the batch is then not
	// acknowledged, and its emitter resends it).
	JournalErrors uint64
	Sinks         []SinkStats
}

// SinkStats is one sink's state.
type SinkStats struct {
	Name    string
	Written uint64 // records written
	Batches uint64 // successful Writes
	Errors  uint64 // failed Writes
	Backlog uint64 // journaled records not yet written
	Down    bool   // the last Write failed
	LastErr string
}

// Collector receives records on a PULL socket, journals them, acknowledges
// them on request, and writes them to its sinks.
type Collector struct {
	cfg     CollectorConfig
	log     *slog.Logger
	journal *segLog

	mu       sync.Mutex // the journal's lock too; guards emitters, scratch, unflushed
	emitters map[string]*emitterState
	// unflushed holds, per emitter with records in the journal's buffer,
	// its Next before the first of them: a failed write rewinds to it.
	unflushed map[string]uint64
	scratch   []byte
	// bmu guards batch, handleBatch's decoder. A batch is decoded under
	// bmu alone: holding mu (the journal's lock) through the decode kept
	// the sinks' journal readers waiting.
	bmu   sync.Mutex
	batch decodedBatch

	lock  *os.File // flock on Dir, released when Run returns
	sinks []*sinkRunner
	// wrote is closed (and replaced) whenever journal appends are written:
	// a broadcast to the sinks waiting for more.
	wmu   sync.Mutex
	wrote chan struct{}
	// flushNow asks the flusher to write the journal's buffer now (it
	// passed journalFlushBytes): written there, not on the receiving
	// goroutine, so that the next batch is decoded meanwhile.
	flushNow chan struct{}
	agg      *aggregate

	accepted, dups, gaps, malformed, rejected, truncated, jerrs atomic.Uint64
}

// emitterStateTTL is how long the collector remembers an emitter that
// sends nothing.
const emitterStateTTL = 7 * 24 * time.Hour

type emitterState struct {
	Next uint64 `json:"next"` // next seq expected
	Seen int64  `json:"seen"` // unix seconds the last record arrived
}

type sinkRunner struct {
	sink    Sink
	cursor  atomic.Uint64 // next journal index to write
	written atomic.Uint64
	batches atomic.Uint64
	errs    atomic.Uint64
	down    atomic.Bool
	lastErr atomic.Pointer[string]
}

// NewCollector validates cfg, opens the journal (recovering the emitters'
// state from it) and returns a Collector; Run starts it.
func NewCollector(cfg CollectorConfig) (*Collector, error) {
	switch {
	case len(cfg.Bind) == 0 || len(cfg.AckBind) == 0:
		return nil, errors.New("stats: new collector: Bind and AckBind endpoints are required")
	case cfg.Codec == nil:
		return nil, errors.New("stats: new collector: Codec is required")
	case cfg.Dir == "":
		return nil, errors.New("stats: new collector: Dir is required")
	case cfg.MaxLineBytes < 0 || cfg.SegmentBytes < 0 || cfg.SinkBatch < 0 || cfg.RetryInterval < 0 || cfg.FlushInterval < 0:
		return nil, errors.New("stats: new collector: negative size or duration")
	}
	if cfg.MaxLineBytes == 0 {
		cfg.MaxLineBytes = DefaultMaxLineBytes
	}
	if cfg.SegmentBytes == 0 {
		cfg.SegmentBytes = DefaultSegmentBytes
	}
	if cfg.SinkBatch == 0 {
		cfg.SinkBatch = DefaultSinkBatch
	}
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = DefaultRetryInterval
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	names := map[string]bool{}
	for _, s := range cfg.Sinks {
		if s == nil || !validApp(s.Name()) || names[s.Name()] {
			return nil, errors.New("stats: new collector: every sink needs a distinct name of [A-Za-z0-9._-]")
		}
		names[s.Name()] = true
	}
	c := &Collector{cfg: cfg, log: cfg.Logger, emitters: map[string]*emitterState{}, unflushed: map[string]uint64{}, wrote: make(chan struct{}),
		flushNow: make(chan struct{}, 1), agg: newAggregate()}
	if c.log == nil {
		c.log = slog.Default()
	}
	tuneMalloc()
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("stats: new collector: %w", err)
	}
	c.lock = lock
	j, err := openSegLog(filepath.Join(cfg.Dir, "journal"), "journal", cfg.SegmentBytes, &c.mu)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("stats: new collector: %w", err)
	}
	c.journal = j
	// The buffer never outgrows journalMaxBuffer by more than one batch
	// (a message's worth): made at that capacity, it is never copied
	// into fresh memory as it fills, and its pages, once touched, stay.
	j.buf = make([]byte, 0, journalMaxBuffer+cfg.Codec.MaxSize())
	if err := c.recover(); err != nil {
		c.mu.Lock()
		j.closeLocked()
		c.mu.Unlock()
		lock.Close()
		return nil, err
	}
	c.reserveSpare(0)
	for _, s := range cfg.Sinks {
		r := &sinkRunner{sink: s}
		r.cursor.Store(j.first())
		if b, err := os.ReadFile(c.cursorPath(s.Name())); err == nil {
			if n, err := strconv.ParseUint(string(b), 10, 64); err == nil && n >= j.first() {
				r.cursor.Store(n)
			}
		}
		c.sinks = append(c.sinks, r)
	}
	return c, nil
}

func (c *Collector) cursorPath(name string) string {
	return filepath.Join(c.cfg.Dir, "cursor-"+name)
}

func (c *Collector) statePath() string { return filepath.Join(c.cfg.Dir, "emitters.json") }

// recover loads the emitters' state as of the last trim and replays the
// journal kept since.
func (c *Collector) recover() error {
	if b, err := os.ReadFile(c.statePath()); err == nil {
		if err := json.Unmarshal(b, &c.emitters); err != nil {
			return fmt.Errorf("stats: new collector: emitter state %s: %w", c.statePath(), err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stats: new collector: %w", err)
	}
	cur := c.journal.cursor(c.journal.first())
	defer cur.close()
	var r Record
	for {
		_, p, err := cur.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("stats: new collector: read journal: %w", err)
		}
		if err := decodeRecord(p, &r); err != nil {
			return fmt.Errorf("stats: new collector: journal record: %w", err)
		}
		st := c.emitters[r.Emitter]
		if st == nil {
			st = &emitterState{}
			c.emitters[r.Emitter] = st
		}
		if r.Seq >= st.Next {
			st.Next = r.Seq + 1
		}
		st.Seen = max(st.Seen, r.Time.Unix())
	}
}

// Stats returns a snapshot of the counters.
func (c *Collector) Stats() CollectorStats {
	st := CollectorStats{Accepted: c.accepted.Load(), Duplicates: c.dups.Load(), Gaps: c.gaps.Load(),
		Malformed: c.malformed.Load(), Rejected: c.rejected.Load(), Truncated: c.truncated.Load(), JournalErrors: c.jerrs.Load()}
	w := c.journal.written()
	for _, s := range c.sinks {
		ss := SinkStats{Name: s.sink.Name(), Written: s.written.Load(), Batches: s.batches.Load(), Errors: s.errs.Load(), Down: s.down.Load()}
		if cur := s.cursor.Load(); w > cur {
			ss.Backlog = w - cur
		}
		if e := s.lastErr.Load(); e != nil {
			ss.LastErr = *e
		}
		st.Sinks = append(st.Sinks, ss)
	}
	return st
}

// Run receives, acknowledges and writes to the sinks until ctx is
// cancelled; then it syncs and closes the journal, releases Dir and
// returns. A Collector runs once; make a new one to run again.
func (c *Collector) Run(ctx context.Context) error {
	pull, err := zmqloop.NewPullLoop(zmqloop.PullConfig{Bind: c.cfg.Bind, Codec: c.cfg.Codec, Logger: c.log,
		Handlers: map[string]zmqloop.MessageHandler{TypeBatch: c.handleBatch},
		Rejected: func(error) { c.rejected.Add(1) }})
	if err != nil {
		return fmt.Errorf("stats: collector: %w", err)
	}
	acks, err := zmqloop.NewReplyLoop(zmqloop.ReplyConfig{Bind: c.cfg.AckBind, Codec: c.cfg.Codec, Logger: c.log,
		Handlers: map[string]zmqloop.Handler{TypeAck: zmqloop.HandleJSON(c.handleAck)},
		Rejected: func(error) { c.rejected.Add(1) }})
	if err != nil {
		return fmt.Errorf("stats: collector: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(3 + len(c.sinks))
	go func() { defer wg.Done(); errs <- pull.Run(ctx); cancel() }()
	go func() { defer wg.Done(); errs <- acks.Run(ctx); cancel() }()
	go func() { defer wg.Done(); c.flusher(ctx) }()
	for _, s := range c.sinks {
		go func() { defer wg.Done(); c.runSink(ctx, s) }()
	}
	wg.Wait()
	var first error
	for range 2 {
		if e := <-errs; e != nil && !errors.Is(e, context.Canceled) && first == nil {
			first = e
		}
	}
	c.mu.Lock()
	c.flushLocked()
	c.mu.Unlock()
	if err := c.journal.fsync(); err != nil && first == nil {
		first = err
	}
	c.mu.Lock()
	if err := c.journal.closeLocked(); err != nil && first == nil {
		first = err
	}
	c.mu.Unlock()
	c.lock.Close() // a Collector runs once; a new one may take the directory
	return first
}

// handleBatch journals a batch's records that come next in their
// emitter's sequence. A format-2 record goes into the journal as its
// frame came (its CRC checked on decoding), one copy. The whole batch is
// decoded and checked before any of it is taken.
func (c *Collector) handleBatch(_ context.Context, m *zmqloop.Request) error {
	c.bmu.Lock()
	defer c.bmu.Unlock()
	d := &c.batch
	err := d.decode(m.Body, m.Data, c.cfg.MaxLineBytes)
	c.truncated.Add(uint64(d.Cut))
	if err != nil {
		c.malformed.Add(1)
		c.log.Warn("stats: collector: dropped a malformed batch", "key", m.KeyID, "err", err)
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	emitter, recs := d.Emitter, d.Recs
	st := c.emitters[emitter]
	if st == nil {
		st = &emitterState{}
		c.emitters[emitter] = st
	}
	// Everything before from was acknowledged by this collector (or one
	// that shares its sinks) before: start there if this one is behind.
	st.Next = max(st.Next, d.From)
	now := time.Now().Unix()
	for i := range recs {
		r := &recs[i]
		if r.Seq < st.Next {
			c.dups.Add(1)
			continue
		}
		if r.Seq > st.Next {
			c.gaps.Add(uint64(len(recs) - i))
			break
		}
		if _, ok := c.unflushed[emitter]; !ok {
			c.unflushed[emitter] = st.Next
		}
		if i < len(d.Frames) && d.Frames[i].n > 0 {
			f := d.Frames[i]
			r.Index = c.journal.appendFrameLocked(d.Raw[f.off : f.off+f.n])
		} else {
			c.scratch = r.appendBinary(c.scratch[:0])
			r.Index = c.journal.appendLocked(c.scratch)
		}
		st.Next++
		st.Seen = now
		c.accepted.Add(1)
		c.agg.add(r)
	}
	switch n := len(c.journal.buf); {
	case n >= journalMaxBuffer:
		c.flushLocked() // the flusher is behind: bound the buffer here
	case n >= journalFlushBytes:
		select {
		case c.flushNow <- struct{}{}:
		default:
		}
	}
	return nil
}

// The journal's buffer is written once it holds journalFlushBytes (or
// every FlushInterval), by the flusher; handleBatch writes it itself only
// past journalMaxBuffer.
const (
	journalFlushBytes = 1 << 20
	journalMaxBuffer  = 8 << 20
)

func (c *Collector) flushLocked() {
	if _, err := c.journal.flushLocked(); err != nil {
		c.jerrs.Add(1)
		c.log.Error("stats: collector: journal write failed; its records are not acknowledged and will be resent", "err", err)
		for id, next := range c.unflushed {
			c.emitters[id].Next = next
		}
		clear(c.unflushed)
		return
	}
	clear(c.unflushed)
	c.wmu.Lock()
	close(c.wrote)
	c.wrote = make(chan struct{})
	c.wmu.Unlock()
}

func (c *Collector) wroteCh() <-chan struct{} {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.wrote
}

// handleAck syncs the journal and answers how far each asked emitter's
// records are durable.
func (c *Collector) handleAck(_ context.Context, req ackRequest) (ackReply, error) {
	c.mu.Lock()
	c.flushLocked()
	rep := ackReply{Acked: make(map[string]uint64, len(req.Emitters))}
	for _, id := range req.Emitters {
		if st := c.emitters[id]; st != nil && st.Next > 0 {
			rep.Acked[id] = st.Next - 1
		}
	}
	c.mu.Unlock()
	// What was written before the snapshot is durable once this returns.
	// Only an fsync: records appended since are written by the flusher,
	// whose failure rewinds their emitters (a write here would not).
	if err := c.journal.fsync(); err != nil {
		c.jerrs.Add(1)
		return ackReply{}, fmt.Errorf("stats: collector: sync journal: %w", err)
	}
	return rep, nil
}

func (c *Collector) flusher(ctx context.Context) {
	t := time.NewTicker(c.cfg.FlushInterval)
	defer t.Stop()
	trim := time.NewTicker(time.Second)
	defer trim.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.flushNow:
		case <-trim.C:
			c.trimJournal()
			continue
		}
		c.mu.Lock()
		c.flushLocked()
		c.mu.Unlock()
	}
}

// trimJournal deletes journal segments every sink has written, after
// saving the emitters' state they carried.
func (c *Collector) trimJournal() {
	low := c.journal.written()
	for _, s := range c.sinks {
		low = min(low, s.cursor.Load())
	}
	if low <= c.journal.first() {
		return
	}
	c.mu.Lock()
	// An emitter silent for a week is forgotten: should its spool come
	// back, its "from" says where to resume.
	old := time.Now().Add(-emitterStateTTL).Unix()
	for id, st := range c.emitters {
		if st.Seen < old {
			delete(c.emitters, id)
		}
	}
	b, err := json.Marshal(c.emitters)
	c.mu.Unlock()
	if err == nil {
		err = writeFileAtomic(c.statePath(), b)
		if errors.Is(err, syscall.ENOSPC) {
			// The journal filled the disk, and only a trim frees it, which
			// needs this state saved first: the spare's room is for that.
			os.Remove(c.sparePath())
			err = writeFileAtomic(c.statePath(), b)
		}
	}
	if err != nil {
		c.log.Error("stats: collector: save emitter state", "err", err)
		return
	}
	if err := c.journal.trim(low); err != nil {
		c.log.Error("stats: collector: trim journal", "err", err)
	}
	c.reserveSpare(len(b))
}

// sparePath is a file of zeros kept beside the emitters' state. A journal
// that fills the disk is only trimmed once the state is saved; with no
// room for that, the collector stayed full for ever. The spare is deleted
// to make the room, and made again after the trim.
func (c *Collector) sparePath() string { return filepath.Join(c.cfg.Dir, "emitters.spare") }

// reserveSpare makes the spare, room for twice a state of n bytes (at
// least 64 KiB), if it is missing or smaller. A failure is left for the
// next trim.
func (c *Collector) reserveSpare(n int) {
	want := int64(max(64<<10, 2*n))
	if fi, err := os.Stat(c.sparePath()); err == nil && fi.Size() >= want {
		return
	}
	f, err := os.OpenFile(c.sparePath(), os.O_WRONLY|os.O_CREATE, 0o640)
	if err != nil {
		return
	}
	// Written, not just sized: a file extended by truncate holds no
	// blocks, and frees none when deleted.
	if _, err := f.WriteAt(make([]byte, want), 0); err != nil {
		f.Close()
		os.Remove(c.sparePath())
		return
	}
	f.Close()
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// runSink feeds one sink from the journal, retrying a failed batch. A
// reader goroutine reads and decodes the next batch while the sink writes
// the current one.
func (c *Collector) runSink(ctx context.Context, s *sinkRunner) {
	full := make(chan *sinkBatch, 1)
	free := make(chan *sinkBatch, 2)
	// The batches' arrays are made at their full size once: grown by
	// append, every step was a copy into fresh memory, and a page touched
	// for the first time costs a fault (about as much, per byte, as the
	// HMAC on a VM).
	free <- &sinkBatch{recs: make([]Record, 0, c.cfg.SinkBatch)}
	free <- &sinkBatch{recs: make([]Record, 0, c.cfg.SinkBatch)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(full)
		c.readSink(ctx, s, free, full)
	}()
	defer wg.Wait()
	for b := range full {
		batch := b.recs
		written := false
		for ctx.Err() == nil {
			err := s.sink.Write(ctx, batch)
			if err == nil {
				written = true
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.errs.Add(1)
			msg := err.Error()
			s.lastErr.Store(&msg)
			if !s.down.Swap(true) {
				c.log.Warn("stats: sink down; its backlog stays in the journal", "sink", s.sink.Name(), "err", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(c.cfg.RetryInterval):
			}
		}
		if !written {
			return
		}
		// A batch written is recorded even when ctx was cancelled
		// meanwhile: a clean stop then replays nothing.
		if s.down.Swap(false) {
			c.log.Info("stats: sink back", "sink", s.sink.Name())
		}
		s.written.Add(uint64(len(batch)))
		s.batches.Add(1)
		next := batch[len(batch)-1].Index + 1
		s.cursor.Store(next)
		// The position is a hint: the sinks are idempotent, so losing it
		// in a crash costs a replay, not a duplicate.
		_ = os.WriteFile(c.cursorPath(s.sink.Name())+".tmp", strconv.AppendUint(nil, next, 10), 0o640)
		_ = os.Rename(c.cursorPath(s.sink.Name())+".tmp", c.cursorPath(s.sink.Name()))
		free <- b
	}
}

// sinkBatch is one batch for a sink: the records, and the arena their
// texts are copied into (the journal reader's buffer is reused), both
// reused from batch to batch.
type sinkBatch struct {
	recs  []Record
	arena []byte
}

// text copies t into the arena. When the arena is full a larger one
// replaces it; the records already pointing into the old one keep it
// alive until the batch is refilled.
func (b *sinkBatch) text(t []byte) []byte {
	if len(b.arena)+len(t) > cap(b.arena) {
		b.arena = make([]byte, 0, max(2*cap(b.arena), len(t), 1<<20))
	}
	n := len(b.arena)
	b.arena = append(b.arena, t...)
	return b.arena[n:len(b.arena):len(b.arena)]
}

// readSink fills batches from the journal for runSink.
func (c *Collector) readSink(ctx context.Context, s *sinkRunner, free <-chan *sinkBatch, full chan<- *sinkBatch) {
	cur := c.journal.cursor(s.cursor.Load())
	defer cur.close()
	t := time.NewTicker(c.cfg.FlushInterval * 5)
	defer t.Stop()
	var b *sinkBatch
	var prev Record // the last record decoded: its strings are reused while they repeat
	for {
		select {
		case <-ctx.Done():
			return
		case b = <-free:
		}
		batch := b.recs[:0]
		b.arena = b.arena[:0]
		for len(batch) == 0 {
			wrote := c.wroteCh()
			for len(batch) < c.cfg.SinkBatch {
				n, p, err := cur.next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					c.log.Error("stats: collector: read journal", "sink", s.sink.Name(), "err", err)
					break
				}
				batch = append(batch, Record{Emitter: prev.Emitter, Tags: Tags{App: prev.App, Stream: prev.Stream}, Name: prev.Name})
				r := &batch[len(batch)-1]
				if err := decodeRecord(p, r); err != nil {
					c.log.Error("stats: collector: bad journal record", "index", n, "err", err)
					batch = batch[:len(batch)-1]
					continue
				}
				if len(r.Text) > 0 {
					r.Text = b.text(r.Text)
				} else {
					r.Text = nil
				}
				r.Index = n
				prev = *r
			}
			if len(batch) > 0 {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-wrote:
			}
		}
		b.recs = batch
		select {
		case <-ctx.Done():
			return
		case full <- b:
		}
	}
}
