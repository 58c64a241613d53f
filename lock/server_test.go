package lock

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/paaskit/paaskit/zmqloop"
	zmq "github.com/pebbe/zmq4"
	"github.com/stretchr/testify/require"
)

// rawDealer is a bare DEALER socket for sending exactly the frames a test
// wants: replays, forgeries, garbage.
type rawDealer struct {
	t    *testing.T
	sock *zmq.Socket
}

func dial(t *testing.T, ep string) *rawDealer {
	s, err := zmq.NewSocket(zmq.DEALER)
	require.NoError(t, err)
	require.NoError(t, s.SetLinger(0))
	require.NoError(t, s.SetRcvtimeo(2*time.Second))
	require.NoError(t, s.Connect(ep))
	t.Cleanup(func() { s.Close() })
	return &rawDealer{t: t, sock: s}
}

// send sends an empty delimiter then frames; recv returns the envelope
// frames of the reply, or nil if none came within 2s.
func (d *rawDealer) send(frames ...[]byte) {
	parts := append([]any{[]byte{}}, anySlice(frames)...)
	_, err := d.sock.SendMessage(parts...)
	require.NoError(d.t, err)
}

func anySlice(f [][]byte) []any {
	out := make([]any, len(f))
	for i, b := range f {
		out[i] = b
	}
	return out
}

func (d *rawDealer) recv() [][]byte {
	msg, err := d.sock.RecvMessageBytes(0)
	if err != nil {
		return nil
	}
	return msg[1:]
}

// call sends sealed frames and returns the opened reply.
func (d *rawDealer) call(codec *zmqloop.Codec, frames [][]byte) *zmqloop.Message {
	d.send(frames...)
	reply := d.recv()
	require.NotNil(d.t, reply, "no reply")
	m, err := codec.Open(reply)
	require.NoError(d.t, err)
	return m
}

func seal(t *testing.T, codec *zmqloop.Codec, typ string, body any) [][]byte {
	raw, err := json.Marshal(body)
	require.NoError(t, err)
	f, err := codec.Seal(zmqloop.Message{Type: typ, Body: raw})
	require.NoError(t, err)
	return f
}

func code(m *zmqloop.Message) string {
	if m.Error == nil {
		return ""
	}
	return m.Error.Code
}

// TestFailoverKeepsLeasesAndRaisesTokens: the standby takes over with the
// leases the active member granted, so a holder renews and releases across
// the failover and nobody else gets its lock meanwhile, and every token it
// issues is above every token the dead member issued.
func TestFailoverKeepsLeasesAndRaisesTokens(t *testing.T) {
	p := startPair(t, testCodec(t))
	b := zmqBackend(t, p)
	ctx := ctxFor(t, 30*time.Second)
	a, c := b.newLocker(t, nil), b.newLocker(t, nil)
	var highest uint64
	for i := 0; i < 5; i++ {
		l, err := a.TryAcquire(ctx, "f-other", time.Second)
		require.NoError(t, err)
		highest = max(highest, l.Token)
		require.NoError(t, a.Release(ctx, l))
	}
	held, err := a.TryAcquire(ctx, "f-held", 5*time.Second)
	require.NoError(t, err)
	highest = max(highest, held.Token)

	first := p.waitActive()
	p.stop(first)
	// The standby takes over within FailoverAfter; the client finds it.
	_, err = c.TryAcquire(ctx, "f-held", time.Second)
	require.ErrorIs(t, err, ErrHeld, "the lease survived the failover")
	require.NoError(t, a.Renew(ctx, held))
	l, err := c.TryAcquire(ctx, "f-new", time.Second)
	require.NoError(t, err)
	require.Greater(t, l.Token, highest, "the new active member's tokens are above the old one's")
	require.Equal(t, 1-first, p.waitActive())
	require.NoError(t, a.Release(ctx, held))
	// Long enough to outlive the restart, sync and second failover below
	// on a loaded machine (with 1 s it expired first in a CI run).
	l2, err := c.TryAcquire(ctx, "f-held", 20*time.Second)
	require.NoError(t, err)
	require.Greater(t, l2.Token, held.Token)

	// The killed member comes back as the standby, syncs, and a second
	// failover back to it keeps the order.
	p.start(first)
	require.Equal(t, 1-first, p.waitActive())
	p.stop(1 - first)
	l3, err := c.TryAcquire(ctx, "f-third", time.Second)
	require.NoError(t, err)
	require.Greater(t, l3.Token, l2.Token)
	_, err = a.TryAcquire(ctx, "f-held", time.Second)
	require.ErrorIs(t, err, ErrHeld, "the lease granted by the second member survived the second failover")

	// The standby dies now: the active member's next replication fails,
	// it pauses, then grants alone.
	p.start(1 - first)
	require.Equal(t, first, p.waitActive())
	p.stop(1 - first)
	l4, err := c.Acquire(ctx, "f-alone", time.Second)
	require.NoError(t, err)
	require.Greater(t, l4.Token, l3.Token)
	require.Equal(t, RoleActive, p.server(first).Status().Role)
}

