package zmqloop

/*
#cgo !windows pkg-config: libzmq
#include <zmq.h>
#include <errno.h>
#include <string.h>

// zl_recv reads one whole message from socket s in a single cgo call.
// Frames are copied back to back into buf (capacity cap); lens gets the size
// of each of the first maxframes frames. It returns the number of frames
// (more than maxframes if the message had more: the rest are read and
// dropped), or -errno. *total gets the sum of all frame sizes; when it
// exceeds cap, frames that did not fit were not copied.
static int zl_recv(void *s, int flags, char *buf, int cap, int *lens, int maxframes, long *total) {
	int n = 0;
	long off = 0;
	zmq_msg_t msg;
	for (;;) {
		int rc;
		zmq_msg_init(&msg);
		do {
			rc = zmq_msg_recv(&msg, s, flags);
		} while (rc < 0 && errno == EINTR);
		if (rc < 0) {
			int e = errno;
			zmq_msg_close(&msg);
			return -e;
		}
		flags = 0;
		size_t sz = zmq_msg_size(&msg);
		if (n < maxframes) {
			lens[n] = (int)sz;
			if (off + (long)sz <= cap) {
				memcpy(buf + off, zmq_msg_data(&msg), sz);
			}
		}
		off += (long)sz;
		n++;
		int more = zmq_msg_more(&msg);
		zmq_msg_close(&msg);
		if (!more) {
			break;
		}
	}
	*total = off;
	return n;
}

// zl_recv_many reads up to maxmsgs whole messages without waiting (the
// first read uses flags), stopping early when fewer than reserve bytes of
// buf are left. Frames are copied back to back into buf; lens gets each
// frame's size (at most maxframes in all) and counts each message's frame
// count; a message with more than permsg frames, or that does not fit, is
// read whole and reported with count -1 (too many frames) or -2 (too
// large), its frames not kept. It returns
// the number of messages read (counts entries), or -errno if the first read
// failed.
static int zl_recv_many(void *s, int flags, char *buf, int cap, int reserve, int *lens, int maxframes,
		int *counts, int maxmsgs, int permsg) {
	int nmsg = 0, nlen = 0;
	long off = 0;
	zmq_msg_t msg;
	while (nmsg < maxmsgs && nlen + permsg <= maxframes && (nmsg == 0 || cap - off >= reserve)) {
		int n = 0, bad = 0;
		long start = off;
		for (;;) {
			int rc;
			zmq_msg_init(&msg);
			do {
				rc = zmq_msg_recv(&msg, s, flags);
			} while (rc < 0 && errno == EINTR);
			if (rc < 0) {
				int e = errno;
				zmq_msg_close(&msg);
				if (nmsg == 0 && n == 0) {
					return -e;
				}
				return nmsg;
			}
			flags = ZMQ_DONTWAIT;
			size_t sz = zmq_msg_size(&msg);
			if (bad) {
				// the rest of a message already refused
			} else if (n >= permsg) {
				bad = 1;
			} else if (off + (long)sz > cap) {
				bad = 2;
			} else {
				memcpy(buf + off, zmq_msg_data(&msg), sz);
				lens[nlen + n] = (int)sz;
				off += (long)sz;
			}
			n++;
			int more = zmq_msg_more(&msg);
			zmq_msg_close(&msg);
			if (!more) {
				break;
			}
		}
		if (bad) {
			off = start;
			counts[nmsg++] = -bad;
		} else {
			nlen += n;
			counts[nmsg++] = n;
		}
	}
	return nmsg;
}

// zl_send_many sends nmsg messages; counts gives each one's frame count,
// lens each frame's size, frames back to back in buf. Each message's first
// frame uses flags. It returns how many messages were sent; *err gets the
// errno that stopped it (0 if all were sent).
static int zl_send_many(void *s, int flags, char *buf, int *lens, int *counts, int nmsg, int *err) {
	long off = 0;
	int f = 0;
	*err = 0;
	for (int m = 0; m < nmsg; m++) {
		for (int i = 0; i < counts[m]; i++, f++) {
			int fl = (i == 0 ? flags : 0) | (i < counts[m] - 1 ? ZMQ_SNDMORE : 0);
			int rc;
			do {
				rc = zmq_send(s, buf + off, (size_t)lens[f], fl);
			} while (rc < 0 && errno == EINTR);
			if (rc < 0) {
				*err = errno;
				return m;
			}
			off += lens[f];
		}
	}
	return nmsg;
}

// zl_send sends n frames, stored back to back in buf with sizes lens, as
// one message. Only the first frame can fail with EAGAIN (a multipart
// message is queued atomically). It returns 0 or -errno.
static int zl_send(void *s, int flags, char *buf, int *lens, int n) {
	long off = 0;
	for (int i = 0; i < n; i++) {
		int f = flags | (i < n - 1 ? ZMQ_SNDMORE : 0);
		int rc;
		do {
			rc = zmq_send(s, buf + off, (size_t)lens[i], f);
		} while (rc < 0 && errno == EINTR);
		if (rc < 0) {
			return -errno;
		}
		off += lens[i];
	}
	return 0;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sync"
	"syscall"
	"unsafe"

	zmq "github.com/pebbe/zmq4"
)

// Per-message cgo calls dominate a small message's cost: pebbe/zmq4 makes
// five per received frame (init, recv, data, copy, close) plus one for
// ZMQ_RCVMORE, so a 3-frame envelope took 18. msgIO reads or writes a whole
// message in one call, on the libzmq socket handle inside *zmq.Socket.
// That handle is an unexported field (pebbe/zmq4 exports no accessor for
// it; see the package doc, "Sockets and goroutines"), read through
// reflect and unsafe. fastIO is false, and pebbe/zmq4's per-frame API is
// used instead, unless the field is where this code expects it, or when
// the per-frame path is forced: by the build tag zmqloop_pebbeio, or by
// PAASKIT_ZMQLOOP_IO=pebbe in the environment at start-up.
var fastIO, fastIOWhyNot = chooseIO(forcePebbeIOTag, os.Getenv(IOEnv))

// IOEnv is the environment variable that, set to "pebbe" when the process
// starts, makes the package use pebbe/zmq4's per-frame API instead of its
// own one-call-per-message reads and writes (see the package doc).
const IOEnv = "PAASKIT_ZMQLOOP_IO"

// chooseIO says whether the one-call-per-message path can be used, and if
// not, why.
func chooseIO(forcedByTag bool, env string) (bool, string) {
	switch {
	case forcedByTag:
		return false, "built with the zmqloop_pebbeio tag"
	case env == "pebbe":
		return false, IOEnv + "=pebbe"
	}
	t := reflect.TypeOf(zmq.Socket{})
	if t.NumField() > 0 && t.Field(0).Name == "soc" && t.Field(0).Offset == 0 &&
		t.Field(0).Type == reflect.TypeOf(unsafe.Pointer(nil)) {
		return true, ""
	}
	return false, "pebbe/zmq4's Socket does not start with the libzmq handle this package reads (soc unsafe.Pointer): a new version changed it"
}

// ioPathOnce logs, once per process, that the per-frame fallback is in use.
var ioPathOnce sync.Once

// noteIOPath logs once, to the first component that opens a socket, that
// messages go through pebbe/zmq4's per-frame API and why: several cgo
// calls per frame instead of one per message, so small messages cost more.
func noteIOPath(log *slog.Logger) {
	if fastIO {
		return
	}
	ioPathOnce.Do(func() {
		log.Warn("zmqloop: using pebbe/zmq4's per-frame API for every message, which is slower (several cgo calls per frame)",
			"why", fastIOWhyNot)
	})
}

func handle(s *zmq.Socket) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(s)) }

// routingSlack is room for routing frames beyond the envelope's MaxSize.
const routingSlack = 4096

// msgIO is one goroutine's reusable buffers for whole-message reads and
// writes. Frames returned by recv alias its buffer until the next recv.
type msgIO struct {
	rbuf   []byte
	lens   [maxFrames]C.int
	frames [][]byte
	wbuf   []byte
	wlens  [maxFrames + 4]C.int
}

func newMsgIO(maxSize int) *msgIO {
	return &msgIO{rbuf: make([]byte, maxSize+routingSlack), frames: make([][]byte, 0, maxFrames), wbuf: make([]byte, 0, 1024)}
}

// recv reads one whole message. It returns ErrFrames (message fully read)
// for more than maxFrames frames and ErrTooLarge for more bytes than the
// buffer holds; an EAGAIN error when flags has DONTWAIT and nothing waits.
func (m *msgIO) recv(s *zmq.Socket, flags zmq.Flag) ([][]byte, error) {
	if !fastIO {
		f, err := recvFrames(s, flags, m.frames)
		m.frames = f[:0]
		return f, err
	}
	var total C.long
	n := C.zl_recv(handle(s), C.int(flags), (*C.char)(unsafe.Pointer(&m.rbuf[0])), C.int(len(m.rbuf)),
		&m.lens[0], C.int(maxFrames), &total)
	if n < 0 {
		return nil, zmq.Errno(syscall.Errno(-n))
	}
	if int(n) > maxFrames {
		return nil, fmt.Errorf("zmqloop: message with %d frames, more than %d: %w", n, maxFrames, ErrFrames)
	}
	if int(total) > len(m.rbuf) {
		return nil, fmt.Errorf("zmqloop: %d-byte message: %w", total, ErrTooLarge)
	}
	f := m.frames[:0]
	off := 0
	for i := 0; i < int(n); i++ {
		l := int(m.lens[i])
		f = append(f, m.rbuf[off:off+l:off+l])
		off += l
	}
	return f, nil
}

// send writes frames as one message.
func (m *msgIO) send(s *zmq.Socket, flags zmq.Flag, frames ...[]byte) error {
	if !fastIO || len(frames) > len(m.wlens) {
		return sendFrames(s, flags, frames...)
	}
	b := m.wbuf[:0]
	for i, f := range frames {
		b = append(b, f...)
		m.wlens[i] = C.int(len(f))
	}
	m.wbuf = b
	if len(b) == 0 {
		b = append(b, 0)
	}
	if rc := C.zl_send(handle(s), C.int(flags), (*C.char)(unsafe.Pointer(&b[0])), &m.wlens[0], C.int(len(frames))); rc < 0 {
		return zmq.Errno(syscall.Errno(-rc))
	}
	return nil
}

// batchMsgs bounds how many messages one recvMany or sendMany call moves.
const batchMsgs = 64

// batchReader reads many messages per cgo call.
type batchReader struct {
	buf     []byte
	reserve int
	lens    [batchMsgs * 5]C.int
	counts  [batchMsgs]C.int
	fbuf    [batchMsgs * 5][]byte // the frames of one read's messages
	msgs    []rmsg
	one     *msgIO // fallback without fastIO
}

// rmsg is one received message: its frames (aliasing the reader's buffer
// until the next read) or the error that made it unreadable.
type rmsg struct {
	frames [][]byte
	err    error
}

func newBatchReader(maxSize int) *batchReader {
	reserve := maxSize + routingSlack
	return &batchReader{buf: make([]byte, reserve+64<<10), reserve: reserve, msgs: make([]rmsg, 0, batchMsgs), one: newMsgIO(maxSize)}
}

// read reads up to limit (≤ batchMsgs) waiting messages with DONTWAIT; it
// returns an EAGAIN error when there are none. permsg is the most frames a
// valid message has; longer messages come back with ErrFrames.
func (r *batchReader) read(s *zmq.Socket, limit, permsg int) ([]rmsg, error) {
	r.msgs = r.msgs[:0]
	if !fastIO {
		f, err := r.one.recv(s, zmq.DONTWAIT)
		if isAgain(err) || (err != nil && !errors.Is(err, ErrFrames) && !errors.Is(err, ErrTooLarge)) {
			return nil, err
		}
		if err == nil && len(f) > permsg {
			err = fmt.Errorf("zmqloop: message with %d frames, more than %d: %w", len(f), permsg, ErrFrames)
		}
		return append(r.msgs, rmsg{frames: f, err: err}), nil
	}
	limit = min(limit, batchMsgs)
	n := C.zl_recv_many(handle(s), C.int(zmq.DONTWAIT), (*C.char)(unsafe.Pointer(&r.buf[0])), C.int(len(r.buf)),
		C.int(r.reserve), &r.lens[0], C.int(len(r.lens)), &r.counts[0], C.int(limit), C.int(permsg))
	if n < 0 {
		return nil, zmq.Errno(syscall.Errno(-n))
	}
	off, li := 0, 0
	for m := 0; m < int(n); m++ {
		c := int(r.counts[m])
		switch c {
		case -1:
			r.msgs = append(r.msgs, rmsg{err: fmt.Errorf("zmqloop: message with more than %d frames: %w", permsg, ErrFrames)})
			continue
		case -2:
			r.msgs = append(r.msgs, rmsg{err: fmt.Errorf("zmqloop: message over %d bytes with its routing frames: %w", r.reserve, ErrTooLarge)})
			continue
		}
		frames := r.fbuf[li : li+c : li+c]
		for i := 0; i < c; i++ {
			l := int(r.lens[li])
			frames[i] = r.buf[off : off+l : off+l]
			off += l
			li++
		}
		r.msgs = append(r.msgs, rmsg{frames: frames})
	}
	return r.msgs, nil
}

// batchWriter sends many messages per cgo call.
type batchWriter struct {
	buf    []byte
	lens   []C.int
	counts []C.int
	one    *msgIO
}

func newBatchWriter() *batchWriter { return &batchWriter{one: newMsgIO(0)} }

// add queues one message.
func (w *batchWriter) add(frames ...[]byte) {
	for _, f := range frames {
		w.buf = append(w.buf, f...)
		w.lens = append(w.lens, C.int(len(f)))
	}
	w.counts = append(w.counts, C.int(len(frames)))
}

// addTopic queues one message whose first frame is topic.
func (w *batchWriter) addTopic(topic string, frames ...[]byte) {
	w.buf = append(w.buf, topic...)
	w.lens = append(w.lens, C.int(len(topic)))
	for _, f := range frames {
		w.buf = append(w.buf, f...)
		w.lens = append(w.lens, C.int(len(f)))
	}
	w.counts = append(w.counts, C.int(len(frames)+1))
}

// appendFrom queues every message queued in o (o is left as it was).
func (w *batchWriter) appendFrom(o *batchWriter) {
	w.buf = append(w.buf, o.buf...)
	w.lens = append(w.lens, o.lens...)
	w.counts = append(w.counts, o.counts...)
}

// flush sends the queued messages, each with DONTWAIT on its first frame.
// It returns how many were sent; the rest stay queued, and err says why
// (EAGAIN: no peer ready).
func (w *batchWriter) flush(s *zmq.Socket) (int, error) {
	if len(w.counts) == 0 {
		return 0, nil
	}
	var sent int
	var err error
	if fastIO {
		b := w.buf
		if len(b) == 0 {
			b = append(b, 0)
		}
		var e C.int
		sent = int(C.zl_send_many(handle(s), C.int(zmq.DONTWAIT), (*C.char)(unsafe.Pointer(&b[0])), &w.lens[0], &w.counts[0], C.int(len(w.counts)), &e))
		if e != 0 {
			err = zmq.Errno(syscall.Errno(e))
		}
	} else {
		off, li := 0, 0
		for _, c := range w.counts {
			frames := make([][]byte, c)
			for i := range frames {
				l := int(w.lens[li])
				frames[i] = w.buf[off : off+l]
				off += l
				li++
			}
			if err = sendFrames(s, zmq.DONTWAIT, frames...); err != nil {
				break
			}
			sent++
		}
	}
	w.drop(sent)
	return sent, err
}

// drop removes the first n queued messages.
func (w *batchWriter) drop(n int) {
	if n == 0 {
		return
	}
	if n == len(w.counts) {
		w.buf, w.lens, w.counts = w.buf[:0], w.lens[:0], w.counts[:0]
		return
	}
	bytes, frames := 0, 0
	for _, c := range w.counts[:n] {
		for i := 0; i < int(c); i++ {
			bytes += int(w.lens[frames])
			frames++
		}
	}
	w.buf = w.buf[:copy(w.buf, w.buf[bytes:])]
	w.lens = w.lens[:copy(w.lens, w.lens[frames:])]
	w.counts = w.counts[:copy(w.counts, w.counts[n:])]
}

// pending returns how many messages are queued.
func (w *batchWriter) pending() int { return len(w.counts) }
