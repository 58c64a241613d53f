package stats

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"time"
)

// Message types on the wire (see the package doc's "Protocol").
const (
	// TypeBatch is a PUSH of records to the collector's PULL socket.
	TypeBatch = "stats.batch"
	// TypeAck asks the collector's ack socket (ROUTER) how far it has
	// durably accepted each named emitter's records.
	TypeAck = "stats.ack"
)

// wireBatch is the body of a TypeBatch message, in either format (see the
// package doc's "Protocol"): records as JSON objects (format 1), or
// frames, the records in their binary layout framed as in the journal
// (format 2, what emitters send).
type wireBatch struct {
	Emitter string       `json:"emitter"`
	From    uint64       `json:"from"`
	Records []wireRecord `json:"records"`
	Frames  []byte       `json:"frames"`
}

type wireRecord struct {
	Seq       uint64  `json:"seq"`
	Kind      string  `json:"kind"`
	TS        *int64  `json:"ts"`
	App       string  `json:"app"`
	Instance  int64   `json:"instance,omitempty"`
	Stream    string  `json:"stream,omitempty"`
	Name      string  `json:"name,omitempty"`
	Value     float64 `json:"value,omitempty"`
	Text      *string `json:"text,omitempty"`
	Text64    []byte  `json:"text64,omitempty"`
	Truncated bool    `json:"truncated,omitempty"`
}

type ackRequest struct {
	Emitters []string `json:"emitters"`
}

type ackReply struct {
	// Acked maps each asked emitter the collector knows to the highest
	// seq it has durably accepted (every seq up to it).
	Acked map[string]uint64 `json:"acked"`
}

// frameEncoder builds a format-2 TypeBatch message: the records' frames,
// copied as the emitter's queue and spool hold them, sent raw in the
// message's data frame with a small JSON body. A record costs a copy,
// where format 1 formatted every field as JSON text (and the collector
// parsed it back), and the base64 form of format 2 encoded it (and the
// collector decoded it).
type frameEncoder struct {
	emitter string
	from    uint64
	raw     []byte // the frames
	n       int    // records in raw
	body    []byte
	// frames, when set (by useFrames), is the batch's frames in place
	// of raw: a run of the memory queue's frames, sent without a copy.
	// Never appended to: it aliases a chunk the emitter appends to.
	frames []byte
}

func (e *frameEncoder) begin(emitter string, from uint64) {
	e.emitter, e.from, e.raw, e.n, e.frames = emitter, from, e.raw[:0], 0, nil
}

// useFrames makes the batch the n framed records in f, which must stay
// unchanged until the message is pushed.
func (e *frameEncoder) useFrames(f []byte, n int) {
	e.raw, e.frames, e.n = e.raw[:0], f[:len(f):len(f)], n
}

// size is the batch's frame bytes.
func (e *frameEncoder) size() int {
	if e.frames != nil {
		return len(e.frames)
	}
	return len(e.raw)
}

// addRecord frames r and appends it.
func (e *frameEncoder) addRecord(r *Record) {
	start := len(e.raw)
	e.raw = append(e.raw, 0, 0, 0, 0, 0, 0, 0, 0)
	e.raw = r.appendBinary(e.raw)
	p := e.raw[start+frameHeader:]
	binary.LittleEndian.PutUint32(e.raw[start:], uint32(len(p)))
	binary.LittleEndian.PutUint32(e.raw[start+4:], crc32.Checksum(p, crcTable))
	e.n++
}

// endData returns the body and the data frame of the message (both valid
// until the next begin): {"emitter":...,"from":...} and the frames.
func (e *frameEncoder) endData() (body, data []byte) {
	b := append(e.body[:0], `{"emitter":`...)
	b = appendJSONString(b, e.emitter)
	b = append(b, `,"from":`...)
	b = strconv.AppendUint(b, e.from, 10)
	e.body = append(b, '}')
	if e.frames != nil {
		return e.body, e.frames
	}
	return e.body, e.raw
}

// frameBodyOverhead bounds a format-2 body's bytes (the JSON around the
// frames).
const frameBodyOverhead = len(`{"emitter":"","from":18446744073709551615}`) + maxEmitterLen

