// Package pty runs commands in pseudo-terminals, for the programs that
// insist on one (a Django shell, a REPL, an interactive migration): locally,
// behind a small wrapper program, and remotely over zmqloop. ep.io, whose
// platform this follows, tried a plain subprocess, then an in-process pty
// ("works, most of the time"), then a wrapper exposing the pty over
// stdin/stdout ("significantly more reliable"), carried over ZeroMQ. All
// three layers are here, on github.com/creack/pty, with one Terminal
// interface over them.
//
// # Local sessions
//
// Start runs an *exec.Cmd (runner.Runner.Command builds an isolated one)
// in a new terminal of a given size, as the leader of a new session with
// the terminal as its controlling terminal: Ctrl-C written to it is SIGINT
// to the foreground job, and a hang-up is SIGHUP. The Session reads
// output, writes input, resizes (the job gets SIGWINCH), signals the
// foreground process group and waits for the exit status. Every byte the
// child wrote is delivered, including what it wrote just before exiting:
// a Linux master returns EIO once the last holder of the terminal is gone
// and the kernel has flushed what was written, so EIO is the end of the
// output (io.EOF), never an error that loses the tail. A child that leaves
// a background process holding the terminal gets DrainTimeout before Read
// gives up waiting for more. Close hangs up (SIGHUP, then SIGKILL after
// KillAfter). Config.KeepAlive (runner.Runner.Attach fits) keeps the app
// alive while the command runs. The package does not import runner; the
// wiring lives in examples/runnerd.
//
// MakeRaw puts the caller's own terminal in raw mode, clearing the flags
// ep.io cleared (ISTRIP INLCR IGNCR ICRNL IXON IXANY IXOFF; OPOST; ECHO
// ISIG ICANON ECHOE ECHOK ECHONL IEXTEN), and restores it on Restore (defer
// it: that covers return and panic) and on SIGTERM, SIGHUP, SIGINT and
// SIGQUIT, which are then re-raised. Attach connects the caller's terminal
// to any Terminal in raw mode, forwarding window changes.
//
// # Wrapper protocol
//
// The wrapper program (examples/ptywrap, built on ServeWrapper) runs a
// command in a terminal and speaks frames on its stdin and stdout;
// StartWrapper is its Go client. A frame is
//
//	type    1 byte
//	length  uint32, big-endian: the payload's length, at most MaxFrame (1 MiB)
//	payload length bytes
//
// Client to wrapper:
//
//	'i'  input: bytes typed into the terminal
//	'w'  window size: rows, cols as two big-endian uint16 (4 bytes), each 1..4096
//	's'  signal: a name (INT, TERM, HUP, QUIT, KILL, USR1, USR2, CONT, STOP,
//	     TSTP, WINCH, ALRM, PIPE, ABRT; "SIG" prefix and case ignored), sent
//	     to the terminal's foreground process group
//	'h'  hang up: SIGHUP, then SIGKILL after KillAfter (empty payload)
//
// Wrapper to client:
//
//	'o'  output: bytes the command wrote, in order
//	'e'  error: UTF-8 text; a frame was refused and nothing changed
//	'x'  exit: a big-endian int32 exit code (128+N if killed by signal N),
//	     then, if a signal killed it, the signal's name (e.g. "HUP")
//
// The exit frame follows the last output frame and is the last frame; the
// wrapper then exits with the same code. A refused frame (bad size, unknown
// signal or type) gets an error frame. EOF on the wrapper's stdin, or a
// malformed stream (a length over MaxFrame, a truncated frame), means the
// client is gone: the session is hung up, and the exit frame still follows.
// Flow control is the pipes': a client that stops reading stops the
// wrapper, whose terminal fills, which blocks the command.
//
// # Session protocol
//
// Server serves remote sessions; Client (and examples/paasctl) use them.
// All messages are zmqloop envelopes (see zmqloop's package doc, "Wire
// format": key id, JSON payload, HMAC-SHA256, timestamp window, replay
// window). Control requests are request/reply on the server's ROUTER
// socket; each attachment's output is a one-way stream on a PUSH socket the
// server binds for it, to which the client connects a PULL socket. A
// caller is the key id its requests are signed with: a session belongs to
// the key that started it, and every request naming a session another key
// started is answered exactly as one naming no session (not_found). The
// server signs replies and streams with its own signing key, which clients
// hold to verify them (with HMAC keys, a holder of that key could also
// sign as the server: give callers their own keys and keep the server's
// for the server where that matters, and use CURVE for secrecy).
//
// Terminal bytes (input and output) travel raw in the envelope's data
// frame (zmqloop's Message.Data, the optional fourth frame covered by the
// MAC), never escaped or base64'd in the JSON body. Binary data in JSON
// bodies, where a client still sends it (pty.input's "data"), is standard
// base64 with padding (RFC 4648 section 4). Offsets count bytes of output
// from the start of the session.
// Error replies carry these codes: not_found, forbidden (the server's
// Authorize hook refused), bad_request (malformed body, out-of-range
// field, unknown signal), exited (input, resize or signal after the
// command exited or while it is being hung up), detached (the attach id is
// not the current attachment), bad_offset, too_many (MaxSessions running),
// start_failed; and zmqloop's own (unknown_type, rejected, ...).
//
// Requests (type: body → reply body):
//
//	pty.start   {"app": s, "argv": [s, ...], "rows": n, "cols": n, "detached": b}
//	            → session description (below). rows and cols: both 0 (or
//	            absent) for 24x80, else 1..4096 each. A session not
//	            detached must be attached within the grace period.
//	pty.attach  {"session": id, "from": n, "rows": n, "cols": n}
//	            → {"attach": id, "stream": endpoint, "from": n, "window": n,
//	            "heartbeat_ms": n}. from is how many bytes of output the
//	            client already has (-1: the oldest still held); the stream
//	            starts at the reply's from, which is later than asked only
//	            if the server no longer holds the bytes between (a detached
//	            session drops output past its buffer while nobody is
//	            attached). A from beyond the output is bad_offset. rows and
//	            cols, if non-zero, resize. Attaching detaches any previous
//	            attachment (its requests then get detached). stream is a
//	            ZeroMQ endpoint; if its host is a wildcard (0.0.0.0, *),
//	            connect to the control endpoint's host at its port.
//	pty.input   {"session": id, "attach": id} with the input bytes in the
//	            data frame → {}. A body member "data" (base64) is accepted
//	            instead of the frame (clients before data frames sent it);
//	            both at once is bad_request.
//	pty.ack     {"session": id, "attach": id, "offset": n}
//	            → {"output": n, "exited": b, "code": n, "signal": s}.
//	            offset: bytes consumed; the server forgets output before it.
//	            An offset beyond what was sent is bad_offset. output is the
//	            total the command has written.
//	pty.resize  {"session": id, "attach": id, "rows": n, "cols": n} → {}
//	pty.signal  {"session": id, "signal": name} → {} (names as in the wrapper)
//	pty.detach  {"session": id, "attach": id} → {}; the grace period starts
//	pty.close   {"session": id} → the description once the command has
//	            exited: SIGHUP, then SIGKILL after KillAfter
//	pty.status  {"session": id} → the description
//	pty.list    {} → [description, ...] of the caller's sessions
//
// A session description is {"session": id, "app": s, "argv": [...],
// "detached": b, "attached": b, "pid": n, "started": RFC 3339 time,
// "exited": b, "code": n, "signal": s (if killed), "output": n (bytes
// written so far), "buffered": n (offset of the oldest byte held)}.
//
// Stream messages (PUSH → PULL; the client ignores any whose "s" or "a" is
// not its session and current attachment):
//
//	pty.output  {"s": session, "a": attach, "o": offset} with up to 64 KiB
//	            of output, starting at offset o, in the data frame
//	pty.exit    {"s": session, "a": attach, "o": n, "code": n, "signal": s}
//	            after the last output: o is the total output (no data frame)
//
// The server writes pty.output's members in exactly the order above with
// no whitespace, so a client may parse it without a JSON scanner; it must
// still accept any JSON object. Servers before data frames sent the bytes
// in the body instead, in exactly one of "t" (a JSON string of code points
// U+0000 to U+00FF, each one byte of output) and "d" (base64); this
// package's client still reads those, and refuses a message with output in
// both the body and the data frame. A client keeps the next offset it expects:
// it drops data before it (a duplicate after a reattach) and treats a
// message starting after it as a broken stream, reattaching with from set
// to what it has.
//
// Flow control and liveness: the server holds at most window bytes of a
// session's output (sent and not acknowledged, or not yet sent); when that
// is full it stops reading the terminal, so the command blocks in write
// and nothing is dropped. A client acks what it has consumed at least
// every window/4 bytes, and at least every heartbeat_ms even with nothing
// new; an attachment silent for four heartbeats (AttachTimeout) counts as
// vanished. A vanished or detached client leaves the session running, its
// output buffered, for Grace: a reattach within it, from the client's
// offset, loses nothing. After Grace the command gets SIGHUP (and SIGKILL
// after KillAfter if it ignores that). A client that has the exit and all
// output detaches. If the pty.exit message is lost, the ack reply's
// "exited" with "output" equal to what the client has ends the session
// for it; if output is waiting ("output" beyond what it has) and nothing
// arrives for two heartbeats, it reattaches.
//
// A detached session (Heroku's run:detached) starts with no client; its
// output also goes to the server's Log sink, and while nobody is attached
// only the newest window bytes stay in memory, so it is never paused. Its
// status and exit code are queryable (pty.status) for Retain after it
// ends, and it can be attached at any time; it is never hung up for want
// of a client.
//
// # Throughput
//
// The kernel's pty layer is the ceiling, and BenchmarkOutput measures it
// beside the package in the same run: a C program (built by the
// benchmark) opens a pty pair, forks a child onto the slave and reads the
// master with blocking 256 KiB reads. However large the read, a master
// hands over what its line discipline holds, 4 KiB refilled by a kernel
// worker (about 4-7 KiB a read), so reading a terminal is a ping-pong
// between the writer, that worker and the reader; and a child that leaves
// OPOST|ONLCR on (a terminal's default; a session never changes the
// child's modes) pays for the kernel's output processing in every write,
// about twice the CPU of a raw child. On the 2-vCPU VM this was built on,
// with other work running, the peer read a child writing 100 MiB of text
// lines at 106-169 MB/s raw and 44-57 MB/s cooked; a local Session read
// it at 0.93x the peer (raw and cooked, medians of three) with 1.3x its CPU
// per byte (the netpoller's wake-ups). Remote sessions add an HMAC on
// each side, loopback TCP and a goroutine hand-off per stage; the bytes
// go raw in zmqloop's data frame, so nothing is escaped, base64'd or
// scanned. With that, on the same VM under other helpers' load, a remote
// session read a raw child at 0.97x the peer (medians of five) with 1.8x
// its CPU per byte, and a cooked one at 0.64x; when the stream was JSON
// ("t" text or "d" base64) it was 0.38x with 4.4x the CPU. A keystroke's
// echo takes about 0.3-0.4 ms (median) on loopback. See
// bench/sections/60-pty.sh and bench/README.md.
package pty