// TestRestartedActiveLeavesTheRoleToItsStandby: the active member's
// process restarts at once (a crash and a supervisor's restart, faster
// than FailoverAfter). The new process must not take the role, cold,
// from a standby that holds every lease (the smaller ID did, and with
// ColdStartWait off granted a held lock again: TestChaosZMQ saw two
// holders); nor may the pair wait for a silence that the new process's
// beats never let come. The standby takes over warm at once, for either
// member ID.
func TestRestartedActiveLeavesTheRoleToItsStandby(t *testing.T) {
	p := startPair(t, testCodec(t))
	b := zmqBackend(t, p)
	ctx := ctxFor(t, 60*time.Second)
	a, c := b.newLocker(t, nil), b.newLocker(t, nil)
	held, err := a.TryAcquire(ctx, "restart-held", 30*time.Second)
	require.NoError(t, err)
	ids := map[string]bool{}
	for round := 0; round < 2; round++ {
		act := p.waitActive()
		ids[p.server(act).Status().ID] = true
		p.stop(act)
		p.start(act)
		began := time.Now()
		require.Equal(t, 1-act, p.waitActive(), "round %d: the standby took over", round)
		t.Logf("round %d: the standby took over in %v", round, time.Since(began))
		_, err := c.TryAcquire(ctx, "restart-held", time.Second)
		require.ErrorIs(t, err, ErrHeld, "round %d: the lease survived its granter's restart", round)
		require.NoError(t, a.Renew(ctx, held), "round %d", round)
	}
	require.Len(t, ids, 2, "both member IDs were the restarted active one")
	require.NoError(t, a.Release(ctx, held))
}

// TestReplayToTheOtherMember: a request the active member applied,
// replayed to the standby after it took over, is refused (the active
// member replicates each request's id with its change), so a released
// lock is not granted again to a stale request.
func TestReplayToTheOtherMember(t *testing.T) {
	codec := testCodec(t)
	p := startPair(t, codec)
	ctx := ctxFor(t, 30*time.Second)
	first := p.waitActive()
	acq := seal(t, codec, TypeAcquire, acquireReq{Name: "r", Holder: "h1", TTLms: 2000})
	m := dial(t, p.eps[first]).call(codec, acq)
	require.Empty(t, code(m), "%+v", m.Error)
	var g grantResp
	require.NoError(t, json.Unmarshal(m.Body, &g))
	rel := seal(t, codec, TypeRelease, leaseReq{Name: "r", Holder: "h1", Token: g.Token})
	require.Empty(t, code(dial(t, p.eps[first]).call(codec, rel)))

	p.stop(first)
	other := dial(t, p.eps[1-first])
	require.Eventually(t, func() bool { return p.server(1-first).Status().Role == RoleActive }, 10*time.Second, 10*time.Millisecond)
	m = other.call(codec, acq)
	require.Equal(t, CodeReplayed, code(m), "the replayed acquire: %+v", m)
	// And the lock is free for a real request.
	z := zmqBackend(t, p).newLocker(t, nil)
	l, err := z.TryAcquire(ctx, "r", time.Second)
	require.NoError(t, err)
	require.Greater(t, l.Token, g.Token)
}