// maxFramesFor is the most frame bytes a format-2 message may carry in its
// data frame to stay within a codec's MaxSize, envelope included.
func maxFramesFor(maxSize int) int {
	const envelope = 512 // type, id, ts, key id, MAC
	return maxSize - envelope - frameBodyOverhead
}

const hexDigits = "0123456789abcdef"

func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\t':
			b = append(b, '\\', 't')
		case '\r':
			b = append(b, '\\', 'r')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// decodedBatch is a TypeBatch message decoded and validated.
type decodedBatch struct {
	wb      wireBatch // scratch of the parse
	Emitter string
	From    uint64
	Recs    []Record
	// Raw, for a format-2 batch, is its frames: the message's data frame,
	// or the body's "frames" decoded from base64 (wb.Frames). Frames holds
	// each record's frame in Raw (offset and length), so that the
	// collector journals it as it came; a length of 0 marks a record the
	// collector cut (re-encoded).
	Raw    []byte
	Frames []frameRef
	// Cut counts log lines cut to the collector's MaxLineBytes.
	Cut int
}

type frameRef struct{ off, n int }

// decode parses and validates a TypeBatch message (its body, and data,
// its data frame, empty if it has none) into d, reusing d's buffers. A
// record that fails validation fails the whole batch (its sender holds a
// key: it is a bug), and so does any other fault of the message: nothing
// of a batch is taken unless all of it is good. Records' Text aliases
// body, data or d.
func (d *decodedBatch) decode(body, data []byte, maxLine int) error {
	d.Recs, d.Frames, d.Raw, d.Cut = d.Recs[:0], d.Frames[:0], nil, 0
	if err := parseWireBatch(body, &d.wb); err != nil {
		return fmt.Errorf("%w: batch body: %v", ErrInvalidRecord, err)
	}
	d.Emitter, d.From = d.wb.Emitter, d.wb.From
	if !validEmitter(d.Emitter) {
		return fmt.Errorf("%w: bad emitter %q", ErrInvalidRecord, d.Emitter)
	}
	// An empty data frame is none (zmqloop sends none for empty Data).
	hasData := len(data) > 0
	switch {
	case hasData && d.wb.Frames != nil:
		return fmt.Errorf("%w: batch has frames both in its body and in its data frame", ErrInvalidRecord)
	case hasData && d.wb.Records != nil:
		return fmt.Errorf("%w: batch has both records in its body and frames in its data frame", ErrInvalidRecord)
	case d.wb.Records != nil && d.wb.Frames != nil:
		return fmt.Errorf("%w: batch has both records and frames", ErrInvalidRecord)
	case hasData:
		d.Raw = data
		return d.decodeFrames(maxLine)
	case d.wb.Frames != nil:
		d.Raw = d.wb.Frames
		return d.decodeFrames(maxLine)
	}
	var err error
	d.Recs, d.Cut, err = decodeRecords(&d.wb, maxLine, d.Recs)
	return err
}

