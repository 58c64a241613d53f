package stats

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/paaskit/paaskit/zmqloop"
)

// shipper is Run's state; only Run's goroutine touches it.
type shipper struct {
	e     *Emitter
	push  *zmqloop.Pusher
	ack   *zmqloop.Client
	enc   frameEncoder
	rec   Record
	acked map[string]uint64 // per emitter id: highest seq the collector acknowledged
	ask   map[string]bool   // emitter ids to ask about
	// from holds, per emitter id in the spool, the first seq read from
	// it: everything before it was acknowledged before it was spooled.
	from    map[string]uint64
	online  bool
	rc, tc  *segCursor // spool: next to resend; first not yet acknowledged
	lastAsk time.Time
	lastOK  time.Time // acknowledgements last progressed (or nothing was pending)
	// curC, curUse and curOff are a hint: where in the memory queue the
	// last batch ended. A chunk is recycled through the free list, so the
	// hint holds only for the chunk's turn numbered curUse (chunk.use).
	curC   *chunk
	curUse uint64
	curOff int
	// flight lists the pushed batches not yet acknowledged, oldest first.
	// Pushing stops while flightBytes reaches window: libzmq would buffer
	// far more (hundreds of MB across both ends' queues), and
	// acknowledgements, which follow the collector's progress, would lag
	// by all of it, past AckTimeout under load. With the window they lag
	// by at most window bytes of the collector's work.
	flight      []inflight
	flightBytes int
	window      int
	// maxFrames bounds one batch's frame bytes (the codec's MaxSize).
	maxFrames int
	// asking is true while an acknowledgement call is in flight; its
	// answer comes on answers.
	asking  bool
	answers chan ackAnswer
}

type inflight struct {
	emitter string
	last    uint64 // seq of the batch's last record
	bytes   int
}

// windowFull says whether pushing must wait for acknowledgements.
func (s *shipper) windowFull() bool { return s.flightBytes >= s.window }

// pushed notes a batch in flight.
func (s *shipper) pushed(emitter string, last uint64, bytes int) {
	s.flight = append(s.flight, inflight{emitter, last, bytes})
	s.flightBytes += bytes
}

// landed forgets the batches in flight that are acknowledged.
func (s *shipper) landed() {
	k := 0
	for k < len(s.flight) && s.flight[k].last <= s.acked[s.flight[k].emitter] {
		s.flightBytes -= s.flight[k].bytes
		k++
	}
	s.flight = append(s.flight[:0], s.flight[k:]...)
}