// TestReleaseAskedAgainIsAnsweredAsDone: a Release whose reply was lost
// is asked again under the same call id, as a fresh message, to the same
// member or, after a failover, to the other: both answer it as done. Any
// other release of that lease is still refused, so a forged or second
// Release never passes for one that worked (CI 18:23: a forged release
// whose first attempt timed out under load was reported released).
func TestReleaseAskedAgainIsAnsweredAsDone(t *testing.T) {
	codec := testCodec(t)
	p := startPair(t, codec)
	first := p.waitActive()
	active := dial(t, p.eps[first])
	m := active.call(codec, seal(t, codec, TypeAcquire, acquireReq{Name: "again", Holder: "h1", TTLms: 5000}))
	require.Empty(t, code(m), "%+v", m.Error)
	var g grantResp
	require.NoError(t, json.Unmarshal(m.Body, &g))
	release := func(d *rawDealer, call string) string {
		return code(d.call(codec, seal(t, codec, TypeRelease, leaseReq{Name: "again", Holder: "h1", Token: g.Token, Call: call})))
	}
	require.Empty(t, release(active, "call-1"))
	require.Empty(t, release(active, "call-1"), "the same call asked again")
	require.Equal(t, CodeNotHeld, release(active, "call-2"), "another Release of a released lease")
	require.Equal(t, CodeNotHeld, release(active, ""), "a release without a call id")
	require.Equal(t, CodeNotHeld, code(active.call(codec, seal(t, codec, TypeRelease,
		leaseReq{Name: "again", Holder: "someone-else", Token: g.Token, Call: "call-1"}))), "the call id with another holder")
	require.Equal(t, CodeNotHeld, code(active.call(codec, seal(t, codec, TypeRenew,
		leaseReq{Name: "again", Holder: "h1", Token: g.Token, Call: "call-1"}))), "a renew is never answered from the memory")

	standby := p.server(1 - first)
	require.Eventually(t, func() bool {
		standby.mu.Lock()
		defer standby.mu.Unlock()
		return standby.released["again"].call == "call-1"
	}, 10*time.Second, 5*time.Millisecond, "the release reaches the standby")
	p.stop(first)
	require.Eventually(t, func() bool { return standby.Status().Role == RoleActive }, 10*time.Second, 10*time.Millisecond)
	other := dial(t, p.eps[1-first])
	require.Empty(t, release(other, "call-1"), "the same call, after the failover")
	require.Equal(t, CodeNotHeld, release(other, "call-3"))
}

