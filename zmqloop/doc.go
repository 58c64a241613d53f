// Package zmqloop is the platform's internal messaging: every message
// between paaskit daemons (control requests, stats and log lines,
// heartbeats, lock traffic, remote ptys) rides on it. Following ep.io, the
// internal network is treated as public: every message is signed with a
// shared HMAC key and carries a timestamp and an id, so a receiver rejects
// forged, altered, replayed and stale messages; CURVE can encrypt the
// transport too.
//
// The package is in layers that stand alone:
//
//   - The envelope codec (Codec, KeyRing, ReplayWindow) seals and opens
//     messages and has no sockets. Several keys can be live at once, so keys
//     rotate without downtime: add the new key to every node's ring, then
//     make it the signing key everywhere (KeyRing.SetSigning), then remove
//     the old one.
//   - Serve loops, one per socket kind, each with Run(ctx) error so they
//     plug into the daemon package as main loops: ReplyLoop (ROUTER: runs
//     handlers concurrently, at most MaxInFlight at once, and routes each
//     reply to its caller; a handler's error reaches the caller as a
//     *RemoteError with a code and a message), PullLoop (one-way messages
//     such as stats and log lines) and SubLoop (published messages such as
//     heartbeats, filtered by topic).
//   - Senders: Client calls a service that runs on several endpoints (a
//     redundant pair, say), is safe for concurrent use, applies a per-call
//     timeout from ctx (30s if ctx has none, as ep.io did) and fails over:
//     an endpoint without a live connection is skipped at once, and one that
//     has not answered within TryTimeout gets company (the request goes to
//     the next endpoint too, under a new id; the first reply wins), so the
//     caller sees no error while any endpoint lives. It multiplexes all
//     calls over one DEALER socket per endpoint, matching replies by message
//     id (zguide's Freelance pattern), so a lost reply never wedges it the
//     way a REQ socket's lockstep does. Pusher and Publisher seal and send
//     one-way messages.
//
// # Wire format
//
// This section is enough to write a compatible peer in another language
// with a ZeroMQ binding, an HMAC-SHA256 and a JSON library.
// TestPeerWrittenFromTheDoc holds it to that: testdata/peer/peer.py, a
// Python peer written from this section and Batches with pyzmq, calls a
// ReplyLoop (and checks what is refused, and why), serves a Client, and
// pushes singles and a batch to a PullLoop.
//
// A message is a ZeroMQ multipart message. After the routing frames of the
// socket kind come three envelope frames, or four for a message with data:
//
//	frame  key id    the id of the key that signed, 1-64 bytes of [A-Za-z0-9._-]
//	frame  payload   a JSON object (UTF-8), described below
//	frame  MAC       32 raw bytes, HMAC-SHA256(secret, ...): without data
//	                 over  key id || 0x00 || payload
//	                 with data over
//	                 key id || 0x01 || len(payload) || len(data) || payload || data
//	                 (each len an unsigned 64-bit big-endian byte count)
//	frame  data      optional: 1 or more raw bytes (Message.Data), any content
//
// The data frame carries bytes that would otherwise be base64'd or
// JSON-escaped in the body (a terminal's output, say): they travel as
// they are. Its MAC binds payload and data together, with both lengths,
// so neither frame can be altered, swapped with the other, split
// differently or moved to another message (whose payload has another
// "id"), and stripping the data frame leaves a MAC of the other form,
// which fails. A message without data is exactly the three frames it
// always was, so peers that know nothing of data frames interoperate with
// it; a data frame is never empty (a sender with no data sends three
// frames, and a receiver refuses an empty fourth frame with ErrFrames).
// Which types may carry data is up to the protocol on top (a receiver
// that expects none may ignore it); a batch never does.
//
// The routing frames are, per socket kind:
//
//	request/reply  [empty delimiter] key id, payload, MAC [, data]
//	               A client (DEALER) sends an empty frame first, exactly as a
//	               REQ socket does, so REQ clients work unchanged. The ROUTER
//	               side sees its peer's identity frame(s) before that; it
//	               treats every frame up to and including the first empty
//	               one (or, if there is none, the first frame) as routing and
//	               echoes them unchanged in front of the reply's envelope.
//	PUSH/PULL      key id, payload, MAC [, data] (no routing frames)
//	PUB/SUB        topic, key id, payload, MAC [, data]; the topic frame must equal
//	               the payload's "type" (subscriptions filter on it, the MAC
//	               covers the type, and a mismatch is refused)
//
// The payload is one JSON object with these members, in any order, with
// optional whitespace; members with other names are ignored (room for later
// versions); a known member given twice is an error:
//
//	"type"   string, required: what the message is; receivers route on it
//	"id"     string, required: unique per signing key within the window
//	"ts"     integer, required: the sender's clock in Unix milliseconds
//	         (no fraction, no exponent, not negative)
//	"re"     string: on a reply, the "id" of the request it answers
//	"body"   any JSON value: the content; absent means none
//	"error"  object: on an error reply, {"code": string, "message": string};
//	         "code" is required, "message" may be any JSON string
//
// "type", "id", "re" and "error.code" are tokens: 1 to 128 bytes of
// [A-Za-z0-9._:/-], written without escapes. Example, with key id "k1" and
// the secret "0123456789abcdef0123456789abcdef" (ASCII):
//
//	key id   k1
//	payload  {"type":"echo","id":"a1","ts":1800000000000,"body":{"x":1}}
//	MAC      23e2b0d3dc5a6064999e4b854a0a86d7223f7d8b72338789cf473be0f3c80a7e (hex)
//
// The same message with the 3 data bytes "hi\n" (68 69 0a): the MAC input
// is "k1", the byte 01, 00 00 00 00 00 00 00 3b (the payload's 59 bytes),
// 00 00 00 00 00 00 00 03, the payload, then 68 69 0a:
//
//	key id   k1
//	payload  {"type":"echo","id":"a1","ts":1800000000000,"body":{"x":1}}
//	MAC      bbc8726c46f8d0651e21b391f799a069a147d33b5a889a0a213ca40bfbbe0b6c (hex)
//	data     68 69 0a (hex)
//
// A receiver refuses, in this order, without crashing or stalling its loop:
// a message with the wrong number of frames, or an empty data frame
// (ErrFrames); one whose envelope frames, data included, sum to more than
// MaxSize bytes, 1 MiB by default (ErrTooLarge;
// libzmq's ZMQ_MAXMSGSIZE also drops the connection of a peer that sends a
// larger single frame); an unknown key id (ErrUnknownKey); a MAC that does
// not match, compared in constant time (ErrBadMAC); a payload that is not
// the object above (ErrMalformed); a reply where a request or one-way
// message is expected, that is a payload with "re" or "error"
// (ErrMalformed); a "ts" more than the window (30 s by default) away from
// its own clock, either way (ErrStale); an id it has already accepted from
// that key (ErrReplay). Only then does the message reach a handler.
//
// A reply loop answers an authentic request it refuses with an error reply:
// code "unknown_type" for a type without a handler, "rejected" for a stale
// timestamp or a replayed id (the message says which). It answers nothing
// that fails the MAC or cannot be read, and no reply sent to it as a
// request. The answer to a replay is safe to give:
//
//   - It is no amplifier: it goes only back over the connection the copy
//     came in on (a ROUTER routes by the sender's own connection; a TCP
//     peer cannot spoof another's, and without ZMQ_ROUTER_HANDOVER, which
//     zmqloop does not set, libzmq refuses a peer that claims a routing id
//     already in use), one answer per copy, and it is small whatever the
//     request was: no body, and under 1 KiB in all (the loop's text with
//     the request's type, id and key id, each bounded).
//   - It opens no new replay: it is a reply, and every loop refuses a
//     reply sent to it as a request or a one-way message (without an
//     answer, so two peers never bounce error replies), so sending it, or
//     any reply, back to the server, its pair or a PULL socket that shares
//     the key ring runs no handler. It has a fresh id and "ts" of its own,
//     and a client takes a reply only for a call it has in flight, once:
//     a copy of a reply is dropped as late (ClientStats).
//   - It tells the sender nothing new: whoever replays a message already
//     holds it, and the message's authenticity was checked first.
//
// The price is the loop's work per copy: the MAC check it does anyway,
// plus sealing the small answer (as for an unknown type).
//
// A peer that drops its connection at the worst moment cannot abort a
// loop's process. libzmq 4.3.4 has an errno_assert in a session's
// clean-up (zeromq/libzmq#3442) that can abort the process whose socket
// was sending a multipart message when the connection died; it was seen
// once, in a test's own sending socket after the server dropped it for an
// over-size frame. TestHostilePeersCannotAbortReplyLoop runs a reply loop
// in a process of its own and attacks it with hand-written ZMTP (nothing
// of libzmq on the attacker's side): connections reset while a 200 KiB
// reply streams, mid-request, after an over-size frame header, and peers
// that pipeline requests and never read. A 90-second soak on each I/O
// path (ZMQLOOP_HOSTILE_SECONDS=90) took 27,548 and 15,005 such
// connections without an abort, and the loop answered a good client
// afterwards.
//
// A reply has the request's "type", its own fresh "id" and "ts", and "re"
// set to the request's "id"; it carries either "body" or "error". It is
// signed with the server's signing key, which need not be the key that
// signed the request: while keys rotate, a server may already sign with a
// key the client only verifies with. So a client verifies a reply with any
// key of its ring, by the reply's key-id frame, never only with the key it
// signed the request with. Error codes from the loop itself are
// "unknown_type", "panic" (the handler panicked), "internal" (the handler
// returned a plain error, and the message is its text; or the reply the
// handler returned could not be sealed, for instance because it is over
// MaxSize, and the message says so), "rejected" and "bad_request"
// (HandleJSON could not decode the body); handlers choose their own codes
// with Errorf.
//
// Message ids: any token unique per key within the window will do (32
// random hex digits, say). Ids of the form Codec.NewID makes, 16 lowercase
// hex digits (random per sender), "-", and a base-36 counter (digits and
// lowercase letters) that starts at 1 and only grows, are remembered per
// sender as a counter and a 4096-message bitmap, which is cheaper; such a
// message more than 4096 counts behind the newest one from its sender is
// refused as a replay.
//
// # Batches
//
// On PUSH/PULL (and PUB/SUB, for a receiver), several one-way messages may
// travel in one envelope: a message of the reserved type "zmqloop.batch"
// whose "body" is a JSON array of one or more items. An item is a JSON
// object with the payload's members:
//
//	"type"   string, required, a token; not "zmqloop.batch" (no nesting)
//	"id"     string, required, a token
//	"ts"     integer, optional: the item's own timestamp (Unix ms), by
//	         default the batch's
//	"body"   any JSON value, optional
//
// Other members are ignored; "re" and "error" are refused, and so is a
// known member given twice. A Pusher writes each item exactly as the
// payload it would have sent alone, so in practice every item has a "ts".
// Example payload (key id and MAC frames as for any message):
//
//	{"type":"zmqloop.batch","id":"b7","ts":1800000000100,"body":[
//	  {"type":"stat","id":"a1","ts":1800000000000,"body":{"cpu":3}},
//	  {"type":"log","id":"a2","ts":1800000000050,"body":"started"}]}
//
// The batch is one message for everything above: one MAC over the whole
// payload, one MaxSize bound on the whole envelope, and its "id" and "ts"
// pass the replay window once (a replayed batch is refused whole; items'
// ids are not recorded separately). A receiver then checks the body: one
// that is not a non-empty array of such items (an item without "type" or
// "id", a nested batch, a malformed array, an empty one) refuses the whole
// batch with ErrMalformed, delivers none of it, and logs a warning (the
// sender holds a key, so it is a bug, not noise). Otherwise it delivers the
// items in order, each to the handler of its type with the Request it would
// have had alone (its own type, id and ts, the batch's key id), as if they
// had arrived one by one: an item of a type without a handler, or whose
// "ts" is outside the window, is refused alone and the others are
// delivered. Each item counts in LoopStats.Received. No handler may be
// registered for "zmqloop.batch", and Push refuses the type. A ReplyLoop
// does not unpack batches (it answers "unknown_type").
//
// When: a Pusher coalesces only messages that are already waiting. A
// message pushed while nothing is queued goes out at once, alone, as
// always; only when the socket pushes back (no peer yet, or the high-water
// mark; a Pusher sets ZMQ_SNDHWM to 100 so it pushes back early) do
// messages queue, and the goroutine that drains the queue sends each run of
// up to MaxBatchItems (64) consecutive queued messages that fits in MaxSize
// as one batch, in order (a run of one goes out as it was sealed). So no
// message waits for a batch to fill, and order holds across batches and
// single messages from one Pusher. Close flushes the queue in batches too.
// A Publisher does not coalesce (a subscriber filters on the topic frame,
// which is one type), though SubLoop unpacks a batch it is sent.
//
// Why: a 100-byte body sent alone costs the sender and the receiver an HMAC
// each, libzmq's I/O threads three frames, and the loop a parse and a
// replay check; at saturation that held signed throughput to 0.38-0.41 of
// raw PUSH/PULL of the same bodies. A batch pays the MACs, frames and
// replay check once per up to 64 items (a Pusher signs a queued message
// only if it goes out alone). BenchmarkSignedPushPull (bodies delivered to
// the handler) against BenchmarkRawPushPull, interleaved, five rounds each,
// twice, on a shared 2-vCPU VM: raw 557-631 ns per message (median 1.65 and
// 1.70 million/s), signed 677-989 ns (median 1.40 and 1.41 million/s);
// signed/raw per round 0.82, 0.89, 0.81, 0.89, 0.82 and 0.84, 0.60, 0.82,
// 0.87, 0.80: median 0.82 in both runs.
//
// # Sockets and goroutines
//
// Nothing here blocks in libzmq: a goroutine blocked in a cgo call keeps
// its P until sysmon notices, which on two cores stalled everything else.
// Sockets are used with non-blocking calls, and a goroutine that must wait
// for one waits for its ZMQ_FD (a dup of it; an epoll set of them for a
// client of several endpoints) in two phases:
//
//   - Only when its side is idle (a Client with no other call in flight,
//     a ReplyLoop with no handler running) and GOMAXPROCS is at least 2:
//     up to SyscallWait (default 500µs) in a blocking ppoll(2) on the fd
//     and an eventfd that ends it early. No more goroutines of the process
//     wait so at once than there are Ps.
//   - Then, without limit, in Go's netpoller (syscall.RawConn.Read).
//
// The first phase exists for latency: waiting in the netpoller costs the
// runtime's extra thread wake-ups, each a cross-CPU interrupt on a small
// VM, and a blocking ppoll comes close to waiting inside libzmq (the
// figures are in bench/README.md). Its
// price is that of any blocking system call: the goroutine's P is held
// until sysmon hands it to another thread, which is why it
// is bounded, kept to idle sides (where the replies it waits for would
// wake goroutines that need that P) and off with one P. Set SyscallWait
// negative to wait in the netpoller only.
//
// Each message is handled on the goroutine that needs it, without a hand-off
// to a socket-owning goroutine: every wake-up of a parked goroutine costs
// microseconds, and a first version that handed each request and reply
// across three or four goroutines (a socket owner, an fd watcher, a
// handler) was three times slower than raw REQ/REP. So a socket is shared by the goroutines
// that use it, every call on it under one mutex (libzmq sockets may be used
// from any thread if uses are serialised with a full memory barrier, which
// the mutex gives):
//
//   - Client: each caller seals and sends its own request. One caller at a
//     time, the leader, waits for the sockets, drains them and hands
//     other callers their replies on buffered channels; when its own reply
//     arrives it passes the leadership to another caller in flight. A single
//     call thus sends, waits and receives on one goroutine.
//   - ReplyLoop: MaxInFlight workers. The one holding the socket file's read
//     lock takes a request (or waits for one); then it releases the lock, so
//     the next worker waits, and verifies the request, runs the handler and
//     sends the reply itself. A slow handler holds only its worker.
//   - PullLoop, SubLoop: one goroutine reads up to 64 messages per cgo call
//     and runs the handler inline, in arrival order.
//   - Pusher, Publisher: a caller sends its message itself when nothing is
//     queued; when the socket pushes back (no peer, or the high-water mark)
//     messages queue, in order, for a goroutine that waits for the socket
//     (and, for a Pusher, coalesces them into batches; see Batches).
//
// ZMQ_FD is edge-like: any call on the socket, a send included, may consume
// the notification for input that is already there. So whoever touches a
// socket while another goroutine waits for it either drains it (receives
// until EAGAIN) or checks ZMQ_EVENTS and wakes the waiter (the eventfd in
// the first phase, an expired read deadline on the file in the second).
// TestClientEdgeTrap, TestReplyLoopEdgeTrap and TestSyscallWaitWakeUps
// overlap sends and arrivals with no fallback (an hour's TryTimeout and
// SyscallWait), so a lost wake-up fails them.
//
// Messages are read and written whole, in one cgo call each (many per
// call for a PULL or SUB loop and a queued Pusher), where pebbe/zmq4's API
// makes five cgo calls per frame. That needs the libzmq socket handle
// inside *zmq.Socket, which pebbe/zmq4 does not export: the package reads
// the unexported field through reflect and unsafe, after checking at
// start-up that it is where pebbe/zmq4 v1.4.0 keeps it. If it is not (a
// new version changed the struct), or if the per-frame path is forced (the
// build tag zmqloop_pebbeio, or PAASKIT_ZMQLOOP_IO=pebbe in the
// environment when the process starts), every message goes through
// pebbe/zmq4's per-frame API instead: the same behaviour, slower for small
// messages, and the first component to open a socket logs a warning saying
// so and why, once per process. The test suite runs its socket tests on
// that path too (TestPebbeIOFallback). The accessor belongs upstream: an
// exported method on pebbe/zmq4's Socket returning the raw handle (as
// unsafe.Pointer, for cgo callers) would let this package drop reflect and
// unsafe, and it should switch to one as soon as pebbe/zmq4 has it; until
// then the fallback keeps it working whatever pebbe/zmq4 does to the
// struct.
//
// Close and ctx cancellation release every socket (linger 0; senders linger
// up to their FlushTimeout to deliver what was queued) and goroutine; the
// tests check that 10,000 clients created and closed leave no goroutine or
// file descriptor behind. The package uses the default ZeroMQ context (one
// per process) and never terminates it. It runs on unix systems (a client
// of several endpoints on Linux).
//
// # Counters
//
// Every part counts what it did, for an operator's status page or a stats
// pusher: a loop's Stats (LoopStats: received, handled, rejected, handler
// panics, and of the rejected those over MaxSize; the Rejected hook says
// why each refusal happened), a Client's Stats (ClientStats: calls,
// failures, remote errors, and per endpoint the attempts sent and skipped,
// replies, late and refused replies (and of those the over-size ones), and
// whether it is suspect), and a Pusher's or Publisher's Stats (SenderStats:
// sent, batches, queued, dropped).
//
// Over-size messages are counted where the loop can see them: a message
// whose frames each pass libzmq's per-frame bound (ZMQ_MAXMSGSIZE, set to
// MaxSize) but which is over MaxSize in all is read, refused and counted in
// LoopStats.TooLarge (a Client's, in EndpointStats.TooLarge). A single
// frame over MaxSize never reaches the loop: libzmq closes the sender's
// connection as it decodes the frame's length, before allocating it, and
// reports that to a socket monitor as a plain ZMQ_EVENT_DISCONNECTED, the
// same event as a peer's own close (seen with libzmq 4.3.4), so those drops
// cannot be told apart from ordinary disconnects and are not counted. The
// sender sees them: its connection resets and its messages wait for the
// reconnect.
//
// # Encryption
//
// Set Curve on both sides to encrypt with CurveZMQ. The side holding the
// service's long-term key pair (NewCurveKeyPair) is the CURVE server; the
// other side must know its public key, and with the wrong one the handshake
// fails and nothing is delivered. There is no ZAP handler, so a CURVE
// server accepts any client key; who may send is decided by the HMAC keys.
package zmqloop
