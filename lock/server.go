package lock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/paaskit/paaskit/zmqloop"
)

// Message types of the locker protocol (see the package doc).
const (
	TypeAcquire = "lock.acquire"
	TypeRenew   = "lock.renew"
	TypeRelease = "lock.release"
	TypeBeat    = "lockd.beat"
	TypeSync    = "lockd.sync"
	TypeRepl    = "lockd.replicate"
)

// Error codes a locker answers with (RemoteError.Code).
const (
	CodeHeld        = "held"        // the name is held by another lease
	CodeNotHeld     = "not_held"    // renew/release of a lease that is not current
	CodeInvalid     = "invalid"     // a malformed name, TTL or lease
	CodeNotActive   = "not_active"  // this member is the standby: ask the other
	CodeUnavailable = "unavailable" // the active member is in its cold-start wait
	CodeReplayed    = "replayed"    // the request was already applied (by the peer) or predates this process
	CodeForbidden   = "forbidden"   // a member-to-member request not signed with the peer key
)

// Server defaults.
const (
	DefaultHeartbeatInterval = 100 * time.Millisecond
	DefaultFailoverAfter     = time.Second
	DefaultServerMaxTTL      = time.Minute
)

// Role is what a locker member is doing now.
type Role string

// A member starts in RoleStarting, then becomes the active member (the one
// that grants) or the standby (which keeps a replica and takes over).
const (
	RoleStarting Role = "starting"
	RoleStandby  Role = "standby"
	RoleActive   Role = "active"
)