// Run ships records until ctx is cancelled: from the memory queue while
// the collector acknowledges, from the spool while it catches up. On
// return everything not yet acknowledged is in the spool, synced to disk,
// and later records go to the spool too (Close writes them).
func (e *Emitter) Run(ctx context.Context) error {
	push, err := zmqloop.NewPusher(zmqloop.SenderConfig{Connect: e.cfg.Collector, Codec: e.cfg.Codec, Queue: 8,
		FlushTimeout: 100 * time.Millisecond, Logger: e.log})
	if err != nil {
		return fmt.Errorf("stats: emitter: %w", err)
	}
	ack, err := zmqloop.NewClient(zmqloop.ClientConfig{Endpoints: e.cfg.Ack, Codec: e.cfg.Codec,
		TryTimeout: min(e.cfg.AckTimeout/2, 500*time.Millisecond), Logger: e.log})
	if err != nil {
		push.Close()
		return fmt.Errorf("stats: emitter: %w", err)
	}
	s := &shipper{e: e, push: push, ack: ack, acked: map[string]uint64{}, ask: map[string]bool{e.id: true}, from: map[string]uint64{},
		window: e.cfg.QueueBytes / 2, maxFrames: maxFramesFor(e.cfg.Codec.MaxSize()), answers: make(chan ackAnswer, 1)}
	e.mu.Lock()
	e.running = true
	e.mu.Unlock()
	first := e.spool.first()
	s.rc, s.tc = e.spool.cursor(first), e.spool.cursor(first)
	defer s.rc.close()
	defer s.tc.close()
	tick := time.NewTicker(min(e.cfg.AckInterval, e.cfg.ProbeInterval))
	defer tick.Stop()
	var loggedErr error
	var loggedDrops, reportedDrops uint64
	for {
		var answer *ackAnswer
		select {
		case <-ctx.Done():
			if s.asking {
				<-s.answers // the call ends with ctx
			}
			err := s.stop()
			ack.Close()
			push.Close()
			return err
		case <-e.wake:
		case <-tick.C:
		case a := <-s.answers:
			s.asking = false
			answer = &a
		}
		now := time.Now()
		e.mu.Lock()
		if e.spooling {
			e.flushSpoolLocked()
		}
		serr := e.lastErr
		e.mu.Unlock()
		if d := e.dropped.Load(); d != loggedDrops || serr != loggedErr && serr != nil {
			e.log.Error("stats: emitter spool write failed; records lost", "dropped_total", d, "err", serr)
			loggedDrops, loggedErr = d, serr
		}
		if d := e.dropped.Load(); s.online && d > reportedDrops {
			// Reported once the collector listens, so the report itself
			// is not the next record lost.
			e.Count(Tags{App: e.cfg.ReportApp}, "emitter_records_dropped", float64(d-reportedDrops))
			reportedDrops = d
		}
		if answer != nil {
			err := s.acknowledged(*answer)
			switch {
			case err != nil && s.online:
				s.offlineAt(err, ctx.Err() != nil)
				continue
			case err != nil:
				// A probe the collector did not answer: it stays
				// unreachable.
			case !s.online:
				s.online, s.lastOK = true, time.Now()
				e.online.Store(true)
				s.rc.seek(s.tc.n)
				e.log.Info("stats: collector reachable", "emitter", e.id)
			}
		}
		if !s.online {
			if !s.asking && now.Sub(s.lastAsk) >= e.cfg.ProbeInterval {
				s.startAsk(ctx)
			}
			continue
		}
		if err := s.sendSpool(ctx); err != nil {
			s.offlineAt(err, ctx.Err() != nil)
			continue
		}
		if err := s.sendMem(ctx); err != nil {
			s.offlineAt(err, ctx.Err() != nil)
			continue
		}
		// Acknowledgements are asked for while pushing goes on: the
		// collector fsyncs its journal before it answers, and a shipper
		// that waited for that would push nothing meanwhile. A full
		// window asks at once (its answer makes room).
		pending := s.pending()
		if !pending {
			s.lastOK = now
		} else if !s.asking && now.Sub(s.lastOK) > e.cfg.AckTimeout {
			// Judged between calls, before the next is asked: a call in
			// flight ends by its own timeout, and its failure sends the
			// emitter offline. (Judged after the next ask, a full window,
			// which asks as soon as an answer comes, kept a call in
			// flight at every check: answers that never progressed, as
			// after a collector's failed journal write, went unjudged.)
			s.offlineAt(errors.New("acknowledgements stopped"), false)
			continue
		}
		if pending && !s.asking && (s.windowFull() || now.Sub(s.lastAsk) >= e.cfg.AckInterval) {
			s.startAsk(ctx)
		}
	}
}

// ackAnswer is the outcome of one acknowledgement call.
type ackAnswer struct {
	rep ackReply
	err error
}

// startAsk asks the collector, in a goroutine of its own, how far it has
// accepted the emitters in s.ask; the answer comes on s.answers. One call
// is in flight at a time (s.asking).
func (s *shipper) startAsk(ctx context.Context) {
	s.lastAsk = time.Now()
	req := ackRequest{}
	for id := range s.ask {
		req.Emitters = append(req.Emitters, id)
	}
	s.asking = true
	timeout := min(s.e.cfg.AckTimeout, time.Second)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		rep, err := zmqloop.CallJSON[ackReply](cctx, s.ack, TypeAck, req)
		s.answers <- ackAnswer{rep, err}
	}()
}

// pending says whether any record is unacknowledged.
func (s *shipper) pending() bool {
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seq > s.acked[e.id] || e.spoolPending.Load()
}

// offlineAt spools everything unacknowledged; it is resent from the
// spool once the collector answers again. stopping (Run's ctx is done, so
// a call was cut short) leaves out the warning.
func (s *shipper) offlineAt(why error, stopping bool) {
	e := s.e
	e.mu.Lock()
	if !e.spooling {
		e.toSpoolLocked()
	}
	e.mu.Unlock()
	if s.online && !stopping {
		e.log.Warn("stats: collector unreachable; spooling", "emitter", e.id, "err", why)
	}
	s.online = false
	e.online.Store(false)
	s.rc.seek(s.tc.n)
	s.curC = nil
	s.flight, s.flightBytes = s.flight[:0], 0
}

