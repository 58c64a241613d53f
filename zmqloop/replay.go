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
	// Capacity bounds how many ids the window remembers (about 40 bytes
	// each). When it is full the oldest id is forgotten and every message
	// not newer than it is refused from then on (ErrReplay), so memory stays
	// bounded and a forgotten id still cannot be replayed: under a flood the
	// effective window shrinks instead of opening. Default
	// DefaultReplayCapacity (1,048,576).
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
		window: cfg.Window.Milliseconds(),
		now:    cfg.Now,
		seed:   maphash.MakeSeed(),
		seen:   make(map[uint64]struct{}),
		ring:   make([]replayEntry, min(64, cfg.Capacity)),
		cap:    cfg.Capacity,
		floor:  -1,
	}, nil
}

// Admit records the message (key id, id, timestamp) and returns nil if it
// is fresh; ErrStale if its timestamp is outside the window; ErrReplay if
// the id was seen before or the window can no longer prove it was not.
// Ids are remembered per key id.
func (w *ReplayWindow) Admit(m *Message) error {
	ts := m.Time.UnixMilli()
	now := w.now().UnixMilli()
	if ts < now-w.window || ts > now+w.window {
		return fmt.Errorf("zmqloop: replay window: message %q at %d ms is outside now±%d ms: %w", m.ID, ts, w.window, ErrStale)
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

// Len returns how many ids the window remembers now.
func (w *ReplayWindow) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}