// decodeFrames decodes and validates a format-2 batch's frames (d.Raw).
// A record's strings are checked only where they differ from the
// previous record's (already checked; apps, streams and names repeat).
func (d *decodedBatch) decodeFrames(maxLine int) error {
	b := d.Raw
	if len(b) == 0 {
		return fmt.Errorf("%w: batch of no records", ErrInvalidRecord)
	}
	prev := Record{Emitter: d.Emitter}
	for off := 0; off < len(b); {
		if len(b)-off < frameHeader {
			return fmt.Errorf("%w: frame at byte %d: %d bytes, shorter than its header", ErrInvalidRecord, off, len(b)-off)
		}
		n := int(binary.LittleEndian.Uint32(b[off:]))
		if n > maxFrame || n > len(b)-off-frameHeader {
			return fmt.Errorf("%w: frame at byte %d: length %d past the batch's end", ErrInvalidRecord, off, n)
		}
		p := b[off+frameHeader : off+frameHeader+n]
		if crc32.Checksum(p, crcTable) != binary.LittleEndian.Uint32(b[off+4:]) {
			return fmt.Errorf("%w: frame at byte %d: bad CRC", ErrInvalidRecord, off)
		}
		// Interned against the previous record: apps, streams and names
		// repeat.
		d.Recs = append(d.Recs, Record{Emitter: prev.Emitter, Tags: Tags{App: prev.App, Stream: prev.Stream}, Name: prev.Name})
		r := &d.Recs[len(d.Recs)-1]
		if err := decodeRecord(p, r); err != nil {
			return fmt.Errorf("%w: frame at byte %d: %v", ErrInvalidRecord, off, err)
		}
		if p[1]&^1 != 0 {
			return fmt.Errorf("%w: record %d: unknown flags %#x", ErrInvalidRecord, r.Seq, p[1])
		}
		if r.Emitter != d.Emitter {
			return fmt.Errorf("%w: record %d of emitter %q in a batch of %q", ErrInvalidRecord, r.Seq, r.Emitter, d.Emitter)
		}
		if r.Kind == KindLog && (r.Name != "" || r.Value != 0) || r.Kind != KindLog && len(r.Text) > 0 {
			return fmt.Errorf("%w: record %d: a %s with a name, value or text it cannot have", ErrInvalidRecord, r.Seq, r.Kind)
		}
		if len(d.Recs) > 1 && r.Seq != prev.Seq+1 {
			return fmt.Errorf("%w: record %d follows %d: seqs must be consecutive", ErrInvalidRecord, r.Seq, prev.Seq)
		}
		l := len(r.Text)
		var err error
		if len(d.Recs) > 1 && r.Seq != 0 && r.Kind == KindLog && prev.Kind == KindLog && r.App == prev.App && r.Stream == prev.Stream {
			// The common run of log lines from one stream: only what
			// differs from the previous line (validated) is checked.
			err = r.validateLogText(maxLine)
		} else {
			err = r.validate(maxLine)
		}
		if err != nil {
			return fmt.Errorf("record %d: %w", r.Seq, err)
		}
		ref := frameRef{off, frameHeader + n}
		if len(r.Text) != l {
			d.Cut++
			ref.n = 0 // cut in place: the frame no longer matches
		}
		d.Frames = append(d.Frames, ref)
		prev = *r
		off += frameHeader + n
	}
	return nil
}

// decodeRecords converts a format-1 batch's records.
func decodeRecords(wb *wireBatch, maxLine int, recs []Record) (_ []Record, cut int, err error) {
	if len(wb.Records) == 0 {
		return recs, 0, fmt.Errorf("%w: batch of no records", ErrInvalidRecord)
	}
	for i := range wb.Records {
		w := &wb.Records[i]
		k, ok := parseKind(w.Kind)
		if !ok {
			return recs, 0, fmt.Errorf("%w: record %d: unknown kind %q", ErrInvalidRecord, w.Seq, w.Kind)
		}
		if w.TS == nil {
			return recs, 0, fmt.Errorf("%w: record %d: no ts", ErrInvalidRecord, w.Seq)
		}
		if i > 0 && w.Seq != wb.Records[i-1].Seq+1 {
			return recs, 0, fmt.Errorf("%w: record %d follows %d: seqs must be consecutive", ErrInvalidRecord, w.Seq, wb.Records[i-1].Seq)
		}
		r := Record{Kind: k, Emitter: wb.Emitter, Seq: w.Seq, Time: time.Unix(0, *w.TS),
			Tags: Tags{App: w.App, Instance: w.Instance, Stream: w.Stream}, Name: w.Name, Value: w.Value, Truncated: w.Truncated}
		if k == KindLog {
			switch {
			case w.Text != nil && w.Text64 != nil:
				return recs, 0, fmt.Errorf("%w: record %d has text and text64", ErrInvalidRecord, w.Seq)
			case w.Text != nil:
				r.Text = []byte(*w.Text)
			default:
				r.Text = w.Text64
			}
		}
		n := len(r.Text)
		if err := r.validate(maxLine); err != nil {
			return recs, 0, fmt.Errorf("record %d: %w", w.Seq, err)
		}
		if len(r.Text) < n {
			cut++
		}
		recs = append(recs, r)
	}
	return recs, cut, nil
}