func (s *shipper) stop() error {
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	// Whatever the collector acknowledged need not be kept.
	e.trimMemLocked(s.acked[e.id])
	if !e.spooling && len(e.chunks) > 0 {
		e.toSpoolLocked()
	}
	e.spooling = true
	e.running = false // no chunk is read past here
	lost, err := e.spool.syncLocked()
	e.lostLocked(lost)
	e.online.Store(false)
	if err != nil {
		return fmt.Errorf("stats: emitter: sync spool: %w", err)
	}
	return nil
}

// Close writes records made since Run returned to the spool and closes
// it. Call it after Run has returned.
func (e *Emitter) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.spooling && len(e.chunks) > 0 {
		// Records made while no Run shipped them: kept in the spool.
		e.toSpoolLocked()
	}
	e.spooling = true
	if !e.running && !e.closed {
		// No shipper can read a chunk now, and new records go to the
		// spool: the queue's memory can go.
		e.chunks, e.free, e.retired = nil, nil, nil
		e.mem.free()
	}
	e.closed = true
	lost, err := e.spool.syncLocked()
	e.lostLocked(lost)
	if cerr := e.spool.closeLocked(); err == nil {
		err = cerr
	}
	if e.lock != nil {
		e.lock.Close()
		e.lock = nil
	}
	return err
}

// acknowledged takes in an acknowledgement call's answer: it forgets
// what the collector acknowledged, in memory, in flight and in the spool.
func (s *shipper) acknowledged(a ackAnswer) error {
	if a.err != nil {
		return a.err
	}
	rep := a.rep
	progressed := false
	for id, v := range rep.Acked {
		if !s.ask[id] {
			continue
		}
		if v > s.acked[id] {
			if id == s.e.id {
				s.e.acked.Add(v - s.acked[id])
			}
			s.acked[id] = v
			progressed = true
		}
	}
	if progressed {
		s.lastOK = time.Now()
	}
	s.landed()
	e := s.e
	e.mu.Lock()
	e.trimMemLocked(s.acked[e.id])
	e.mu.Unlock()
	return s.trimSpool()
}

// trimMemLocked drops the memory queue's chunks acknowledged through seq,
// and frees the retired ones. It is called by the shipper's goroutine
// (never while sendMem reads a chunk), or while no shipper runs.
func (e *Emitter) trimMemLocked(seq uint64) {
	e.free = append(e.free, e.retired...)
	clear(e.retired)
	e.retired = e.retired[:0]
	k := 0
	for k < len(e.chunks) && e.chunks[k].last <= seq && e.chunks[k].n > 0 && k < len(e.chunks)-1 {
		k++
	}
	if k == 0 {
		return
	}
	for _, c := range e.chunks[:k] {
		e.free = append(e.free, c)
		e.queued -= e.chunkSz
	}
	e.chunks = append(e.chunks[:0], e.chunks[k:]...)
}

// trimSpool advances the trim cursor over acknowledged records and deletes
// what is behind it.
func (s *shipper) trimSpool() error {
	e := s.e
	for {
		n, p, err := s.tc.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := decodeRecord(p, &s.rec); err != nil {
			return fmt.Errorf("stats: emitter: spool record %d: %w", n, err)
		}
		a, known := s.acked[s.rec.Emitter]
		if !known && !s.ask[s.rec.Emitter] {
			s.ask[s.rec.Emitter] = true
		}
		if s.rec.Seq > a {
			s.tc.unread()
			break
		}
	}
	if err := e.spool.trim(s.tc.n); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.spooling && e.spoolPending.Load() && s.tc.n >= e.spool.writtenLocked() && len(e.spool.buf) == 0 {
		next := e.spool.writtenLocked()
		if err := e.spool.resetLocked(next); err != nil {
			return err
		}
		s.tc.close()
		s.rc.close()
		s.tc.seek(next)
		s.rc.seek(next)
		for id := range s.ask {
			if id != e.id {
				delete(s.ask, id)
			}
		}
		clear(s.from)
		e.spoolPending.Store(false)
	}
	return nil
}

