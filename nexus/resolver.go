package nexus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/zmqloop"
)

// Message types of the resolver protocol (see the package doc).
const (
	TypeBeat   = "nexus.beat"
	TypeBye    = "nexus.bye"
	TypeLookup = "nexus.lookup"
	TypeGet    = "nexus.get"
	TypeWatch  = "nexus.watch"
	TypeStatus = "nexus.status"
)

// Error codes a resolver answers with.
const (
	CodeStale    = "nexus.stale"     // heartbeat or goodbye not newer than the one held, or signed before the resolver started
	CodeInvalid  = "nexus.invalid"   // a malformed instance or kind
	CodeNotFound = "nexus.not_found" // Get: no such live instance
)

// Defaults for ResolverConfig's (and AnnouncerConfig's) zero values.
const (
	DefaultInterval    = time.Second
	DefaultMaxInFlight = 256
	// DefaultWatchWait is how long a watch request waits for a change
	// before the resolver answers with none.
	DefaultWatchWait = 5 * time.Second
	// changeLog is how many changes per kind a resolver keeps for
	// watchers; one further behind gets the whole set again.
	changeLog = 1024
	// maxChangesPerReply bounds one watch reply.
	maxChangesPerReply = 512
)

// ResolverConfig configures a Resolver. Zero values are the documented
// defaults.
type ResolverConfig struct {
	// Bind lists the ROUTER endpoints the resolver serves on
	// ("tcp://0.0.0.0:7400"); at least one is required.
	Bind []string
	// Codec signs and verifies. Required.
	Codec *zmqloop.Codec
	// Name identifies the resolver in replies and logs. Default: the
	// first Bind endpoint.
	Name string
	// Interval is the heartbeat interval announcers use. The resolver
	// answers as warm (its table complete) once it has run for
	// Interval+Interval/4. Default DefaultInterval (1s).
	Interval time.Duration
	// SuspectAfter: an instance with no heartbeat for this long is
	// suspect. Default 3*Interval (three missed beats).
	SuspectAfter time.Duration
	// Grace: a suspect instance with no heartbeat for a further Grace is
	// dropped. Default 5*Interval.
	Grace time.Duration
	// MaxInFlight bounds the requests handled at once (see
	// zmqloop.ReplyConfig); watch requests waiting for a change take at
	// most half of them, and a watch beyond that is answered at once.
	// Default DefaultMaxInFlight (256).
	MaxInFlight int
	// Curve, if set, encrypts the transport.
	Curve *zmqloop.Curve
	// Clock times heartbeats, suspicion and the grace period; nil is the
	// real clock. (The floor that refuses messages signed before the
	// resolver started is compared with the senders' timestamps, so it is
	// taken from the wall clock, as the codec's window is.)
	Clock daemon.Clock
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Resolver keeps the table of who runs what where, from heartbeats alone,
// and answers lookups and watches over zmqloop. Run two or more on
// different machines; each is independent (they never talk to each
// other), announcers beat to all of them and clients ask any. A restarted
// resolver starts empty and is complete again after one heartbeat
// interval.
type Resolver struct {
	cfg      ResolverConfig
	log      *slog.Logger
	clock    daemon.Clock
	loop     *zmqloop.ReplyLoop
	watchers chan struct{} // semaphore of waiting watch requests
	ready    chan struct{}
	started  atomic.Bool

	// Set by Run before the loop starts.
	tab      *table
	startAt  time.Time // Clock time: warm-up
	floor    time.Time // wall clock: messages signed before it are refused
	tabReady chan struct{}

	beats, refused, suspected, dropped atomic.Uint64
}

// NewResolver validates cfg and returns a resolver; Run serves it.
func NewResolver(cfg ResolverConfig) (*Resolver, error) {
	if len(cfg.Bind) == 0 {
		return nil, fmt.Errorf("%w: resolver: Bind is required", ErrInvalid)
	}
	if cfg.Codec == nil {
		return nil, fmt.Errorf("%w: resolver: Codec is required", ErrInvalid)
	}
	if cfg.Interval < 0 || cfg.SuspectAfter < 0 || cfg.Grace < 0 || cfg.MaxInFlight < 0 {
		return nil, fmt.Errorf("%w: resolver: negative Interval %v, SuspectAfter %v, Grace %v or MaxInFlight %d",
			ErrInvalid, cfg.Interval, cfg.SuspectAfter, cfg.Grace, cfg.MaxInFlight)
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.SuspectAfter == 0 {
		cfg.SuspectAfter = 3 * cfg.Interval
	}
	if cfg.Grace == 0 {
		cfg.Grace = 5 * cfg.Interval
	}
	if cfg.SuspectAfter < cfg.Interval {
		return nil, fmt.Errorf("%w: resolver: SuspectAfter %v is below the heartbeat Interval %v: every instance would flap",
			ErrInvalid, cfg.SuspectAfter, cfg.Interval)
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.MaxInFlight < 4 {
		return nil, fmt.Errorf("%w: resolver: MaxInFlight %d is below 4", ErrInvalid, cfg.MaxInFlight)
	}
	if cfg.Name == "" {
		cfg.Name = cfg.Bind[0]
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	r := &Resolver{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, ready: make(chan struct{}),
		watchers: make(chan struct{}, cfg.MaxInFlight/2), tabReady: make(chan struct{})}
	loop, err := zmqloop.NewReplyLoop(zmqloop.ReplyConfig{
		Bind: cfg.Bind, Codec: cfg.Codec, Curve: cfg.Curve, MaxInFlight: cfg.MaxInFlight, Logger: cfg.Logger,
		Handlers: map[string]zmqloop.Handler{
			TypeBeat:   r.handleBeat,
			TypeBye:    r.handleBye,
			TypeLookup: r.handleLookup,
			TypeGet:    zmqloop.HandleJSON(r.handleGet),
			TypeWatch:  zmqloop.HandleJSON(r.handleWatch),
			TypeStatus: zmqloop.HandleJSON(func(context.Context, struct{}) (ResolverStatus, error) { return r.Status(), nil }),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("nexus: resolver %s: %w", cfg.Name, err)
	}
	r.loop = loop
	return r, nil
}

// Ready is closed once Run serves.
func (r *Resolver) Ready() <-chan struct{} { return r.ready }

// Endpoints returns the bound endpoints (with real ports), once Ready.
func (r *Resolver) Endpoints() []string { return r.loop.Endpoints() }

// ResolverStatus is a resolver's state for status pages.
type ResolverStatus struct {
	Name      string `json:"name"`
	Epoch     string `json:"epoch"`
	Warm      bool   `json:"warm"`
	Instances int    `json:"instances"`
	Beats     uint64 `json:"beats"`     // heartbeats accepted
	Refused   uint64 `json:"refused"`   // heartbeats and goodbyes refused (stale mark, before start, malformed)
	Suspected uint64 `json:"suspected"` // times an instance became suspect
	Dropped   uint64 `json:"dropped"`   // instances dropped after their grace period
}

// Status reports the resolver's counters.
func (r *Resolver) Status() ResolverStatus {
	st := ResolverStatus{Name: r.cfg.Name, Beats: r.beats.Load(), Refused: r.refused.Load(),
		Suspected: r.suspected.Load(), Dropped: r.dropped.Load()}
	select {
	case <-r.tabReady:
		st.Epoch, st.Warm, st.Instances = r.tab.epoch, r.warm(), r.tab.size()
	default:
	}
	return st
}

// Run serves until ctx ends. A Resolver runs once.
func (r *Resolver) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return fmt.Errorf("nexus: resolver %s: Run called twice", r.cfg.Name)
	}
	var seed [8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return fmt.Errorf("nexus: resolver %s: epoch: %w", r.cfg.Name, err)
	}
	// The floor is the wall clock at start, truncated to the timestamps'
	// millisecond: whatever was signed before it was meant for an earlier
	// life of this resolver (or for another member) and is refused.
	r.floor = time.Now().Truncate(time.Millisecond)
	r.startAt = r.clock.Now()
	r.tab = newTable(r.cfg.SuspectAfter, r.cfg.Grace, r.cfg.Codec.Window()+r.cfg.SuspectAfter+r.cfg.Grace,
		changeLog, hex.EncodeToString(seed[:])+"-"+strconv.FormatInt(r.floor.UnixMilli(), 36))
	close(r.tabReady)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.sweepLoop(ctx)
	}()
	go func() {
		select {
		case <-r.loop.Ready():
			r.log.Info("nexus: resolver serving", "name", r.cfg.Name, "endpoints", r.loop.Endpoints(), "epoch", r.tab.epoch)
			close(r.ready)
		case <-ctx.Done():
		}
	}()
	err := r.loop.Run(ctx)
	cancel()
	wg.Wait()
	if err != nil {
		return fmt.Errorf("nexus: resolver %s: %w", r.cfg.Name, err)
	}
	return nil
}

// sweepLoop suspects and drops silent instances, four times per
// SuspectAfter or Grace (whichever is shorter).
func (r *Resolver) sweepLoop(ctx context.Context) {
	every := min(r.cfg.SuspectAfter, r.cfg.Grace) / 4
	every = max(every, 10*time.Millisecond)
	for {
		t := r.clock.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		s, d := r.tab.sweep(r.clock.Now())
		r.suspected.Add(uint64(s))
		r.dropped.Add(uint64(d))
		if s+d > 0 {
			r.log.Debug("nexus: sweep", "resolver", r.cfg.Name, "suspected", s, "dropped", d)
		}
	}
}

func (r *Resolver) warmup() time.Duration { return r.cfg.Interval + r.cfg.Interval/4 }

func (r *Resolver) warm() bool { return r.clock.Now().Sub(r.startAt) >= r.warmup() }

// beatMsg is the body of nexus.beat and nexus.bye.
type beatMsg struct {
	Instance
	Inc int64  `json:"inc"`
	Seq uint64 `json:"seq"`
}

func (r *Resolver) decodeMark(req *zmqloop.Request) (beatMsg, error) {
	var m beatMsg
	if req.Time.Before(r.floor) {
		return m, zmqloop.Errorf(CodeStale, "%s signed at %s, before this resolver started (%s)",
			req.Type, req.Time.UTC().Format(time.RFC3339Nano), r.floor.UTC().Format(time.RFC3339Nano))
	}
	if err := json.Unmarshal(req.Body, &m); err != nil {
		return m, zmqloop.Errorf(CodeInvalid, "%s body: %v", req.Type, err)
	}
	if m.Inc <= 0 || m.Seq == 0 {
		return m, zmqloop.Errorf(CodeInvalid, "%s of %s/%s: mark %d.%d: inc and seq must be positive", req.Type, m.Kind, m.ID, m.Inc, m.Seq)
	}
	return m, nil
}

type beatReply struct {
	Warm bool `json:"warm"`
}

func (r *Resolver) refuse(err error) error {
	r.refused.Add(1)
	if errors.Is(err, ErrStaleMark) {
		return zmqloop.Errorf(CodeStale, "%v", err)
	}
	var re *zmqloop.RemoteError
	if errors.As(err, &re) {
		return re
	}
	return zmqloop.Errorf(CodeInvalid, "%v", err)
}

func (r *Resolver) handleBeat(_ context.Context, req *zmqloop.Request) (json.RawMessage, error) {
	m, err := r.decodeMark(req)
	if err == nil {
		err = m.Instance.Validate()
	}
	if err == nil {
		err = r.tab.beat(m.Instance.clone(), m.Inc, m.Seq, r.clock.Now())
	}
	if err != nil {
		r.log.Debug("nexus: heartbeat refused", "resolver", r.cfg.Name, "key", req.KeyID, "err", err)
		return nil, r.refuse(err)
	}
	r.beats.Add(1)
	if r.warm() {
		return json.RawMessage(`{"warm":true}`), nil
	}
	return json.RawMessage(`{"warm":false}`), nil
}

func (r *Resolver) handleBye(_ context.Context, req *zmqloop.Request) (json.RawMessage, error) {
	m, err := r.decodeMark(req)
	if err == nil {
		err = checkKind(m.Kind)
	}
	if err == nil && !validID(m.ID) {
		err = fmt.Errorf("%w: goodbye: instance id %q", ErrInvalid, m.ID)
	}
	if err == nil {
		err = r.tab.bye(m.Kind, m.ID, m.Inc, m.Seq, r.clock.Now())
	}
	if err != nil {
		r.log.Debug("nexus: goodbye refused", "resolver", r.cfg.Name, "err", err)
		return nil, r.refuse(err)
	}
	r.log.Info("nexus: goodbye", "resolver", r.cfg.Name, "kind", m.Kind, "id", m.ID)
	return json.RawMessage(`{}`), nil
}

type kindReq struct {
	Kind string `json:"kind"`
	ID   string `json:"id,omitempty"`
	// A lookup may say which version of the kind the caller holds
	// (the epoch and change number of an earlier answer); if it is
	// current, the answer is "unchanged" without the entries.
	IfEpoch string `json:"if_epoch,omitempty"`
	IfSeq   uint64 `json:"if_seq,omitempty"`
}

// handleLookup answers {"resolver":..,"warm":..,"epoch":..,"seq":..,
// "entries":[...]} with the kind's cached encoding spliced in (no
// per-lookup encoding), or with "unchanged":true instead of the entries
// when the caller already holds this version.
func (r *Resolver) handleLookup(_ context.Context, req *zmqloop.Request) (json.RawMessage, error) {
	var q kindReq
	if err := json.Unmarshal(req.Body, &q); err != nil {
		return nil, zmqloop.Errorf(CodeInvalid, "lookup body: %v", err)
	}
	if err := checkKind(q.Kind); err != nil {
		return nil, zmqloop.Errorf(CodeInvalid, "lookup: %v", err)
	}
	entries, seq, err := r.tab.lookupJSON(q.Kind)
	if err != nil {
		return nil, err
	}
	if max := r.cfg.Codec.MaxSize() - 512; len(entries) > max {
		return nil, zmqloop.Errorf("nexus.too_large", "kind %q: %d bytes of entries exceed the message size bound %d; raise the codec's MaxSize",
			q.Kind, len(entries), r.cfg.Codec.MaxSize())
	}
	unchanged := q.IfEpoch == r.tab.epoch && q.IfSeq == seq
	name, _ := json.Marshal(r.cfg.Name)
	out := make([]byte, 0, len(entries)+len(name)+120)
	out = append(out, `{"resolver":`...)
	out = append(out, name...)
	out = append(out, `,"warm":`...)
	out = strconv.AppendBool(out, r.warm())
	out = append(out, `,"epoch":"`...)
	out = append(out, r.tab.epoch...) // hex, '-' and base 36: no escaping
	out = append(out, `","seq":`...)
	out = strconv.AppendUint(out, seq, 10)
	if unchanged {
		out = append(out, `,"unchanged":true}`...)
		return out, nil
	}
	out = append(out, `,"entries":`...)
	out = append(out, entries...)
	out = append(out, '}')
	return out, nil
}

type getReply struct {
	Entry Entry `json:"entry"`
	Warm  bool  `json:"warm"`
}

func (r *Resolver) handleGet(_ context.Context, q kindReq) (getReply, error) {
	if err := checkKind(q.Kind); err != nil {
		return getReply{}, zmqloop.Errorf(CodeInvalid, "get: %v", err)
	}
	e, ok := r.tab.get(q.Kind, q.ID)
	if !ok {
		return getReply{Warm: r.warm()}, zmqloop.Errorf(CodeNotFound, "%s/%s is not registered (warm=%v)", q.Kind, q.ID, r.warm())
	}
	return getReply{Entry: e, Warm: r.warm()}, nil
}

type watchReq struct {
	Kind   string `json:"kind"`
	Epoch  string `json:"epoch"`
	Since  uint64 `json:"since"`
	WaitMS int64  `json:"wait_ms"`
}

// handleWatch answers a watcher with what it is missing, waiting up to
// wait_ms (at most DefaultWatchWait*2) for a change when there is none.
func (r *Resolver) handleWatch(ctx context.Context, q watchReq) (watchReply, error) {
	if err := checkKind(q.Kind); err != nil {
		return watchReply{}, zmqloop.Errorf(CodeInvalid, "watch: %v", err)
	}
	rep, changed := r.tab.changesSince(q.Kind, q.Epoch, q.Since, maxChangesPerReply)
	wait := time.Duration(min(max(q.WaitMS, 0), durationMS(2*DefaultWatchWait))) * time.Millisecond
	if rep.Reset || len(rep.Changes) > 0 || wait == 0 {
		rep.Warm = r.warm()
		return rep, nil
	}
	if left := r.startAt.Add(r.warmup()).Sub(r.clock.Now()); left > 0 {
		// Answer when turning warm: only a warm resolver's view confirms
		// that an instance is gone, so the watcher wants to know.
		wait = min(wait, left)
	}
	select {
	case r.watchers <- struct{}{}:
		defer func() { <-r.watchers }()
	default:
		// Too many watchers waiting: answer now rather than hold a
		// worker that heartbeats need.
		rep.Warm = r.warm()
		return rep, nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-changed:
		rep, _ = r.tab.changesSince(q.Kind, q.Epoch, q.Since, maxChangesPerReply)
	case <-t.C:
	case <-ctx.Done():
	}
	rep.Warm = r.warm()
	return rep, nil
}

type realClock struct{}

func (realClock) Now() time.Time                        { return time.Now() }
func (realClock) NewTimer(d time.Duration) daemon.Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }
