// Package stats carries the platform's metrics, log lines and usage from
// every node to where they are kept, without losing what it accepted: an
// Emitter on each node (runner output, counters, gauges, timings, usage)
// pushes signed messages over zmqloop PUSH/PULL to a Collector (examples/
// statsd), which journals them and writes them to independent sinks:
// chunked log files per app (FileSink), PostgreSQL for metrics and hourly
// usage roll-ups for billing (PostgresSink, through pgx CopyFrom), and
// Redis streams for live tails (RedisSink). It answers the platform's
// queries: tail and follow an app's logs, a metric over a time range, usage
// per app and hour, and a Prometheus text exposition (NewQueryHandler).
//
// It does not import runner: the wiring lives in examples/platform, which
// gives each runner a runner.SinkFunc around Emitter.LogAt (which never
// fails, so the runner never drops a line) and feeds a UsageMeter from
// runner.Status.
//
// # The emitter
//
// Recording calls (Count, Gauge, Timing, Log, LogAt) never wait for the
// network and do not allocate: each encodes one record into a bounded
// memory queue under a mutex (about 200 ns on the 2-vCPU VM this was
// written on; BenchmarkEmitterHotPath*). Every record gets the next seq of
// the emitter's incarnation (its Name plus a random suffix made at each
// start), counting from 1 without gaps. Run ships the queue in batches and
// keeps each record in memory until the collector acknowledges it. When
// the queue is full, or the collector stops acknowledging for AckTimeout,
// everything unacknowledged, and from then on every new record, goes to a
// spool file in SpoolDir, in seq order (a caller then pays a buffered file
// write, never a network wait). When the collector answers again, the
// spool is resent in order and then deleted, and new records go to memory
// again. The spool survives restarts: a new incarnation resends what an
// old one left before anything of its own.
//
// The only loss is a spool write that fails (a full disk): the segment is
// cut back to its last whole record, so what was spooled before stays
// readable, and the records that did not fit are counted (Stats().Dropped),
// logged, and reported to the collector as the counter
// emitter_records_dropped of app ReportApp. Their seqs are given out again,
// so the collector sees fewer records, not a gap. A log line longer than
// MaxLineBytes is cut at a UTF-8 boundary and ends with TruncatedMarker;
// the collector cuts too, for senders with a larger bound.
//
// # What "acknowledged" means
//
// PUSH/PULL has no acknowledgement: libzmq may hold a pushed message in
// either side's buffers when the collector dies, and nothing tells the
// sender. So delivery does not rest on it. The collector accepts an
// emitter's records only in seq order (a resent record is skipped as a
// duplicate, one after a gap is refused and counted), appends them to its
// journal, and answers a separate request on its ack socket (zmqloop
// ReplyLoop, type "stats.ack"): for each emitter asked about, the highest
// seq it has accepted. It fsyncs the journal before it answers. An
// acknowledged record is therefore one that is in the collector's journal
// on disk; the emitter forgets records only once they are acknowledged,
// and resends from the first unacknowledged one (go-back-N) when
// acknowledgements stall. A collector killed at any moment loses nothing
// it acknowledged, and whatever it had not acknowledged is resent. The
// emitter asks every AckInterval (20ms) while anything is unacknowledged.
//
// # The collector and its sinks
//
// The journal is the collector's one copy of what it accepted, in segment
// files of framed records (length, CRC-32C, record); a torn tail left by a
// crash is cut off when it opens. Each sink reads it from its own position
// in its own goroutine, in batches of up to SinkBatch records, so a sink
// that is down holds nobody else back: what it missed stays in the journal
// on disk and is written when it returns (retried every RetryInterval). A
// segment is deleted once every sink is past it. A sink sees each record
// at least once (a crash between a sink's write and its position being
// saved replays the batch) and makes a repeat harmless:
//
//   - FileSink keeps, in each app's index, the journal index it has
//     written through and the size of the open chunk; on reopen it cuts
//     the chunk back to that size and skips records the index covers.
//   - PostgresSink writes a batch in one transaction together with each
//     emitter's highest seq (table stats_progress), and skips records at
//     or below it: every point lands exactly once, through PostgreSQL
//     restarts. It forces synchronous commit for its transactions.
//   - RedisSink adds each record with the id "<journal index>-0"; Redis
//     refuses an id not above a stream's top, so a replay adds nothing.
//
// # Protocol
//
// Messages use zmqloop's envelope (signed, timestamped, replay-checked).
// An emitter pushes messages of type "stats.batch" to the collector's PULL
// endpoint; the body is a JSON object in one of two formats. Emitters send
// format 2, the records in the binary layout the emitter's queue and the
// collector's journal keep them in, raw in the message's data frame
// (zmqloop Message.Data, which the MAC covers with the body):
//
//	body {"emitter": "node-a.3f9c1e2d7a10",  the incarnation: 1-96 bytes of [A-Za-z0-9._-]
//	      "from": 1}                         every seq below this was acknowledged
//	data HAAAAK3x...                         one or more frames, back to back
//
// A frame is u32 length (little endian), u32 CRC-32C of the record, and
// the record: u8 kind (1 counter, 2 gauge, 3 timing, 4 log, 5 usage), u8
// flags (bit 0: truncated; others must be 0), uvarint seq, varint ts,
// str emitter (the batch's), str app, varint instance, str stream, str
// name (empty on a log line), u64 value as IEEE 754 bits, little endian
// (0 on a log line), str text (empty but on a log line), where str is a
// uvarint length and the bytes, and nothing after the text. The data
// frame holds whole frames and nothing else: a frame cut short, one whose
// length runs past the data's end (or over 16 MiB), or a bad CRC fails
// the whole batch, as a bad record does. The collector checks each
// frame's CRC and record and copies the frame into its journal as it
// came: a line costs its emitter one copy, and its collector one check
// and one copy.
//
// Emitters before the data frame sent the same frames in the body
// instead, as standard base64 in a member "frames" (each line then cost
// a base64 encode, a decode, JSON scans of the base64 on both sides and a
// third more bytes through both MACs: about a quarter of the CPU of
// BenchmarkEndToEndLogs):
//
//	{"emitter": "node-a.3f9c1e2d7a10", "from": 1, "frames": "HAAAAK3x..."}
//
// The collector still accepts that form, and format 1 (what emitters
// sent before format 2), the same records as JSON objects:
//
//	{"emitter": "node-a.3f9c1e2d7a10", "from": 1,
//	 "records": [                        one or more, seqs consecutive
//	   {"seq": 1, "kind": "counter", "ts": 1800000000000000000, "app": "web",
//	    "instance": 2, "name": "requests", "value": 1},
//	   {"seq": 2, "kind": "log", "ts": 1800000000000500000, "app": "web",
//	    "instance": 2, "stream": "stdout", "text": "GET / 200", "truncated": true}]}
//
// A batch carrying records two ways (a data frame and "frames" or
// "records" in its body, or both "records" and "frames") is refused. A
// collector that predates format 2 refuses format-2 batches (as
// malformed, counted), and one whose zmqloop predates data frames refuses
// a message with one (as rejected, counted); either way its emitters
// spool and resend once it is upgraded: upgrade collectors before
// emitters.
//
// "kind" is counter, gauge, timing (value in seconds), log or usage (name
// cpu_seconds, peak_memory_bytes or requests; value not negative); "ts" is
// Unix nanoseconds; "app" and "stream" are names of [A-Za-z0-9._-] (app
// 1-64 bytes, not "." or "..", stream up to 32); "name" is [a-z0-9_:] up to
// 128 bytes, not starting with a digit; a log line's text that is not
// UTF-8 travels as "text64" (standard base64) instead of "text". Member
// names are case-sensitive; others are ignored. A batch that does not
// decode or whose records fail these rules is dropped whole and counted
// (Stats().Malformed: its sender holds a key, so it is a bug); messages
// zmqloop refuses (unsigned, forged, stale, replayed, oversized) are
// counted in Stats().Rejected. The collector stays up through both.
//
// A batch holds up to BatchRecords records and stays within the codec's
// MaxSize. An emitter keeps at most QueueBytes/2 of frames pushed but not
// acknowledged: libzmq would buffer far more, and acknowledgements would
// lag by all of it (past AckTimeout under load, sending the emitter to
// its spool for nothing); with the window they lag by at most that much
// of the collector's work, and a full window asks for acknowledgements
// at once instead of every AckInterval.
//
// A collector that does not know an emitter starts its sequence at "from";
// one that does starts at the larger of the two. To learn what was
// accepted, an emitter calls type "stats.ack" on the ack endpoint with
// {"emitters": ["node-a.3f9c1e2d7a10", ...]} and gets
// {"acked": {"node-a.3f9c1e2d7a10": 2}}, omitting emitters it never saw.
//
// # Files, PostgreSQL, Redis, Prometheus
//
// FileSink's layout, line format and index are in its doc. Chunks rotate
// by size and by age (a clock that goes back never rotates early and
// breaks nothing; "since T" selects by each line's own time, so lines
// stamped before a step back are found too), and rotated chunks are
// gzipped in the background. Tail reads only the chunks holding the last
// N lines; Since skips chunks whose newest line is older than T and, inside
// a chunk, seeks past 1 MiB marks older than T; Follow waits for new lines.
//
// PostgresSink creates and migrates its schema (stats_schema records the
// version; migrations run under an advisory lock). Points go to
// stats_points with a BRIN index on time (a B-tree on app, name and time
// halved the COPY rate; time-ordered appends suit BRIN), usage to
// stats_usage_hourly(app, hour, cpu_seconds, peak_memory_bytes, requests),
// summed per hour (peak memory: the highest).
//
// The Prometheus exposition (Collector.WritePrometheus) shows what the
// collector accepted since it started: a counter as
// paaskit_app_<name>_total, a gauge as paaskit_app_<name>, a timing as a
// summary paaskit_app_<name>_seconds (sum and count), usage as
// paaskit_usage_cpu_seconds_total, paaskit_usage_requests_total and
// paaskit_usage_peak_memory_bytes, each labelled app; and the collector's
// own counters (paaskit_stats_*), sink backlogs included.
//
// # Memory, process-wide
//
// The emitter's memory queue is carved from one anonymous mapping advised
// to transparent huge pages, off the Go heap (a first touch of a 4 KiB
// page costs several microseconds on a virtual machine). On Linux with
// cgo and glibc, the first NewEmitter or NewCollector also raises the C
// heap's trim threshold to 64 MiB and fixes its mmap threshold at 4 MiB:
// libzmq mallocs and frees every message, and with glibc's defaults the
// freed heap top went back to the kernel and faulted in again on the next
// message. Both settings are process-wide: a program that tunes glibc's
// malloc itself should do so after creating them. Together they took
// end-to-end log throughput on the benchmark VM from 64-69 to 88-102 MB/s
// (bench/README.md).
package stats
