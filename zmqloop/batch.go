package zmqloop

import (
	"crypto/sha256"
	"strconv"
)

// BatchType is the reserved message type of a batch: one signed envelope
// whose body is a JSON array of queued one-way messages (see the package
// doc's "Batches"). A Pusher makes them; PullLoop and SubLoop unpack them.
// No handler may be registered for it and Push refuses it.
const BatchType = "zmqloop.batch"

// MaxBatchItems bounds how many queued messages a Pusher puts in one batch.
const MaxBatchItems = 64

// batchOverhead bounds the bytes of a batch payload around its items: the
// type, id and ts members, the brackets, and the key id and MAC frames
// (with a key id of up to 64 bytes).
const batchOverhead = len(`{"type":"`+BatchType+`","id":"`) + 128 + len(`","ts":`) + 20 + len(`,"body":[]}`) + 64 + sha256.Size

// sealBatch seals the payloads in items (each a whole payload object, as
// appendPayloadID writes them) as one BatchType message and returns its
// key-id, payload and MAC frames; payload and MAC live in buf, which is
// returned for reuse. The caller keeps the size within MaxSize (see
// batchOverhead).
func (c *Codec) sealBatch(buf []byte, items [][]byte) (key, payload, mac, out []byte) {
	st := c.keys.state.Load()
	b := append(buf[:0], `{"type":"`+BatchType+`","id":"`...)
	b = append(b, c.idPrefix...)
	b = strconv.AppendUint(b, c.idSeq.Add(1), 36)
	b = append(b, `","ts":`...)
	b = strconv.AppendInt(b, c.now().UnixMilli(), 10)
	b = append(b, `,"body":[`...)
	for i, it := range items {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, it...)
	}
	b = append(b, "]}"...)
	n := len(b)
	b = st.signing.mac(b, b[:n])
	return st.signing.idb[:len(st.signing.idb):len(st.signing.idb)], b[:n:n], b[n:], b
}

// coalescer rewrites a Pusher's queue (messages of one frame, an unsigned
// payload, see Codec.payloadInto; or of four, a message with data already
// signed) into signed envelopes: batches of up to MaxBatchItems messages
// and MaxSize bytes, or a message signed alone when its run is one long. A
// signed message ends the run before it and goes out as it is, in order.
type coalescer struct {
	codec *Codec
	items [][]byte
	buf   []byte
	// frames is scratch for a signed message's frames.
	frames [][]byte
	// counts has, for each message of out not yet sent, how many queued
	// messages it carries.
	counts []int
}

// coalesce moves every message queued in in to out (both owner-only) and
// appends each output message's item count to c.counts. in is left empty.
func (c *coalescer) coalesce(in, out *batchWriter) {
	limit := c.codec.maxSize - batchOverhead
	size := 0
	emit := func() {
		var key, payload, mac []byte
		switch len(c.items) {
		case 0:
			return
		case 1:
			payload = c.items[0]
			key, c.buf = c.codec.sign(c.buf[:0], payload)
			mac = c.buf
		default:
			key, payload, mac, c.buf = c.codec.sealBatch(c.buf, c.items)
		}
		out.add(key, payload, mac)
		c.counts = append(c.counts, len(c.items))
		c.items, size = c.items[:0], 0
	}
	off, li := 0, 0
	for _, cnt := range in.counts {
		if cnt != 1 { // signed with its data frame: alone, as it is
			emit()
			frames := c.frames[:0]
			for j := 0; j < int(cnt); j++ {
				l := int(in.lens[li])
				frames = append(frames, in.buf[off:off+l:off+l])
				off += l
				li++
			}
			out.add(frames...)
			c.frames = frames[:0]
			c.counts = append(c.counts, 1)
			continue
		}
		l := int(in.lens[li])
		li++
		p := in.buf[off : off+l : off+l]
		off += l
		if len(c.items) == MaxBatchItems || (len(c.items) > 0 && size+len(p)+1 > limit) {
			emit()
		}
		c.items = append(c.items, p)
		size += len(p) + 1
	}
	emit()
	in.drop(in.pending())
}