// runSolo starts a locker with no peer and waits until it is active; stop
// ends it and checks Run's error.
func runSolo(t *testing.T, cfg ServerConfig) (*Server, func()) {
	t.Helper()
	s, err := NewServer(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-s.Ready()
	require.Eventually(t, func() bool { return s.Status().Role == RoleActive }, 5*time.Second, 5*time.Millisecond)
	return s, func() { cancel(); require.NoError(t, <-done) }
}

// TestReplayAfterRestart: a single locker restarted on the same endpoint
// (its replay window is new) refuses a request sealed before it started.
func TestReplayAfterRestart(t *testing.T) {
	codec := testCodec(t)
	ep := freeEndpoint(t)
	cfg := fastServerConfig("solo", ep, "", codec)
	run := func() func() {
		_, stop := runSolo(t, cfg)
		return stop
	}
	stop := run()
	acq := seal(t, codec, TypeAcquire, acquireReq{Name: "x", Holder: "h1", TTLms: 1000})
	d := dial(t, ep)
	m := d.call(codec, acq)
	require.Empty(t, code(m))
	d.send(acq...)
	rep := d.recv()
	require.NotNil(t, rep, "a replay to the same process is answered by its replay window")
	rm, err := codec.Open(rep)
	require.NoError(t, err)
	require.Equal(t, zmqloop.CodeRejected, code(rm), "a replay to the same process is refused by its replay window")
	stop()
	time.Sleep(5 * time.Millisecond) // the new process must start after the request was sealed
	stop = run()
	defer stop()
	m = dial(t, ep).call(codec, acq)
	require.Equal(t, CodeReplayed, code(m), "a replay to the restarted process: %+v", m)
}

// TestRequestSealedInTheFirstMillisecondIsAdmitted: a request's time is
// sealed in whole milliseconds, so one sealed at the very moment the
// process starts serving must not read as older than the process (it did
// when the start was kept to the nanosecond, and a fresh request was
// refused as a replay).
func TestRequestSealedInTheFirstMillisecondIsAdmitted(t *testing.T) {
	codec := testCodec(t)
	ep := freeEndpoint(t)
	s, stop := runSolo(t, fastServerConfig("solo", ep, "", codec))
	defer stop()
	atStart := testCodecAt(t, func() time.Time { return s.start })
	m := dial(t, ep).call(codec, seal(t, atStart, TypeAcquire, acquireReq{Name: "x", Holder: "h1", TTLms: 1000}))
	require.Empty(t, code(m), "a request sealed as the process started serving: %+v", m)
}

// TestHostileMessages: unsigned, forged, malformed and nonsense requests
// are refused and the locker keeps serving.
func TestHostileMessages(t *testing.T) {
	codec := testCodec(t)
	p := startPair(t, codec)
	i := p.waitActive()
	d := dial(t, p.eps[i])
	good := seal(t, codec, TypeAcquire, acquireReq{Name: "h", Holder: "h1", TTLms: 1000})

	// No answer for what fails the envelope: wrong frames, unknown key,
	// bad MAC, oversized; the loop refuses them quietly.
	other, err := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("not-the-secret-0123456789abcdef!")})
	require.NoError(t, err)
	forger, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: other})
	require.NoError(t, err)
	forged := seal(t, forger, TypeAcquire, acquireReq{Name: "h", Holder: "evil", TTLms: 1000})
	badMAC := [][]byte{good[0], good[1], make([]byte, 32)}
	unknownKey := [][]byte{[]byte("nokey"), good[1], good[2]}
	for _, frames := range [][][]byte{{[]byte("garbage")}, unknownKey, badMAC, forged,
		{good[0], []byte("{not json"), good[2]}, {good[0], make([]byte, 2<<20), good[2]}} {
		d.send(frames...)
	}
	// Authentic but malformed bodies get an error reply.
	for _, body := range []any{"a string", map[string]any{"name": 5}, acquireReq{Name: "", Holder: "h", TTLms: 100},
		acquireReq{Name: "h", Holder: "", TTLms: 100}, acquireReq{Name: "h", Holder: "h", TTLms: -1},
		acquireReq{Name: "h", Holder: "h", TTLms: int64(time.Hour / time.Millisecond)}} {
		m := d.call(codec, seal(t, codec, TypeAcquire, body))
		require.Contains(t, []string{CodeInvalid, zmqloop.CodeBadRequest}, code(m), "body %#v: %+v", body, m)
	}
	m := d.call(codec, seal(t, codec, TypeRelease, leaseReq{Name: "h", Holder: "h1", Token: 99}))
	require.Equal(t, CodeNotHeld, code(m))
	m = d.call(codec, seal(t, codec, "lock.nonsense", nil))
	require.Equal(t, zmqloop.CodeUnknownType, code(m))
	// Still up and granting; the forged acquire granted nothing.
	m = d.call(codec, good)
	require.Empty(t, code(m), "%+v", m.Error)
	require.Equal(t, 1, p.server(i).Status().Leases)
}