// ServerConfig configures one member of a locker pair. Zero values are the
// documented defaults.
type ServerConfig struct {
	// ID names this member, 1-64 bytes of [A-Za-z0-9._-]; the two members
	// of a pair must differ. Required.
	ID string
	// Bind is the endpoint clients and the peer reach this member on, e.g.
	// "tcp://127.0.0.1:7400" ("tcp://127.0.0.1:*" picks a free port; see
	// Endpoint). Required.
	Bind string
	// Peer is the other member's endpoint. Empty runs a single locker with
	// no standby.
	Peer string
	// Codec signs and verifies every message. Required.
	Codec *zmqloop.Codec
	// PeerCodec, if set, signs this member's calls to its peer (beats,
	// syncs, replication), and its signing key becomes the peer key: the
	// member refuses lockd.* requests signed with any other key, so a
	// client, which holds only the client key, cannot forge a replication
	// or a sync. The peer key must also be in Codec's ring (to verify the
	// peer's calls) on both members, and in no client's; and PeerCodec's
	// ring must hold Codec's signing key too, which signs the peer's
	// replies. Nil: members and
	// clients share keys, and any key holder is trusted as a member.
	PeerCodec *zmqloop.Codec
	// StateFile, if set, is where the member keeps the largest token epoch
	// it has used or seen, written atomically whenever it changes, so a
	// restarted pair never goes back to an epoch it used. Without it the
	// epoch falls back to the clock (see the package doc).
	StateFile string
	// HeartbeatInterval is how often each member tells the other it is
	// alive. Default DefaultHeartbeatInterval (100ms).
	HeartbeatInterval time.Duration
	// FailoverAfter is how long the standby waits without a word from the
	// active member before it takes over. Default DefaultFailoverAfter (1s).
	FailoverAfter time.Duration
	// ReplicateTimeout bounds the active member's wait for the standby to
	// acknowledge a change; past it the standby counts as gone until it
	// syncs again. Default 2 x HeartbeatInterval.
	ReplicateTimeout time.Duration
	// MaxTTL is the longest lease granted. Default DefaultServerMaxTTL (1m).
	MaxTTL time.Duration
	// ColdStartWait is how long a member that becomes active without a
	// replica (both members were down) refuses grants, so that any lease
	// an earlier incarnation granted has expired. Zero means MaxTTL;
	// negative means none (only for a pair known to be new).
	ColdStartWait time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

var memberID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

type grant struct {
	Holder  string
	Token   uint64
	TTL     time.Duration
	expires time.Time // this member's monotonic clock
}

// Server is one member of the ZeroMQ locker pair (or a single locker).
type Server struct {
	cfg   ServerConfig
	log   *slog.Logger
	start time.Time
	loop  *zmqloop.ReplyLoop
	// applied remembers, across the pair, the requests either member
	// applied: the active member replicates each request's id with its
	// change, so a request replayed to the other member is refused.
	applied *zmqloop.ReplayWindow
	peer    *zmqloop.Client
	async   sync.WaitGroup // releases being replicated
	peerKey string         // the key id members must sign lockd.* with; "" for any

	mu         sync.Mutex
	role       Role
	synced     bool // standby: holds a full replica
	peerSynced bool // active: the standby holds a full replica
	peerRole   Role
	peerID     string
	// peerReplica: the peer's last status said it is a standby holding a
	// full replica; a starting member then leaves the role to it.
	peerReplica bool
	// peerStatusReplied: the peer's last status came in answer to a beat
	// of ours (see observePeer).
	peerStatusReplied bool
	peerInc           string // the peer's incarnation, and the newest status seen from it
	peerSeq           uint64
	inc               string // this process's incarnation
	statusSeq         uint64
	peerEpoch         uint64
	lastPeer          time.Time // last word from the peer
	epoch             uint64    // largest epoch used or seen
	seq               uint64    // tokens issued in epoch
	quietUntil        time.Time
	// pausedUntil: after a replication failed, the active member grants
	// and renews nothing until the standby has had time to hear that it is
	// out of sync (or to take over), unless it syncs again first.
	pausedUntil time.Time
	// An active member without a synced standby grants leases its peer
	// does not know of, so it must be sure the peer has not taken over.
	// peerProof is the send time of the newest beat or replication the
	// peer answered (the peer heard from us after it, so it cannot take
	// over before peerProof+FailoverAfter); activeSince is when this
	// member took the role; lastTick is the beat loop's last round, a
	// gap in which says this process was stalled (paused, frozen).
	// silentUntil holds such grants after a silence or a stall is
	// noticed (at holdFrom) until the peer answers a message sent after
	// holdFrom; noticed is the peerProof of the silence last noticed.
	peerProof   time.Time
	noticed     time.Time
	holdFrom    time.Time
	activeSince time.Time
	lastTick    time.Time
	silentUntil time.Time
	// steppedDown is when this member last gave up the active role: a
	// status of the peer's from before it (a beat queued while this
	// process was paused) must not make it take the role back.
	steppedDown time.Time
	leases      map[string]*grant
	// released remembers the leases given up by their holders for
	// releaseMemory, with the id of the Release call, so the same call
	// asked again (its reply was lost, or the member that applied it
	// failed over) is answered as done rather than "not held": the client
	// never has to guess which it was. Another Release of the same lease
	// is still refused.
	released  map[string]releasedGrant
	lastPrune time.Time
	ready     chan struct{}
}

// releasedGrant is a lease its holder released.
type releasedGrant struct {
	holder, call string
	token        uint64
	at           time.Time
}

// How long and how many released leases a member remembers: a client's
// retries of one Release end within its OpTimeout (5 s by default).
const (
	releaseMemory    = time.Minute
	releaseMemoryMax = 1 << 16
)

// NewServer validates cfg and returns a member; Run starts it.
func NewServer(cfg ServerConfig) (*Server, error) {
	if !memberID.MatchString(cfg.ID) {
		return nil, fmt.Errorf("%w: server ID %q (want 1-64 bytes of [A-Za-z0-9._-])", ErrInvalid, cfg.ID)
	}
	if cfg.Bind == "" || cfg.Codec == nil {
		return nil, fmt.Errorf("%w: ServerConfig.Bind and Codec are required", ErrInvalid)
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.FailoverAfter == 0 {
		cfg.FailoverAfter = DefaultFailoverAfter
	}
	if cfg.ReplicateTimeout == 0 {
		cfg.ReplicateTimeout = 2 * cfg.HeartbeatInterval
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = DefaultServerMaxTTL
	}
	if cfg.ColdStartWait == 0 {
		cfg.ColdStartWait = cfg.MaxTTL
	}
	if cfg.HeartbeatInterval < 0 || cfg.FailoverAfter < 2*cfg.HeartbeatInterval || cfg.ReplicateTimeout < 0 {
		return nil, fmt.Errorf("%w: HeartbeatInterval %v, FailoverAfter %v (at least two heartbeats), ReplicateTimeout %v",
			ErrInvalid, cfg.HeartbeatInterval, cfg.FailoverAfter, cfg.ReplicateTimeout)
	}
	if err := checkTTL(cfg.MaxTTL); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("locker", cfg.ID), role: RoleStarting, inc: randomID(),
		leases: map[string]*grant{}, released: map[string]releasedGrant{}, ready: make(chan struct{})}
	if cfg.StateFile != "" {
		ep, err := readEpoch(cfg.StateFile)
		if err != nil {
			return nil, err
		}
		s.epoch = ep
	}
	applied, err := zmqloop.NewReplayWindow(zmqloop.ReplayConfig{Window: cfg.Codec.Window()})
	if err != nil {
		return nil, fmt.Errorf("lock: replay window: %w", err)
	}
	s.applied = applied
	peerCodec := cfg.Codec
	if cfg.PeerCodec != nil {
		s.peerKey = cfg.PeerCodec.Keys().SigningKeyID()
		if !slices.Contains(cfg.Codec.Keys().KeyIDs(), s.peerKey) {
			return nil, fmt.Errorf("%w: the peer key %q is not in Codec's key ring", ErrInvalid, s.peerKey)
		}
		peerCodec = cfg.PeerCodec
	}
	handlers := map[string]zmqloop.Handler{
		TypeAcquire: s.handleAcquire,
		TypeRenew:   s.handleRenew,
		TypeRelease: s.handleRelease,
		TypeBeat:    s.fromPeer(zmqloop.HandleJSON(s.handleBeat)),
		TypeSync:    s.fromPeer(zmqloop.HandleJSON(s.handleSync)),
		TypeRepl:    s.fromPeer(zmqloop.HandleJSON(s.handleReplicate)),
	}
	s.loop, err = zmqloop.NewReplyLoop(zmqloop.ReplyConfig{Bind: []string{cfg.Bind}, Codec: cfg.Codec,
		Handlers: handlers, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("lock: locker %s on %s: %w", cfg.ID, cfg.Bind, err)
	}
	if cfg.Peer != "" {
		s.peer, err = zmqloop.NewClient(zmqloop.ClientConfig{Endpoints: []string{cfg.Peer}, Codec: peerCodec,
			TryTimeout: time.Hour, Logger: cfg.Logger})
		if err != nil {
			return nil, fmt.Errorf("lock: locker %s peer %s: %w", cfg.ID, cfg.Peer, err)
		}
	}
	return s, nil
}

// fromPeer refuses a member-to-member request not signed with the peer
// key (when one is configured).
func (s *Server) fromPeer(h zmqloop.Handler) zmqloop.Handler {
	if s.peerKey == "" {
		return h
	}
	return func(ctx context.Context, req *zmqloop.Request) (json.RawMessage, error) {
		if req.KeyID != s.peerKey {
			return nil, zmqloop.Errorf(CodeForbidden, "%s must be signed with the peer key, not %q", req.Type, req.KeyID)
		}
		return h(ctx, req)
	}
}

// Ready is closed once the member serves requests (it may still be
// deciding its role).
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Endpoint returns the bound endpoint, with a wildcard port resolved; it
// is empty before Ready.
func (s *Server) Endpoint() string {
	if eps := s.loop.Endpoints(); len(eps) > 0 {
		return eps[0]
	}
	return ""
}

// Status is a snapshot of a member's state, for status pages and tests.
type Status struct {
	ID       string
	Role     Role
	Synced   bool   // a standby holding a full replica, or an active member whose standby does
	Epoch    uint64 // the token epoch (tokens are Epoch<<24 | sequence)
	Leases   int    // leases held now
	PeerRole Role   // the peer's role as last heard ("" if never)
}

// Status returns the member's state now.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{ID: s.cfg.ID, Role: s.role, Epoch: s.epoch, PeerRole: s.peerRole}
	if s.role == RoleActive {
		st.Synced = s.peerSynced
	} else {
		st.Synced = s.synced
	}
	now := time.Now()
	for _, g := range s.leases {
		if now.Before(g.expires) {
			st.Leases++
		}
	}
	return st
}

// Run serves until ctx is cancelled and returns once its socket, peer
// client and goroutines are gone.
func (s *Server) Run(ctx context.Context) error {
	// Requests carry the time they were sealed in whole milliseconds, so
	// "sealed before this process started" is judged at that grain:
	// serving starts on the next millisecond boundary, and admit refuses
	// a request stamped with any earlier millisecond. Against time.Now's
	// nanoseconds, a fresh request sealed in the process's first
	// millisecond was refused as a replay (CI, TestReplayAfterRestart).
	s.start = time.Now().Truncate(time.Millisecond).Add(time.Millisecond)
	time.Sleep(time.Until(s.start))
	s.mu.Lock()
	s.lastPeer = time.Now() // with a monotonic reading, as the peer's later ones
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	loopErr := make(chan error, 1)
	go func() { loopErr <- s.loop.Run(ctx) }()
	select {
	case <-s.loop.Ready():
	case err := <-loopErr:
		return fmt.Errorf("lock: locker %s: %w", s.cfg.ID, err)
	}
	close(s.ready)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.beatLoop(ctx)
	}()
	err := <-loopErr
	cancel()
	wg.Wait()
	s.async.Wait()
	if s.peer != nil {
		_ = s.peer.Close()
	}
	if err != nil {
		return fmt.Errorf("lock: locker %s: %w", s.cfg.ID, err)
	}
	return nil
}