// sendSpool resends from the spool; once it has caught up, new records go
// to the memory queue again.
func (s *shipper) sendSpool(ctx context.Context) error {
	e := s.e
	if !e.spoolPending.Load() {
		return nil
	}
	for range 16 {
		if s.windowFull() {
			break
		}
		s.enc.n = 0
		var emitter string
		var last uint64
		for s.enc.n < e.cfg.BatchRecords {
			n, p, err := s.rc.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if err := decodeRecord(p, &s.rec); err != nil {
				return fmt.Errorf("stats: emitter: spool record %d: %w", n, err)
			}
			if s.enc.n > 0 && (s.rec.Emitter != emitter || s.rec.Seq != last+1 || len(s.enc.raw)+frameHeader+len(p) > s.maxFrames) {
				s.rc.unread()
				break
			}
			if s.enc.n == 0 {
				emitter = s.rec.Emitter
				s.ask[emitter] = true
				if _, ok := s.from[emitter]; !ok {
					s.from[emitter] = s.rec.Seq
				}
				s.enc.begin(emitter, max(s.acked[emitter]+1, s.from[emitter]))
			}
			s.enc.addRecord(&s.rec)
			last = s.rec.Seq
		}
		if s.enc.n == 0 {
			break
		}
		if err := s.pushBatch(ctx); err != nil {
			return err
		}
		s.pushed(emitter, last, len(s.enc.raw))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.spooling {
		e.flushSpoolLocked()
		if s.rc.n >= e.spool.writtenLocked() && len(e.spool.buf) == 0 {
			// Caught up: new records go to memory and are sent from there.
			e.spooling = false
			e.sendSeq = e.seq + 1
			s.curC = nil
		}
	}
	return nil
}

// pushBatch sends the encoded batch, its frames raw in the message's
// data frame.
func (s *shipper) pushBatch(ctx context.Context) error {
	body, data := s.enc.endData()
	cctx, cancel := context.WithTimeout(ctx, s.e.cfg.AckTimeout)
	defer cancel()
	return s.push.PushData(cctx, TypeBatch, json.RawMessage(body), data)
}

// sendMem pushes the memory queue's records from sendSeq on.
func (s *shipper) sendMem(ctx context.Context) error {
	e := s.e
	for {
		if s.windowFull() {
			return nil
		}
		e.mu.Lock()
		if e.spooling || e.sendSeq > e.seq {
			e.mu.Unlock()
			return nil
		}
		var c *chunk
		for _, ch := range e.chunks {
			if ch.first <= e.sendSeq && e.sendSeq <= ch.last {
				c = ch
				break
			}
		}
		if c == nil {
			e.mu.Unlock()
			return fmt.Errorf("stats: emitter: seq %d is in no chunk", e.sendSeq)
		}
		buf, want, gen, use := c.buf, e.sendSeq, e.gen, c.use
		e.mu.Unlock()
		off := 0
		if s.curC == c && s.curUse == use && s.curOff <= len(buf) {
			off = s.curOff
		}
		// The queue holds the records framed as the wire carries them,
		// in seq order: the batch is a run of a chunk's frames, sent from
		// the chunk itself. Bytes below len(buf) do not change while the
		// chunk is in the queue (records are appended past it, under
		// e.mu), and a chunk leaves the queue only once acknowledged,
		// which these records cannot be before they are pushed; PushData
		// copies them before it returns.
		s.enc.begin(e.id, s.acked[e.id]+1)
		start, n := -1, 0
		for off < len(buf) && n < e.cfg.BatchRecords {
			fl := frameHeader + int(binary.LittleEndian.Uint32(buf[off:]))
			seq, _ := binary.Uvarint(buf[off+frameHeader+2:])
			if seq >= want {
				if start < 0 {
					start = off
				}
				if n > 0 && off+fl-start > s.maxFrames {
					break
				}
				n++
				want = seq + 1
			}
			off += fl
		}
		s.curC, s.curUse, s.curOff = c, use, off
		if n == 0 {
			return nil
		}
		s.enc.useFrames(buf[start:off], n)
		if err := s.pushBatch(ctx); err != nil {
			return err
		}
		s.pushed(e.id, want-1, s.enc.size())
		e.mu.Lock()
		if e.gen == gen {
			e.sendSeq = want
		}
		e.mu.Unlock()
	}
}