// TestEpochPersisted: a member's token epoch survives a restart through
// its state file, so a whole pair restarted on a clock that went back
// still issues larger tokens.
func TestEpochPersisted(t *testing.T) {
	codec := testCodec(t)
	state := filepath.Join(t.TempDir(), "state.json")
	future := uint64(time.Now().Unix()) + 1_000_000
	require.NoError(t, os.WriteFile(state, []byte(`{"epoch":`+itoa(int(future))+`}`), 0o600))
	ep := freeEndpoint(t)
	cfg := fastServerConfig("solo", ep, "", codec)
	cfg.StateFile = state
	s, err := NewServer(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	z, err := NewZMQ(ZMQConfig{Endpoints: []string{ep}, Codec: codec})
	require.NoError(t, err)
	defer z.Close()
	l, err := z.Acquire(ctxFor(t, 10*time.Second), "e", time.Second)
	require.NoError(t, err)
	require.Equal(t, future+1, l.Token>>24)
	got, err := readEpoch(state)
	require.NoError(t, err)
	require.Equal(t, future+1, got)

	_, err = NewServer(ServerConfig{ID: "bad id!", Bind: ep, Codec: codec})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = NewServer(ServerConfig{ID: "x", Codec: codec})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = NewServer(ServerConfig{ID: "x", Bind: ep, Codec: codec, HeartbeatInterval: time.Second, FailoverAfter: time.Second})
	require.ErrorIs(t, err, ErrInvalid)
	require.NoError(t, os.WriteFile(state, []byte(`{"epoch":`), 0o600))
	_, err = NewServer(cfg)
	require.Error(t, err, "a corrupt state file is an error, not a silent reset")
}

// TestPeerKey: with a peer key, members talk to each other under it and
// refuse member-to-member requests a client (holding only the client key)
// forges, while clients are served and failover works as before.
func TestPeerKey(t *testing.T) {
	client := zmqloop.Key{ID: "client", Secret: []byte("client-secret-0123456789abcdef!!")}
	peerKey := zmqloop.Key{ID: "peer", Secret: []byte("peer-secret-0123456789abcdef!!!!")}
	mk := func(keys ...zmqloop.Key) *zmqloop.Codec {
		ring, err := zmqloop.NewKeyRing(keys...)
		require.NoError(t, err)
		c, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
		require.NoError(t, err)
		return c
	}
	memberCodec, peerCodec, clientCodec := mk(client, peerKey), mk(peerKey, client), mk(client)
	p := &pair{t: t, codec: clientCodec, eps: [2]string{freeEndpoint(t), freeEndpoint(t)}}
	for i := range p.cfg {
		p.cfg[i] = fastServerConfig(string(rune('a'+i)), p.eps[i], p.eps[1-i], memberCodec)
		p.cfg[i].PeerCodec = peerCodec
	}
	p.start(0)
	p.start(1)
	t.Cleanup(func() { p.stop(0); p.stop(1) })
	active := p.waitActive()

	d := dial(t, p.eps[1-active])
	m := d.call(clientCodec, seal(t, clientCodec, TypeRepl, replEntry{Op: "set", Name: "planted", Holder: "x", Token: 1 << 62, TTLms: 60000, RemainingMs: 60000}))
	require.Equal(t, CodeForbidden, code(m), "a client's forged replication: %+v", m)
	m = d.call(clientCodec, seal(t, clientCodec, TypeSync, struct{}{}))
	require.Equal(t, CodeForbidden, code(m))
	require.Equal(t, 0, p.server(1-active).Status().Leases)

	z := zmqBackend(t, p).newLocker(t, nil)
	ctx := ctxFor(t, 20*time.Second)
	held, err := z.TryAcquire(ctx, "pk", 5*time.Second)
	require.NoError(t, err)
	p.stop(active)
	_, err = z.TryAcquire(ctx, "pk", time.Second)
	require.ErrorIs(t, err, ErrHeld, "replicated under the peer key")
	require.NoError(t, z.Release(ctx, held))

	_, err = NewServer(ServerConfig{ID: "x", Bind: p.eps[0], Codec: clientCodec, PeerCodec: peerCodec})
	require.ErrorIs(t, err, ErrInvalid, "the peer key must be in the member's ring")
}

// TestClientClockOffForEnvelopes: the locker's envelopes carry the
// sender's clock, checked against a window (30s by default). A client
// whose clock is a few seconds off is served; one an hour off is refused
// and granted nothing.
func TestClientClockOffForEnvelopes(t *testing.T) {
	codec := testCodec(t)
	p := startPair(t, codec)
	ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte("lock-test-secret-0123456789abcdef")})
	require.NoError(t, err)
	skewed := func(d time.Duration) *ZMQ {
		c, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring, Now: func() time.Time { return time.Now().Add(d) }})
		require.NoError(t, err)
		z, err := NewZMQ(ZMQConfig{Endpoints: p.eps[:], Codec: c, OpTimeout: time.Second, Logger: quietLogger()})
		require.NoError(t, err)
		t.Cleanup(func() { z.Close() })
		return z
	}
	ctx := ctxFor(t, 20*time.Second)
	// A clock behind by d is refused for d after a member starts (the
	// not-before mark, see the package doc), so the behind case is small.
	for _, d := range []time.Duration{10 * time.Second, -time.Second} {
		l, err := skewed(d).TryAcquire(ctx, "skew", time.Second)
		require.NoError(t, err, "clock off by %v", d)
		require.NoError(t, skewed(d).Release(ctx, l))
	}
	for _, d := range []time.Duration{time.Hour, -time.Hour} {
		// The locker refuses the request as stale ("rejected"), and the
		// client's own codec drops the locker's replies as stale too, so
		// the client sees its deadline pass.
		short, cancel := context.WithTimeout(ctx, time.Second)
		_, err := skewed(d).TryAcquire(short, "skew", time.Second)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "clock off by %v", d)
	}
	require.Equal(t, 0, p.server(p.waitActive()).Status().Leases)
}

