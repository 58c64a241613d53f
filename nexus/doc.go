// Package nexus records who runs what where. A service instance (a runner
// node, a stats collector) announces its kind, id, endpoints and metadata
// by heartbeat to every resolver; two or more resolvers keep the table
// from those heartbeats alone, with a grace period for instances that go
// quiet; clients ask any resolver, and watchers get a stream of changes.
// After ep.io: "even our 'find the servers running X' service is doubly
// redundant", and what vanishes gets "a short grace period in which to
// reappear". The balancer follows the runner nodes through a watch
// (Follow), wired in examples/balancerd as a plain function value: the
// balancer imports no nexus.
//
// The parts:
//
//   - Resolver (examples/nexusd): one ROUTER endpoint over zmqloop that
//     takes heartbeats and goodbyes and answers lookups and watches.
//     Resolvers never talk to each other; each one's table is rebuilt
//     from heartbeats, so a restarted resolver is complete again one
//     heartbeat interval after it is reachable (it says it is "cold"
//     until then, and clients prefer a warm one).
//   - ResolverAnnouncer: heartbeats to every resolver, each on its own
//     connection, a goodbye to each on a clean stop.
//   - Client: the Directory of a resolver set. Lookups fail over (zmqloop's
//     Client: a resolver without a connection is skipped at once, a slow
//     one gets company after TryTimeout, 100ms); a watch long-polls every
//     resolver and merges their views.
//   - Etcd: the same Directory on etcd (go.etcd.io/etcd/client/v3; tested
//     against Debian's etcd-server 3.4): an announcement is the key
//     PREFIX/KIND/ID under a lease kept alive by its announcer and revoked
//     on goodbye; a watch follows etcd's watch stream from the revision of
//     its first read. Open and NewAnnouncerFor pick the backend from a
//     Config (ParseSpec reads the daemons' --nexus flag: tcp://... for
//     resolvers, etcd://... for etcd); the resolver pair is the default.
//
// # Lifecycle of an instance at a resolver
//
// A heartbeat makes the instance alive (a Put to watchers if it is new or
// its endpoints, metadata, incarnation or state changed; a heartbeat that
// changes nothing is no event). With no heartbeat for SuspectAfter
// (default three intervals) it is suspect: still listed, so a stall does
// not move work, but marked. With none for a further Grace (default five
// intervals) it is dropped (a Delete). A goodbye drops it at once. The
// resolver's clock is injectable (ResolverConfig.Clock), and the tests of
// suspicion and grace move a fake one.
//
// # Protocol
//
// zmqloop request/reply (signed envelopes, see zmqloop's doc) on the
// resolver's endpoint; bodies are JSON objects:
//
//	nexus.beat    {"kind","id","endpoints":{name:addr},"meta":{k:v},"inc","seq"}
//	              -> {"warm":bool}
//	nexus.bye     {"kind","id","inc","seq"} -> {}
//	nexus.lookup  {"kind"[,"if_epoch","if_seq"]}
//	              -> {"resolver","warm","epoch","seq","entries":[Entry...]}
//	                 or, if the caller's version is current, "unchanged":true
//	                 in place of the entries
//	nexus.get     {"kind","id"} -> {"entry":Entry,"warm"} or error nexus.not_found
//	nexus.watch   {"kind","epoch","since","wait_ms"}
//	              -> {"epoch","seq","warm","reset":bool,"entries":[...],
//	                  "changes":[{"n":seq,"t":"put"|"delete","e":Entry}]}
//	nexus.status  {} -> ResolverStatus
//
// Entry is Instance plus "state" ("alive" or "suspect"), "inc" and "seq".
// Error codes: nexus.stale (a mark not above the one held, or a message
// signed before the resolver started), nexus.invalid (a malformed body,
// kind or instance), nexus.not_found, nexus.too_large (a kind whose
// entries exceed the codec's MaxSize; a kind of some 5,000 instances with
// the default 1 MiB).
//
// A watch is a long poll: the resolver numbers the changes of each kind
// ("seq", under a random "epoch" per resolver life) and keeps the last
// 1,024; a watcher sends the epoch and number it has seen and gets the
// changes after it, waiting up to wait_ms (5 s by default) for one, or the
// whole set ("reset") if it is of another epoch or too far behind. The
// client merges the resolvers' views: an instance is listed while any
// resolver that answers lists it (alive preferred to suspect), and is
// taken out only when no answering resolver lists it and at least one of
// them is warm. A resolver that stops answering no longer counts; if none
// answers, the watch keeps what it had rather than empty the balancer.
//
// # Replays between members and across restarts
//
// zmqloop's replay window lives in one process, so it cannot stop a
// heartbeat captured on its way to one resolver from being replayed to the
// other, or to a restarted one. Two things here do:
//
//   - Marks. Every heartbeat and goodbye carries the announcer's mark:
//     its incarnation (Unix ns at its start, strictly increasing within a
//     process) and a count that grows with every message. The announcer
//     sends the same mark to every resolver (under different message ids).
//     A resolver accepts a heartbeat or goodbye only if its mark is above
//     the one it holds for the instance, and keeps the mark of a departed
//     instance (a tombstone) for the codec's window plus SuspectAfter plus
//     Grace. So a message replayed to the other member finds its mark
//     already held there, and a heartbeat replayed after a goodbye finds
//     the goodbye's higher mark: both are refused (nexus.stale).
//   - A start floor. A resolver refuses every heartbeat and goodbye
//     signed (by the envelope's timestamp) before it started, so a
//     restarted resolver, whose window and marks are empty, accepts
//     nothing captured from its earlier life. The floor is the wall
//     clock, like the codec's window; an announcer whose clock runs
//     behind the resolver's by d is refused for the first d after a
//     restart. Lookups, gets and watches change nothing, so a replayed
//     one only repeats an answer.
//
// TestReplaysBetweenMembersAndAfterRestartRefused sends hand-sealed
// messages to check each case.
//
// # Figures
//
// bench/sections/80-nexus.sh; on the shared 2-vCPU VM (loopback, one
// resolver), with 10,000 instances in 100 kinds, four runs at load
// averages from 0.8 to 12 (other engineers' builds and tests): a lookup of
// a kind of 100 that the client holds (unchanged) p50 0.11-0.12 ms, p99
// 0.60 ms at the quiet end and 2.0-2.9 ms under load; a Get of one
// instance p50 0.10-0.12 ms, p99 0.38 ms quiet, 0.9-3.3 ms under load (a
// kind's full answer, decoded, costs more: p50 0.7 ms for 100 entries);
// one resolver in its own process with 10,000 instances beating once a
// second used 20-33% of a core, the longest round of 10,000 heartbeats
// took 332-932 ms, and no instance was ever suspected; at saturation it
// took 8,400-28,700 heartbeats a second with the senders on the same two
// cores. The p99 budget of 1 ms is met on a quiet machine only.
// Killing one of two resolvers (SIGKILL) during 10,000 lookups failed
// none (TestKillOneResolverDuringLookups).
package nexus
