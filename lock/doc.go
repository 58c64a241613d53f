// Package lock provides named leases with fencing tokens behind one
// interface, Locker, with four backends: the ZeroMQ locker daemon (Server,
// run as a redundant pair, and its client ZMQ), PostgreSQL, Redis and etcd.
// It is the platform's lock for "run this cron job once across the
// cluster" (examples/cron), and it goes beyond ep.io's best-effort locking
// daemon: every grant carries a token, larger than every earlier grant's
// of that name across every holder and every failover, so a store that
// checks tokens (Fence shows how) refuses a write from a holder that was
// paused past its lease.
//
// # Using it
//
// Acquire waits for a lease (TryAcquire asks once), Renew extends it,
// Release gives it up; a Renew or Release of a lease that is not the
// current one (expired, released, or someone else's) fails with ErrNotHeld
// and changes nothing. Hold runs a function only while the lease is held:
// it renews every TTL/3 and cancels the function's context the moment the
// lease can no longer be renewed (a refusal, or no successful renewal
// before Expires less a margin, whatever the cause), so a job stops when
// another node may start it; HoldCommand and Command do the same for a
// child process and kill its whole process group. Lease.Expires is the
// holder's conservative view (TTL after the request was sent); expiry
// itself is always the backend's, on the backend's clock, so a client
// whose clock jumps or is skewed neither keeps a lease longer nor loses
// safety (with time.Now the lease arithmetic is on Go's monotonic clock).
//
// # Backends
//
//   - etcd (Etcd): an etcd lease with the TTL (whole seconds) and a key put
//     under it only if absent; the token is the key's mod revision.
//   - PostgreSQL (Postgres): a table of leases and a sequence; a grant is
//     one upsert statement that takes an expired row, token
//     GREATEST(nextval, row token + 1). Why not advisory locks: see
//     Postgres.
//   - Redis (Redis): SET NX PX and INCR in one script; renew and release
//     are scripts that check "holder:token". Tokens survive a Redis restart
//     only with persistence.
//   - The ZeroMQ locker pair (Server, ZMQ), below.
//
// # The locker pair
//
// Two Servers name each other as Peer. Each member serves clients and its
// peer on one zmqloop ReplyLoop (signed envelopes, see zmqloop) and, every
// HeartbeatInterval (100ms), calls lockd.beat on the peer with its role,
// epoch and whether it holds a replica; the reply carries the peer's.
// One member is active and grants; the other is the standby and answers
// clients "not_active", so the client (ZMQ, one zmqloop.Client per member)
// asks the other one.
//
// Roles: a starting member becomes standby under an active peer, and
// active when it hears no peer for FailoverAfter (1s) or when both are
// starting (or the peer is a standby without a replica) and its ID is the
// smaller. A starting member never takes the role from a standby that
// holds a replica: that standby sees its peer's process start again,
// knows the active member it served is gone, and takes over at once, warm
// (a supervisor that restarts a crashed active member within
// FailoverAfter would otherwise keep the standby from ever finding it
// silent, or have it replaced by a member with no leases). A standby first asks the active
// member for a snapshot (lockd.sync); from then on the active member
// replicates every grant, renewal and release to it (lockd.replicate),
// and for a grant or a renewal waits for the acknowledgement before it
// answers the client, so the standby knows every lease, and every expiry,
// a client was told about. A release is replicated without waiting: a
// standby that missed one thinks the lease held until it expires, which
// costs availability, not safety. A standby that has
// heard nothing from the active member for FailoverAfter takes over with
// those leases, so holders renew and release across the failover. A
// replication that times out (ReplicateTimeout) fails that request
// ("unavailable": the client asks again), drops the standby from sync, and
// pauses grants and renewals for FailoverAfter plus a heartbeat unless the
// standby syncs again first: long enough for a live standby to hear in a
// beat that it is out of sync (it then will not take over until it has
// synced), or for one that hears nothing to take over with a replica that
// lacks nothing. So no lease is handed out that a standby able to take over
// does not know of. A member that takes over without a replica (both were down)
// refuses grants for ColdStartWait (MaxTTL by default), so every lease an
// earlier incarnation granted has expired. Two active members (after a
// partition heals) settle it on the next beat or replication: the larger
// epoch stays, the other steps down and syncs.
//
// A paused process (SIGSTOP, a frozen VM) is the case a failover must
// survive from both sides. While the active member is paused its standby
// takes over; when it wakes it may still believe itself active. With a
// synced standby every grant waits for the standby's acknowledgement,
// which the peer, now active, refuses, and the woken member steps down;
// the refusal counts as word from an active peer, so the stepped-down
// member syncs rather than finding the peer "silent" (its last beat
// predates the pause) and taking the role back with an empty table. A
// status the peer sent before the step-down (a beat queued while this
// process was paused) does not count: the member acts on the peer's role
// only once the peer has answered a beat sent after it stepped down.
// Without a synced standby the active member's grants reach no one else,
// so it grants only while the peer has answered it within three quarters
// of FailoverAfter since it became active (the peer cannot take over
// sooner than FailoverAfter after hearing from it), and not after its own
// beat loop was stalled for half of FailoverAfter: otherwise it refuses
// ("unavailable") until the peer answers, or for FailoverAfter plus a
// beat, after which it takes the peer for dead.
//
// Choosing a TTL: each of those holds refuses renewals for FailoverAfter
// plus a heartbeat, on top of the stall or timeout that caused it, so a
// lease that must ride them out needs a TTL of at least twice that (the
// tests use 2 s leases on an 800 ms FailoverAfter; an 800 ms lease ran out
// in one hold under load). Shorter leases stay safe; they are lost, and
// their holders told so, rather than kept.
//
// Tokens: token epochs. A token is epoch<<24 | sequence, and a member that
// becomes active starts a new epoch: one more than every epoch it has used
// or seen (the active member's epoch travels in every beat, snapshot and
// replication), and no less than the clock's Unix seconds. So every token
// the new active member issues is above every token the old one issued,
// whether or not the last grants reached the standby, with no extra round
// trip per grant. Why epochs rather than the active member replicating a
// high-water mark before each grant: the mark needs the standby's
// acknowledgement before every grant, or a fallback when the standby is
// down that is exactly where the mark would be lost; an epoch needs the
// peer only at a failover. The epoch is kept in StateFile (written
// atomically: temp file, fsync, rename) whenever it changes, so a member
// restarted alone never reuses one; without a state file the clock's
// seconds stand in. The sequence has 24 bits; a member that uses them up
// moves to the next epoch.
//
// Replays across members and restarts: zmqloop's replay window lives in
// one process, so a request the active member applied could be replayed to
// the standby, or to a restarted member, whose windows never saw it. Two
// measures, no per-member keys (a client's zmqloop.Client would have to
// seal per endpoint): (1) the active member replicates each applied
// request's key id, message id and timestamp with its change, and every
// member admits each client request into a second replay window that
// holds those too, so a request applied by the peer is refused ("replayed");
// (2) a member refuses any request sealed before its own process started (a
// not-before mark taken at Run, which needs no disk: everything an earlier
// incarnation accepted was sealed before it). The mark's limit: a client
// whose clock runs ahead of the locker's by d could have a request replayed
// to a member restarted within d of its sealing; operations are keyed by
// holder and token (a replayed release or renew names a grant that is
// over), so the worst such a replay does is re-grant a lease to a holder
// that is gone, which then expires.
//
// Who may speak as a member: with ServerConfig.PeerCodec the members sign
// their traffic to each other with a key of their own and refuse lockd.*
// requests under any other, so a client (which holds only the client key)
// cannot plant or remove a lease on the standby. Without it any holder of
// the shared key is trusted as a member, as in ep.io's model.
//
// # Wire protocol
//
// Requests and replies are zmqloop envelopes; bodies are JSON:
//
//	lock.acquire  {"name": s, "holder": s, "ttl_ms": n} -> {"token": n, "ttl_ms": n, "remaining_ms": n}
//	lock.renew    {"name": s, "holder": s, "token": n}  -> {"token": n, "ttl_ms": n, "remaining_ms": n}
//	lock.release  {"name": s, "holder": s, "token": n, "call": s}  -> {}
//
// An acquire by a holder that already holds the name returns the same
// grant (its reply was lost and it asked again). A release's optional
// "call" is an id the client picks once per Release and sends with every
// attempt: a member that applied that call (or had it replicated) answers
// the same call again with {} for a minute, so a client whose first
// attempt timed out learns that it released, while any other release of
// that lease still gets "not_held". Error codes: "held",
// "not_held", "invalid", "not_active" (ask the other member),
// "unavailable" (cold-start wait), "replayed", and zmqloop's own. Between
// members: lockd.beat, lockd.sync and lockd.replicate.
//
// # Measured
//
// ROUNDS=3 bench/compare.sh lock (1s runs, one client, loopback, a
// shared 2-vCPU VM under other engineers' load), medians of uncontended
// TryAcquire plus Release, two runs: the locker pair with each member in
// its own process 0.75 and 0.66 ms (both in one process 0.96 and 1.00);
// zmqloop's own signed round trip in the same runs 0.31 and 0.12 ms (an
// acquire+release needs three: the client's two and the grant's
// replication, so the pair still spends about twice what the round trips
// cost); Redis 0.063 and 0.148 ms; PostgreSQL 0.140 and 0.158 ms; etcd 1.5
// and 1.2 ms. SIGKILL of the active member's process to the next grant
// through a client of both: 1.26 and 1.04 s (means of 3; heartbeat 100ms,
// failover after 1s).
// The chaos tests at LOCK_CHAOS_DURATION=30s, 20 clients, TTLs of 600ms
// (Redis, PostgreSQL), 2s (etcd) and 800ms (the pair): Redis 578 tenures
// with 115 cuts of every connection, PostgreSQL 129 with 113, etcd 166
// with 48, the locker pair 368 with 57 kills of the active member; no
// overlap, no token out of order, no write refused from a holder.
package lock