// memberStatus is what members tell each other in beats.
type memberStatus struct {
	ID string `json:"id"`
	// Inc names this run of the member's process and Seq counts the
	// statuses it has sent: a beat and a beat's reply cross, so the
	// receiver keeps only the newest status of an incarnation.
	Inc    string `json:"inc"`
	Seq    uint64 `json:"seq"`
	Role   Role   `json:"role"`
	Epoch  uint64 `json:"epoch"`
	Synced bool   `json:"synced"`
}

func (s *Server) statusLocked() memberStatus {
	s.statusSeq++
	st := memberStatus{ID: s.cfg.ID, Inc: s.inc, Seq: s.statusSeq, Role: s.role, Epoch: s.epoch, Synced: s.synced}
	if s.role == RoleActive {
		st.Synced = s.peerSynced
	}
	return st
}

// beatLoop tells the peer we are alive, learns its state from the reply,
// decides this member's role, and sweeps expired leases.
func (s *Server) beatLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		if s.peer != nil {
			s.mu.Lock()
			st := s.statusLocked()
			s.mu.Unlock()
			sent := time.Now()
			cctx, cancel := context.WithTimeout(ctx, s.cfg.HeartbeatInterval)
			peer, err := zmqloop.CallJSON[memberStatus](cctx, s.peer, TypeBeat, st)
			cancel()
			if err == nil {
				s.observePeer(peer, true)
				s.mu.Lock()
				s.provenLocked(sent)
				s.mu.Unlock()
			}
		}
		s.decide(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// observePeer records what the peer says about itself and settles a
// conflict of two active members (after a partition heals): the one with
// the larger epoch (then the smaller ID) stays active.
//
// fromReply says the status answered a beat of ours, so it is the peer's
// state now; one the peer sent in a beat of its own may have waited in a
// queue while this process was paused.
func (s *Server) observePeer(p memberStatus, fromReply bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.ID == s.cfg.ID {
		s.log.Error("the peer has this member's ID; a pair needs two IDs", "id", p.ID)
		return
	}
	if p.Inc == s.peerInc && p.Seq <= s.peerSeq {
		return // older than a status already seen
	}
	s.peerInc, s.peerSeq = p.Inc, p.Seq
	s.lastPeer = time.Now()
	s.peerRole, s.peerEpoch, s.peerID = p.Role, p.Epoch, p.ID
	s.peerReplica = p.Role == RoleStandby && p.Synced
	s.peerStatusReplied = fromReply
	s.seeEpochLocked(p.Epoch)
	switch {
	case p.Role == RoleActive && s.role == RoleActive:
		if p.Epoch > s.epochUsed() || (p.Epoch == s.epochUsed() && p.ID < s.cfg.ID) {
			s.log.Warn("another active member has the larger epoch; stepping down", "peer", p.ID, "epoch", p.Epoch)
			s.stepDownLocked()
		}
	case p.Role == RoleActive && s.role == RoleStandby && !p.Synced:
		// The active member skipped us (a replication timed out): our
		// replica may be behind, so it must not be taken over from.
		s.synced = false
	}
	// The active member keeps replicating to a standby that says it is
	// not synced (restarted, say): that is harmless, and the standby asks
	// for a snapshot itself. Only a failed replication stops it.
}

// epochUsed is the epoch the active member issues tokens in.
func (s *Server) epochUsed() uint64 { return s.epoch }

func (s *Server) seeEpochLocked(e uint64) {
	if e > s.epoch && s.role != RoleActive {
		s.epoch = e
		s.persistEpochLocked()
	}
}

// decide moves this member between roles. A starting member waits
// FailoverAfter to hear from its peer; it becomes standby under an active
// peer, and active otherwise (the smaller ID first when both start). A
// standby takes over once it has heard nothing for FailoverAfter, or when
// the peer says it is not active.
func (s *Server) decide(ctx context.Context) {
	s.mu.Lock()
	now := time.Now()
	s.unprovenLocked(now) // notices a silence or a stall as soon as there is one
	s.lastTick = now
	silent := now.Sub(s.lastPeer) >= s.cfg.FailoverAfter
	needSync := false
	switch s.role {
	case RoleStarting:
		switch {
		case s.peer == nil || (silent && s.peerRole == ""):
			s.becomeActiveLocked(false)
		case s.peerRole == RoleActive && !silent:
			s.role = RoleStandby
			needSync = true
		case silent:
			s.becomeActiveLocked(false)
		case s.peerReplica:
			// The peer is a standby with every lease: this member was the
			// active one and restarted. The standby takes over warm when it
			// sees this member starting (below); taking the role here would
			// start cold and forget the leases it holds.
		case s.peerRole != "" && s.cfg.ID < s.peerIDHint():
			// Both starting (or the peer is an unsynced standby): no
			// active member. The smaller ID takes the role.
			s.becomeActiveLocked(false)
		}
	case RoleStandby:
		switch {
		case silent, s.peerRole == RoleStandby && (s.synced || s.cfg.ID < s.peerIDHint()) && s.peerProof.After(s.steppedDown):
			// (A standby peer counts only as heard in answer to a beat sent
			// after this member stepped down.)
			s.becomeActiveLocked(s.synced)
		case s.peerRole == RoleStarting && s.peerStatusReplied && (s.synced || s.cfg.ID < s.peerIDHint()) && s.peerProof.After(s.steppedDown):
			// The peer's process started again, so the active member this
			// standby served is gone: take over now, warm with the
			// replica, rather than after FailoverAfter (the new process's
			// beats keep the peer from looking silent). Only on the peer's
			// answer to a beat: a "starting" it sent may have waited in a
			// queue while the peer went on to take the role, and two
			// active members would then settle it only at the next beat.
			s.becomeActiveLocked(s.synced)
		case !s.synced && s.peerRole == RoleActive:
			needSync = true
		}
	case RoleActive:
		for name, g := range s.leases {
			if now.After(g.expires) {
				delete(s.leases, name)
			}
		}
	}
	if now.Sub(s.lastPrune) >= time.Second {
		s.pruneReleasedLocked(now)
	}
	s.mu.Unlock()
	if needSync {
		s.syncFromPeer(ctx)
	}
}

// peerIDHint is the peer's ID for tie-breaks: members only know it from
// beats, so it is kept with the last status.
func (s *Server) peerIDHint() string { return s.peerID }

// becomeActiveLocked takes the active role. warm says this member holds a
// full replica (it was the synced standby), so leases carry on; otherwise
// it waits ColdStartWait before it grants. Either way it starts a new
// epoch above every epoch it has seen or persisted, and above the clock's
// Unix seconds.
func (s *Server) becomeActiveLocked(warm bool) {
	e := s.epoch + 1
	if c := uint64(time.Now().Unix()); c > e {
		e = c
	}
	s.epoch, s.seq = e, 0
	s.persistEpochLocked()
	s.role, s.peerSynced, s.activeSince = RoleActive, false, time.Now()
	if !warm {
		s.leases = map[string]*grant{}
		s.released = map[string]releasedGrant{}
		if s.cfg.ColdStartWait > 0 {
			s.quietUntil = time.Now().Add(s.cfg.ColdStartWait)
		}
	}
	s.log.Info("locker is active", "epoch", e, "warm", warm)
}

func (s *Server) nextTokenLocked() uint64 {
	s.seq++
	if s.seq >= 1<<24 {
		s.epoch++
		s.persistEpochLocked()
		s.seq = 1
	}
	return s.epoch<<24 | s.seq
}

func (s *Server) persistEpochLocked() {
	if s.cfg.StateFile == "" {
		return
	}
	if err := writeEpoch(s.cfg.StateFile, s.epoch); err != nil {
		// Tokens stay safe while the process lives; a restart would fall
		// back to the clock. Say so loudly.
		s.log.Error("cannot persist the token epoch", "file", s.cfg.StateFile, "error", err)
	}
}

func readEpoch(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("lock: read state file: %w", err)
	}
	var st struct {
		Epoch uint64 `json:"epoch"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return 0, fmt.Errorf("lock: state file %s: %w", path, err)
	}
	return st.Epoch, nil
}

func writeEpoch(path string, epoch uint64) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".lockd-state-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := fmt.Fprintf(tmp, "{\"epoch\":%d}\n", epoch); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// wire bodies of the client protocol
type acquireReq struct {
	Name   string `json:"name"`
	Holder string `json:"holder"`
	TTLms  int64  `json:"ttl_ms"`
}

type leaseReq struct {
	Name   string `json:"name"`
	Holder string `json:"holder"`
	Token  uint64 `json:"token"`
	// Call names one Release call across its attempts (optional).
	Call string `json:"call,omitempty"`
}

type grantResp struct {
	Token       uint64 `json:"token"`
	TTLms       int64  `json:"ttl_ms"`
	RemainingMs int64  `json:"remaining_ms"`
}

type replEntry struct {
	Op          string `json:"op"` // "set" or "del"
	Name        string `json:"name"`
	Holder      string `json:"holder"`
	Token       uint64 `json:"token"`
	TTLms       int64  `json:"ttl_ms"`
	RemainingMs int64  `json:"remaining_ms"`
	Epoch       uint64 `json:"epoch"`
	// ReleaseCall is the id of the holder's Release call a "del" applies
	// (none for a Revoke): the standby remembers it as the active member
	// does.
	ReleaseCall string `json:"release_call,omitempty"`
	// The client request that caused it, for the standby's replay window.
	ReqKey string `json:"req_key"`
	ReqID  string `json:"req_id"`
	ReqTS  int64  `json:"req_ts"`
}

type snapshot struct {
	Epoch   uint64      `json:"epoch"`
	Entries []replEntry `json:"entries"`
}

// admit refuses a request that predates this process (its replay window
// is new and would let it through) or that the peer already applied.
func (s *Server) admit(req *zmqloop.Request) error {
	if req.Time.Before(s.start) {
		return zmqloop.Errorf(CodeReplayed, "request %s is older than this locker process", req.ID)
	}
	if err := s.applied.Admit(&zmqloop.Message{KeyID: req.KeyID, ID: req.ID, Time: req.Time}); err != nil {
		return zmqloop.Errorf(CodeReplayed, "request %s: %v", req.ID, err)
	}
	return nil
}

func decodeBody(req *zmqloop.Request, v any) error {
	if err := json.Unmarshal(req.Body, v); err != nil {
		return zmqloop.Errorf(CodeInvalid, "%s body: %v", req.Type, err)
	}
	return nil
}

func (s *Server) activeLocked() error {
	if s.role != RoleActive {
		return zmqloop.Errorf(CodeNotActive, "locker %s is %s", s.cfg.ID, s.role)
	}
	if !s.peerSynced && time.Now().Before(s.pausedUntil) {
		return zmqloop.Errorf(CodeUnavailable, "locker %s lost its standby's acknowledgement; waiting until %s",
			s.cfg.ID, s.pausedUntil.Format(time.RFC3339Nano))
	}
	if time.Now().Before(s.quietUntil) {
		return zmqloop.Errorf(CodeUnavailable, "locker %s waits out leases of an earlier incarnation until %s",
			s.cfg.ID, s.quietUntil.Format(time.RFC3339Nano))
	}
	if now := time.Now(); s.unprovenLocked(now) {
		return zmqloop.Errorf(CodeUnavailable, "locker %s has not heard from its peer since %s and may have been superseded; waiting until %s",
			s.cfg.ID, s.peerProof.Format(time.RFC3339Nano), s.silentUntil.Format(time.RFC3339Nano))
	}
	return nil
}

// unprovenLocked reports whether the active member must hold the grants
// and renewals it would not replicate (it has no synced standby) because
// its peer may have taken over: the peer has not answered since before
// FailoverAfter (less a quarter, for the two clocks' rates and the beat
// interval) while this member was active, or this process was stalled
// (its beat loop has not run for half of FailoverAfter: SIGSTOP, a frozen
// VM; a request can reach it before the beat loop runs again). A member
// that hears nothing more for FailoverAfter plus a heartbeat after
// noticing takes the peer for dead and grants again. With a synced
// standby every change waits for the standby's acknowledgement, and a
// peer that took over refuses it, so nothing need be held.
func (s *Server) unprovenLocked(now time.Time) bool {
	if s.role != RoleActive || s.peer == nil {
		return false
	}
	hold := func(why string) {
		s.holdFrom, s.silentUntil = now, now.Add(s.cfg.FailoverAfter+s.cfg.HeartbeatInterval)
		s.log.Warn(why+"; holding unreplicated grants", "peer answered", s.peerProof, "until", s.silentUntil)
	}
	switch {
	case !s.lastTick.IsZero() && now.Sub(s.lastTick) >= s.cfg.FailoverAfter/2 && !now.Before(s.silentUntil):
		hold("this process was stalled while active")
	case !s.peerSynced && !s.peerProof.Before(s.activeSince) && !s.noticed.Equal(s.peerProof) &&
		now.Sub(s.peerProof) >= s.cfg.FailoverAfter-s.cfg.FailoverAfter/4:
		s.noticed = s.peerProof
		hold("no word from the peer while active")
	}
	if s.peerProof.After(s.holdFrom) {
		s.silentUntil = time.Time{} // the peer answered a message sent since: it did not take over
	}
	return !s.peerSynced && now.Before(s.silentUntil)
}

// provenLocked records that the peer answered a message sent at sent.
func (s *Server) provenLocked(sent time.Time) {
	if sent.After(s.peerProof) {
		s.peerProof = sent
	}
}

// stepDownLocked gives up the active role to the peer.
func (s *Server) stepDownLocked() {
	s.role, s.synced, s.peerSynced, s.steppedDown = RoleStandby, false, false, time.Now()
}

func (s *Server) handleAcquire(ctx context.Context, req *zmqloop.Request) (json.RawMessage, error) {
	var a acquireReq
	if err := decodeBody(req, &a); err != nil {
		return nil, err
	}
	ttl := time.Duration(a.TTLms) * time.Millisecond
	if err := checkRequest(a.Name, ttl); err != nil || a.Holder == "" || len(a.Holder) > 128 || ttl > s.cfg.MaxTTL {
		return nil, zmqloop.Errorf(CodeInvalid, "acquire %q holder %q ttl %v (at most %v): %v", a.Name, a.Holder, ttl, s.cfg.MaxTTL, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.activeLocked(); err != nil {
		return nil, err
	}
	if err := s.admit(req); err != nil {
		return nil, err
	}
	now := time.Now()
	if g := s.leases[a.Name]; g != nil && now.Before(g.expires) {
		if g.Holder != a.Holder {
			return nil, zmqloop.Errorf(CodeHeld, "%q is held", a.Name)
		}
		// The same acquire again (its reply was lost and the client
		// asked again): the same grant.
		return json.Marshal(grantResp{Token: g.Token, TTLms: g.TTL.Milliseconds(), RemainingMs: g.expires.Sub(now).Milliseconds()})
	}
	g := &grant{Holder: a.Holder, Token: s.nextTokenLocked(), TTL: ttl, expires: now.Add(ttl)}
	if err := s.replicateLocked(ctx, req, replEntry{Op: "set", Name: a.Name, Holder: g.Holder, Token: g.Token,
		TTLms: a.TTLms, RemainingMs: a.TTLms}); err != nil {
		return nil, err
	}
	s.leases[a.Name] = g
	return json.Marshal(grantResp{Token: g.Token, TTLms: a.TTLms, RemainingMs: a.TTLms})
}

func (s *Server) handleRenew(ctx context.Context, req *zmqloop.Request) (json.RawMessage, error) {
	return s.handleLease(ctx, req, true)
}

func (s *Server) handleRelease(ctx context.Context, req *zmqloop.Request) (json.RawMessage, error) {
	return s.handleLease(ctx, req, false)
}

func (s *Server) handleLease(ctx context.Context, req *zmqloop.Request, renew bool) (json.RawMessage, error) {
	var r leaseReq
	if err := decodeBody(req, &r); err != nil {
		return nil, err
	}
	if err := checkName(r.Name); err != nil || r.Holder == "" || r.Token == 0 {
		return nil, zmqloop.Errorf(CodeInvalid, "%s %q holder %q token %d: %v", req.Type, r.Name, r.Holder, r.Token, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.activeLocked(); err != nil {
		return nil, err
	}
	if err := s.admit(req); err != nil {
		return nil, err
	}
	now := time.Now()
	g := s.leases[r.Name]
	if g == nil || !now.Before(g.expires) || g.Holder != r.Holder || g.Token != r.Token {
		if rg, ok := s.released[r.Name]; !renew && ok && rg.call == r.Call && rg.holder == r.Holder && rg.token == r.Token {
			return json.RawMessage(`{}`), nil // this Release call was applied; its reply was lost
		}
		return nil, zmqloop.Errorf(CodeNotHeld, "%q token %d is not the current lease", r.Name, r.Token)
	}
	if renew {
		if err := s.replicateLocked(ctx, req, replEntry{Op: "set", Name: r.Name, Holder: g.Holder, Token: g.Token,
			TTLms: g.TTL.Milliseconds(), RemainingMs: g.TTL.Milliseconds()}); err != nil {
			return nil, err
		}
		g.expires = now.Add(g.TTL)
		return json.Marshal(grantResp{Token: g.Token, TTLms: g.TTL.Milliseconds(), RemainingMs: g.TTL.Milliseconds()})
	}
	if err := s.replicateLocked(ctx, req, replEntry{Op: "del", Name: r.Name, Holder: g.Holder, Token: g.Token, ReleaseCall: r.Call}); err != nil {
		return nil, err
	}
	delete(s.leases, r.Name)
	s.rememberReleaseLocked(r.Name, g.Holder, r.Call, g.Token, now)
	return json.RawMessage(`{}`), nil
}

// replicateLocked sends a change to the synced standby and waits for its
// acknowledgement before the change is applied and answered, so a standby
// that takes over knows every lease the client was told about. A standby
// that does not answer within ReplicateTimeout is dropped from sync (it
// must sync again before it may take over; the next beat tells it).
func (s *Server) replicateLocked(ctx context.Context, req *zmqloop.Request, e replEntry) error {
	if !s.peerSynced || s.peer == nil {
		return nil
	}
	e.Epoch = s.epoch
	e.ReqKey, e.ReqID, e.ReqTS = req.KeyID, req.ID, req.Time.UnixMilli()
	if e.Op == "del" {
		// A release need not wait: a standby that missed it thinks the
		// lease is held until it expires, which costs availability, never
		// safety (a late "del" removes only the grant with its token).
		// Grants and renewals do wait, or a standby could expire a lease
		// earlier than its holder was told.
		s.async.Add(1)
		go s.replicateAsync(e)
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.ReplicateTimeout)
	defer cancel()
	sent := time.Now()
	_, err := zmqloop.CallJSON[struct{}](cctx, s.peer, TypeRepl, e)
	var re *zmqloop.RemoteError
	if errors.As(err, &re) && re.Code == CodeNotActive {
		// The peer took over (it stopped hearing us): two active members.
		// Step down before granting anything it does not know of; the
		// client asks it instead. The refusal is word from an active
		// peer: a standby that forgot it would find the peer silent (its
		// last beat predates the pause that caused this) and take the
		// role back, cold, without the leases the peer granted.
		s.stepDownLocked()
		s.lastPeer, s.peerRole = time.Now(), RoleActive
		s.log.Warn("the peer is active too; stepping down", "error", err)
		return zmqloop.Errorf(CodeNotActive, "locker %s stepped down: its peer is active", s.cfg.ID)
	}
	if err != nil {
		s.dropStandbyLocked()
		s.log.Warn("standby did not acknowledge a change; it must sync again", "error", err)
		// The change is not applied and the client asks again: a grant the
		// standby might not know of is never handed out.
		return zmqloop.Errorf(CodeUnavailable, "locker %s: the standby did not acknowledge: %v", s.cfg.ID, err)
	}
	s.provenLocked(sent)
	return nil
}

// dropStandbyLocked stops replication to the standby and pauses grants and
// renewals for FailoverAfter plus a heartbeat: long enough for a live
// standby to hear, in a beat, that it is out of sync (so it will not take
// over with a stale replica), or for a standby that hears nothing to take
// over with the replica it has, which then lacks nothing.
func (s *Server) dropStandbyLocked() {
	s.peerSynced = false
	s.pausedUntil = time.Now().Add(s.cfg.FailoverAfter + s.cfg.HeartbeatInterval)
}

func (s *Server) replicateAsync(e replEntry) {
	defer s.async.Done()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ReplicateTimeout)
	defer cancel()
	if _, err := zmqloop.CallJSON[struct{}](ctx, s.peer, TypeRepl, e); err != nil {
		s.mu.Lock()
		if s.peerSynced {
			s.dropStandbyLocked()
		}
		s.mu.Unlock()
		s.log.Warn("standby did not acknowledge a release; it must sync again", "error", err)
	}
}

func (s *Server) handleBeat(_ context.Context, p memberStatus) (memberStatus, error) {
	s.observePeer(p, false)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statusLocked(), nil
}

// handleSync answers the standby's request for a full replica; from then
// on every change is replicated to it.
func (s *Server) handleSync(_ context.Context, _ struct{}) (snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.role != RoleActive {
		return snapshot{}, zmqloop.Errorf(CodeNotActive, "locker %s is %s", s.cfg.ID, s.role)
	}
	now := time.Now()
	snap := snapshot{Epoch: s.epoch}
	for name, g := range s.leases {
		if rem := g.expires.Sub(now); rem > 0 {
			snap.Entries = append(snap.Entries, replEntry{Op: "set", Name: name, Holder: g.Holder, Token: g.Token,
				TTLms: g.TTL.Milliseconds(), RemainingMs: rem.Milliseconds() + 1})
		}
	}
	s.peerSynced = true
	return snap, nil
}

func (s *Server) syncFromPeer(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.FailoverAfter)
	snap, err := zmqloop.CallJSON[snapshot](cctx, s.peer, TypeSync, struct{}{})
	cancel()
	if err != nil {
		s.log.Debug("sync from the active member failed", "error", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.role != RoleStandby {
		return
	}
	s.seeEpochLocked(snap.Epoch)
	for _, e := range snap.Entries {
		s.applyLocked(e, true)
	}
	s.synced = true
	s.lastPeer = time.Now()
	s.log.Info("standby holds a replica", "leases", len(snap.Entries), "epoch", snap.Epoch)
}

// applyLocked applies one replicated change. From a snapshot it keeps
// whichever of the two it knows has the larger token: a change replicated
// while the snapshot was in flight is newer than the snapshot.
func (s *Server) applyLocked(e replEntry, fromSnapshot bool) {
	switch e.Op {
	case "set":
		if old := s.leases[e.Name]; fromSnapshot && old != nil && old.Token > e.Token {
			return
		}
		s.leases[e.Name] = &grant{Holder: e.Holder, Token: e.Token, TTL: time.Duration(e.TTLms) * time.Millisecond,
			expires: time.Now().Add(time.Duration(e.RemainingMs) * time.Millisecond)}
	case "del":
		if old := s.leases[e.Name]; old != nil && old.Token == e.Token {
			delete(s.leases, e.Name)
		}
		if e.ReleaseCall != "" {
			s.rememberReleaseLocked(e.Name, e.Holder, e.ReleaseCall, e.Token, time.Now())
		}
	}
}

// rememberReleaseLocked records a release for releaseMemory. With
// releaseMemoryMax names remembered, after those older than releaseMemory
// are pruned, a new release is not recorded: a Release asked again then
// gets "not held", as it would without this memory.
func (s *Server) rememberReleaseLocked(name, holder, call string, token uint64, now time.Time) {
	if call == "" {
		return // a client that does not name its calls gets "not held" on a retry
	}
	if _, ok := s.released[name]; !ok && len(s.released) >= releaseMemoryMax {
		s.pruneReleasedLocked(now)
		if len(s.released) >= releaseMemoryMax {
			return
		}
	}
	s.released[name] = releasedGrant{holder: holder, call: call, token: token, at: now}
}

func (s *Server) pruneReleasedLocked(now time.Time) {
	s.lastPrune = now
	for name, rg := range s.released {
		if now.Sub(rg.at) >= releaseMemory {
			delete(s.released, name)
		}
	}
}

func (s *Server) handleReplicate(_ context.Context, e replEntry) (struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.role == RoleActive {
		return struct{}{}, zmqloop.Errorf(CodeNotActive, "locker %s is active itself", s.cfg.ID)
	}
	s.lastPeer = time.Now()
	s.seeEpochLocked(e.Epoch)
	if e.ReqID != "" {
		// Remember the client's request so it cannot be replayed to us.
		_ = s.applied.Admit(&zmqloop.Message{KeyID: e.ReqKey, ID: e.ReqID, Time: time.UnixMilli(e.ReqTS)})
	}
	s.applyLocked(e, false)
	return struct{}{}, nil
}

// Revoke ends the lease on name at once, as an operator breaking a stuck
// lock would; the next grant gets a larger token as always. It reports
// whether a lease was held. Only the active member revokes.
func (s *Server) Revoke(ctx context.Context, name string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.role != RoleActive {
		return false, fmt.Errorf("lock: revoke %q: locker %s is %s", name, s.cfg.ID, s.role)
	}
	g := s.leases[name]
	if g == nil || time.Now().After(g.expires) {
		return false, nil
	}
	if err := s.replicateLocked(ctx, &zmqloop.Request{}, replEntry{Op: "del", Name: name, Holder: g.Holder, Token: g.Token}); err != nil {
		return false, err
	}
	delete(s.leases, name)
	return true, nil
}
