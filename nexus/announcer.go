package nexus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/zmqloop"
)

// DefaultByeTimeout bounds the goodbye a stopping announcer sends.
const DefaultByeTimeout = time.Second

// AnnouncerConfig configures a ResolverAnnouncer. Zero values are the
// documented defaults.
type AnnouncerConfig struct {
	// Resolvers are the resolvers' endpoints; the instance is announced
	// to every one of them. Required.
	Resolvers []string
	// Codec signs. Required.
	Codec *zmqloop.Codec
	// Instance is what is announced. Required and valid.
	Instance Instance
	// Interval is the time between heartbeats, less a random tenth so
	// that announcers started together do not beat together. It must match
	// the resolvers' Interval. Default DefaultInterval (1s).
	Interval time.Duration
	// ByeTimeout bounds the goodbye on a clean stop. Default
	// DefaultByeTimeout (1s).
	ByeTimeout time.Duration
	// Curve, if set, encrypts the transport.
	Curve *zmqloop.Curve
	// Clock paces the heartbeats; nil is the real clock.
	Clock daemon.Clock
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// ResolverAnnouncer announces one instance to every resolver: a heartbeat
// (nexus.beat) to each every Interval, each answered, and a goodbye
// (nexus.bye) to each when Run's ctx is cancelled. Each resolver has a
// connection of its own, so one that is down delays nothing for the
// others; a heartbeat to a resolver still busy with the previous one is
// skipped. Every message carries the announcer's mark: its incarnation
// (the Unix time in ns at which it was made) and a count that only grows,
// so resolvers refuse anything older than what they hold.
type ResolverAnnouncer struct {
	cfg  AnnouncerConfig
	log  *slog.Logger
	inc  int64
	seq  atomic.Uint64
	inst atomic.Pointer[Instance]

	mu     sync.Mutex
	acked  []time.Time // per resolver: last answered heartbeat
	lastEr []error
}

var _ Announcer = (*ResolverAnnouncer)(nil)

// lastInc makes incarnations strictly increasing within a process too.
var lastInc atomic.Int64

// NewAnnouncer validates cfg and returns an announcer; Run announces.
func NewAnnouncer(cfg AnnouncerConfig) (*ResolverAnnouncer, error) {
	if len(cfg.Resolvers) == 0 {
		return nil, fmt.Errorf("%w: announcer: Resolvers is required", ErrInvalid)
	}
	if cfg.Codec == nil {
		return nil, fmt.Errorf("%w: announcer: Codec is required", ErrInvalid)
	}
	if err := cfg.Instance.Validate(); err != nil {
		return nil, fmt.Errorf("announcer: %w", err)
	}
	if cfg.Interval < 0 || cfg.ByeTimeout < 0 {
		return nil, fmt.Errorf("%w: announcer: negative Interval %v or ByeTimeout %v", ErrInvalid, cfg.Interval, cfg.ByeTimeout)
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.ByeTimeout == 0 {
		cfg.ByeTimeout = DefaultByeTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Resolvers = append([]string(nil), cfg.Resolvers...)
	inc := time.Now().UnixNano()
	for {
		prev := lastInc.Load()
		if inc <= prev {
			inc = prev + 1
		}
		if lastInc.CompareAndSwap(prev, inc) {
			break
		}
	}
	a := &ResolverAnnouncer{cfg: cfg, log: cfg.Logger, inc: inc,
		acked: make([]time.Time, len(cfg.Resolvers)), lastEr: make([]error, len(cfg.Resolvers))}
	in := cfg.Instance.clone()
	a.inst.Store(&in)
	return a, nil
}

// Update replaces the announced endpoints and metadata (kind and id stay);
// the next heartbeat carries them.
func (a *ResolverAnnouncer) Update(endpoints, meta map[string]string) error {
	in := a.inst.Load().clone()
	in.Endpoints, in.Meta = endpoints, meta
	if err := in.Validate(); err != nil {
		return err
	}
	in = in.clone()
	a.inst.Store(&in)
	return nil
}

// ResolverAck is one resolver as an announcer sees it.
type ResolverAck struct {
	Resolver string
	LastAck  time.Time // zero: never answered
	LastErr  error
}

// Acks reports, per resolver, when it last accepted a heartbeat.
func (a *ResolverAnnouncer) Acks() []ResolverAck {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]ResolverAck, len(a.cfg.Resolvers))
	for i, r := range a.cfg.Resolvers {
		out[i] = ResolverAck{Resolver: r, LastAck: a.acked[i], LastErr: a.lastEr[i]}
	}
	return out
}

// Run heartbeats until ctx ends, then says goodbye and returns nil.
func (a *ResolverAnnouncer) Run(ctx context.Context) error {
	clients := make([]*zmqloop.Client, len(a.cfg.Resolvers))
	for i, ep := range a.cfg.Resolvers {
		c, err := zmqloop.NewClient(zmqloop.ClientConfig{Endpoints: []string{ep}, Codec: a.cfg.Codec, Curve: a.cfg.Curve,
			TryTimeout: a.cfg.Interval, ReconnectInterval: reconnectInterval(a.cfg.Interval), Logger: a.log})
		if err != nil {
			for _, c := range clients[:i] {
				c.Close()
			}
			return fmt.Errorf("nexus: announcer %s: %w", a.cfg.Instance.Kind+"/"+a.cfg.Instance.ID, err)
		}
		clients[i] = c
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	busy := make([]atomic.Bool, len(clients))
	var wg sync.WaitGroup
	for {
		body, err := a.message()
		if err != nil {
			wg.Wait()
			return err
		}
		for i, c := range clients {
			if !busy[i].CompareAndSwap(false, true) {
				continue // the previous heartbeat is still waiting
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer busy[i].Store(false)
				// Half an interval, so a call lost with a dying resolver is over
				// before the next tick and the restarted one hears the next beat.
				// A beat that finds no connection is held by the client and sent
				// as soon as one is made (see reconnectInterval).
				cctx, cancel := context.WithTimeout(ctx, a.cfg.Interval/2)
				defer cancel()
				_, err := c.Call(cctx, TypeBeat, body)
				a.note(i, err)
			}()
		}
		d := a.cfg.Interval - time.Duration(rand.Int64N(int64(a.cfg.Interval)/10+1))
		t := a.cfg.Clock.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			wg.Wait()
			a.bye(clients)
			return nil
		case <-t.C():
		}
	}
}

// reconnectInterval is how soon an announcer connects again to a resolver
// that went away: a tenth of the heartbeat interval (at least 5ms), so a
// restarted resolver hears every announcer within one interval of coming
// up. A beat that finds no connection is held and sent the moment one is
// made (the zmqloop client retries unsent calls), so the rebuild takes at
// most the rest of the current beat's half-interval window plus this.
// libzmq's own default, 100ms, made a restart at a 100ms interval take
// 200-265ms to rebuild.
func reconnectInterval(interval time.Duration) time.Duration {
	return max(interval/10, 5*time.Millisecond)
}

func (a *ResolverAnnouncer) message() (json.RawMessage, error) {
	b, err := json.Marshal(beatMsg{Instance: *a.inst.Load(), Inc: a.inc, Seq: a.seq.Add(1)})
	if err != nil {
		return nil, fmt.Errorf("nexus: announcer: encode heartbeat: %w", err)
	}
	return b, nil
}

func (a *ResolverAnnouncer) note(i int, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	prev := a.lastEr[i]
	a.lastEr[i] = err
	if err == nil {
		a.acked[i] = time.Now()
		if prev != nil {
			a.log.Info("nexus: resolver accepts heartbeats again", "resolver", a.cfg.Resolvers[i])
		}
		return
	}
	if prev == nil && !errors.Is(err, context.Canceled) {
		a.log.Warn("nexus: heartbeat failed", "resolver", a.cfg.Resolvers[i], "kind", a.cfg.Instance.Kind, "id", a.cfg.Instance.ID, "err", err)
	}
}

// bye tells every resolver at once that the instance is leaving.
func (a *ResolverAnnouncer) bye(clients []*zmqloop.Client) {
	in := a.inst.Load()
	body, err := json.Marshal(beatMsg{Instance: Instance{Kind: in.Kind, ID: in.ID}, Inc: a.inc, Seq: a.seq.Add(1)})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ByeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Call(ctx, TypeBye, body); err != nil {
				a.log.Warn("nexus: goodbye not delivered; the resolver drops the instance after its grace period",
					"resolver", a.cfg.Resolvers[i], "err", err)
			}
		}()
	}
	wg.Wait()
}
