package zmqloop

import (
	"fmt"
	"hash/maphash"
	"sync"
	"time"
)

// DefaultReplayCapacity is ReplayConfig.Capacity's default.
const DefaultReplayCapacity = 1 << 20

// ReplayConfig configures a ReplayWindow. Zero values are the defaults.
type ReplayConfig struct {
	// Window is how far a timestamp may be from now, either way. Use the
	// Codec's Window. Default DefaultWindow.
	Window time.Duration
	// Capacity bounds the window's memory. Ids a Codec made are tracked
	// per sender in 512-byte bitmaps (at most Capacity/512 senders, at
	// least 16); other ids one by one (at most Capacity, about 40 bytes
	// each). When either is full the oldest entry is forgotten and every
	// message not newer than it is refused from then on (ErrReplay), so
	// memory stays bounded and a forgotten id still cannot be replayed:
	// under a flood the effective window shrinks instead of opening.
	// Default DefaultReplayCapacity (1,048,576: about 40 MiB at most).
	Capacity int
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// ReplayWindow rejects messages whose id it has already seen and messages
// whose timestamp is outside the window. Each receiving loop owns one. It is
// safe for concurrent use.
type ReplayWindow struct {
	window int64 // ms
	now    func() time.Time
	seed   maphash.Seed

	mu    sync.Mutex
	seen  map[uint64]struct{}
	ring  []replayEntry // FIFO in arrival order; grows up to capacity
	cap   int
	head  int
	n     int
	floor int64 // ms; messages at or before it are refused

	senders    map[senderKey]*seqWindow
	maxSenders int
	last       *seqWindow // the previous message's sender, skipping the map
	lastKey    senderKey
}

// Ids a Codec makes ("<16 hex digits>-<base-36 counter>") are tracked per
// sender (key id and prefix) as a counter and a bitmap of the last seqBits
// counters, IPsec style: a few hundred bytes per sender instead of an entry
// per message. Other ids go to the per-id set.
const seqBits = 4096

type senderKey struct {
	keyID  string
	prefix uint64
}

type seqWindow struct {
	high   uint64 // highest counter seen
	lastTS int64  // newest timestamp seen, ms
	bits   [seqBits / 64]uint64
}

// parseSeqID splits an id of the form Codec.NewID makes.
func parseSeqID(id string) (prefix, seq uint64, ok bool) {
	if len(id) < 18 || len(id) > 16+1+13 || id[16] != '-' {
		return 0, 0, false
	}
	for i := 0; i < 16; i++ {
		c := id[i]
		switch {
		case c >= '0' && c <= '9':
			prefix = prefix<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			prefix = prefix<<4 | uint64(c-'a'+10)
		default:
			return 0, 0, false
		}
	}
	for i := 17; i < len(id); i++ {
		c := id[i]
		var d uint64
		switch {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c >= 'a' && c <= 'z':
			d = uint64(c-'a') + 10
		default:
			return 0, 0, false
		}
		if seq > (1<<64-1-d)/36 {
			return 0, 0, false
		}
		seq = seq*36 + d
	}
	return prefix, seq, seq > 0
}

func (w *ReplayWindow) admitSeq(m *Message, prefix, seq uint64, ts, now int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ts <= w.floor {
		return fmt.Errorf("zmqloop: replay window: message %q at %d ms is not newer than the oldest forgotten id (%d ms; window full): %w", m.ID, ts, w.floor, ErrReplay)
	}
	k := senderKey{keyID: m.KeyID, prefix: prefix}
	sw := w.last
	if sw == nil || w.lastKey != k {
		sw = w.senders[k]
		if sw == nil {
			sw = w.newSender(k, now)
		}
		w.last, w.lastKey = sw, k
	}
	switch {
	case seq > sw.high:
		if d := seq - sw.high; d >= seqBits {
			sw.bits = [seqBits / 64]uint64{}
		} else {
			for c := sw.high + 1; c < seq; c++ {
				sw.bits[(c/64)%(seqBits/64)] &^= 1 << (c % 64)
			}
		}
		sw.high = seq
	case sw.high-seq >= seqBits:
		return fmt.Errorf("zmqloop: replay window: message %q is %d behind its sender's newest (more than %d): %w", m.ID, sw.high-seq, seqBits, ErrReplay)
	case sw.bits[(seq/64)%(seqBits/64)]&(1<<(seq%64)) != 0:
		return fmt.Errorf("zmqloop: replay window: message %q from key %q: %w", m.ID, m.KeyID, ErrReplay)
	}
	sw.bits[(seq/64)%(seqBits/64)] |= 1 << (seq % 64)
	if ts > sw.lastTS {
		sw.lastTS = ts
	}
	return nil
}

// newSender makes room for and returns a new sender window. Senders silent
// for a whole window are forgotten (their replays are stale); if the table
// is still full, the longest-silent one is, and the floor rises to its
// newest timestamp.
func (w *ReplayWindow) newSender(k senderKey, now int64) *seqWindow {
	if len(w.senders) >= w.maxSenders {
		var oldK senderKey
		var old *seqWindow
		for sk, sw := range w.senders {
			if sw.lastTS < now-w.window {
				delete(w.senders, sk)
				continue
			}
			if old == nil || sw.lastTS < old.lastTS {
				oldK, old = sk, sw
			}
		}
		if len(w.senders) >= w.maxSenders && old != nil {
			delete(w.senders, oldK)
			if old.lastTS > w.floor {
				w.floor = old.lastTS
			}
		}
		w.last = nil
	}
	sw := &seqWindow{}
	w.senders[k] = sw
	return sw
}

type replayEntry struct {
	h  uint64
	ts int64
}

// NewReplayWindow validates cfg and returns an empty window.
func NewReplayWindow(cfg ReplayConfig) (*ReplayWindow, error) {
	if cfg.Window < 0 || cfg.Capacity < 0 {
		return nil, fmt.Errorf("zmqloop: new replay window: negative Window %v or Capacity %d", cfg.Window, cfg.Capacity)
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Capacity == 0 {
		cfg.Capacity = DefaultReplayCapacity
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &ReplayWindow{
		window:     cfg.Window.Milliseconds(),
		now:        cfg.Now,
		seed:       maphash.MakeSeed(),
		seen:       make(map[uint64]struct{}),
		ring:       make([]replayEntry, min(64, cfg.Capacity)),
		cap:        cfg.Capacity,
		floor:      -1,
		senders:    make(map[senderKey]*seqWindow),
		maxSenders: max(16, cfg.Capacity/(seqBits/8)),
	}, nil
}

// Admit records the message (key id, id, timestamp) and returns nil if it
// is fresh; ErrStale if its timestamp is outside the window; ErrReplay if
// the id was seen before or the window can no longer prove it was not.
// Ids are remembered per key id.
func (w *ReplayWindow) Admit(m *Message) error {
	return w.admitAt(m, w.now())
}

// admitAt is Admit with the receiver's clock already read.
func (w *ReplayWindow) admitAt(m *Message, clock time.Time) error {
	ts := m.Time.UnixMilli()
	now := clock.UnixMilli()
	if ts < now-w.window || ts > now+w.window {
		return fmt.Errorf("zmqloop: replay window: message %q at %d ms is outside now±%d ms: %w", m.ID, ts, w.window, ErrStale)
	}
	if prefix, seq, ok := parseSeqID(m.ID); ok {
		return w.admitSeq(m, prefix, seq, ts, now)
	}
	var h maphash.Hash
	h.SetSeed(w.seed)
	h.WriteString(m.KeyID)
	h.WriteByte(0)
	h.WriteString(m.ID)
	sum := h.Sum64()

	w.mu.Lock()
	defer w.mu.Unlock()
	// Forget ids whose timestamps fell out of the window: a replay of them
	// fails the timestamp check above.
	for w.n > 0 && w.ring[w.head].ts < now-w.window {
		w.pop()
	}
	if ts <= w.floor {
		return fmt.Errorf("zmqloop: replay window: message %q at %d ms is not newer than the oldest forgotten id (%d ms; window full): %w", m.ID, ts, w.floor, ErrReplay)
	}
	if _, dup := w.seen[sum]; dup {
		return fmt.Errorf("zmqloop: replay window: message %q from key %q: %w", m.ID, m.KeyID, ErrReplay)
	}
	if w.n == len(w.ring) && len(w.ring) < w.cap {
		grown := make([]replayEntry, min(2*len(w.ring), w.cap))
		for i := 0; i < w.n; i++ {
			grown[i] = w.ring[(w.head+i)%len(w.ring)]
		}
		w.ring, w.head = grown, 0
	}
	if w.n == len(w.ring) {
		if t := w.ring[w.head].ts; t > w.floor {
			w.floor = t
		}
		w.pop()
		if ts <= w.floor {
			return fmt.Errorf("zmqloop: replay window: message %q at %d ms is not newer than the oldest forgotten id (%d ms; window full): %w", m.ID, ts, w.floor, ErrReplay)
		}
	}
	w.seen[sum] = struct{}{}
	w.ring[(w.head+w.n)%len(w.ring)] = replayEntry{h: sum, ts: ts}
	w.n++
	return nil
}

func (w *ReplayWindow) pop() {
	delete(w.seen, w.ring[w.head].h)
	w.head = (w.head + 1) % len(w.ring)
	w.n--
}

// Len returns how many ids the window remembers individually now (ids not
// made by a Codec; Codec ids are tracked per sender).
func (w *ReplayWindow) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}