// unrunMember is a member with a peer configured that is never run: the
// tests below set its state by hand and ask what it would do, for the
// interleavings a paused process produces and no real-time test can
// order reliably.
func unrunMember(t *testing.T) *Server {
	s, err := NewServer(ServerConfig{ID: "a", Bind: freeEndpoint(t), Peer: freeEndpoint(t), Codec: testCodec(t),
		ColdStartWait: -1, Logger: quietLogger()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.peer.Close() })
	return s
}

// TestUnreplicatedGrantsHeldWhileThePeerMayHaveTakenOver: an active member
// without a synced standby, whose peer has not answered for most of
// FailoverAfter since it became active, or whose own process was stalled,
// grants nothing until it hears from the peer again or FailoverAfter and
// a beat have passed; a member that took the role because its peer was
// already silent, or that has a synced standby, is not held.
func TestUnreplicatedGrantsHeldWhileThePeerMayHaveTakenOver(t *testing.T) {
	now := time.Now()
	active := func(s *Server) {
		s.role, s.peerSynced = RoleActive, false
		s.activeSince = now.Add(-time.Minute)
		s.lastTick = now
	}
	t.Run("silent peer", func(t *testing.T) {
		s := unrunMember(t)
		active(s)
		s.peerProof = now.Add(-2 * s.cfg.FailoverAfter)
		err := s.activeLocked()
		var re *zmqloop.RemoteError
		require.ErrorAs(t, err, &re)
		require.Equal(t, CodeUnavailable, re.Code)
		require.Contains(t, re.Message, "may have been superseded")
		// Past the hold, with no word still, the peer counts as dead.
		s.silentUntil = time.Now().Add(-time.Millisecond)
		require.NoError(t, s.activeLocked())
		// A new silence after a new answer is held again.
		s.peerProof = time.Now().Add(-s.cfg.FailoverAfter)
		require.Error(t, s.activeLocked())
		// An answer to a message sent after the hold began ends it; one
		// sent before (a reply read late) does not.
		s.peerProof = s.holdFrom.Add(-time.Millisecond)
		require.Error(t, s.activeLocked())
		s.peerProof = time.Now()
		require.NoError(t, s.activeLocked())
	})
	t.Run("recent answer", func(t *testing.T) {
		s := unrunMember(t)
		active(s)
		s.peerProof = now.Add(-s.cfg.FailoverAfter / 2)
		require.NoError(t, s.activeLocked())
	})
	t.Run("took over from a silent peer", func(t *testing.T) {
		s := unrunMember(t)
		active(s)
		s.peerProof = now.Add(-2 * time.Minute) // before activeSince
		require.NoError(t, s.activeLocked())
	})
	t.Run("synced standby", func(t *testing.T) {
		s := unrunMember(t)
		active(s)
		s.peerSynced = true
		s.peerProof = now.Add(-2 * s.cfg.FailoverAfter)
		require.NoError(t, s.activeLocked())
	})
	t.Run("stalled process", func(t *testing.T) {
		s := unrunMember(t)
		active(s)
		s.peerProof = now.Add(-2 * time.Minute)    // took over from a silent peer ...
		s.lastTick = now.Add(-s.cfg.FailoverAfter) // ... then stopped running
		err := s.activeLocked()
		require.Error(t, err)
		require.Contains(t, err.Error(), "may have been superseded")
		s.peerProof = time.Now() // the peer answers a beat sent after the stall
		require.NoError(t, s.activeLocked())
	})
}

// TestSteppedDownMemberIgnoresStaleStandbyStatus: a member that stepped
// down (its replication was refused by an active peer) and then reads a
// status its peer sent while it was still the standby (a beat queued while
// this process was paused) stays the standby; only an answer to a beat
// sent after the step-down lets it act on the peer's role.
func TestSteppedDownMemberIgnoresStaleStandbyStatus(t *testing.T) {
	s := unrunMember(t)
	now := time.Now()
	s.role, s.synced = RoleStandby, true
	s.steppedDown, s.lastPeer, s.lastTick = now, now, now
	s.peerID, s.peerRole, s.peerProof = "b", RoleStandby, now.Add(-time.Second)
	s.decide(context.Background())
	require.Equal(t, RoleStandby, s.Status().Role, "took the role back on a stale status")
	s.peerProof = time.Now()
	s.decide(context.Background())
	require.Equal(t, RoleActive, s.Status().Role, "two standbys: the synced one takes the role")
}
