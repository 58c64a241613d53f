package stats

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// Message types on the wire (see the package doc's "Protocol").
const (
	// TypeBatch is a PUSH of records to the collector's PULL socket.
	TypeBatch = "stats.batch"
	// TypeAck asks the collector's ack socket (ROUTER) how far it has
	// durably accepted each named emitter's records.
	TypeAck = "stats.ack"
)

// wireBatch is the body of a TypeBatch message.
type wireBatch struct {
	Emitter string       `json:"emitter"`
	From    uint64       `json:"from"`
	Records []wireRecord `json:"records"`
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

// batchEncoder appends a TypeBatch body record by record.
type batchEncoder struct {
	b []byte
	n int
}

func (e *batchEncoder) begin(emitter string, from uint64) {
	e.b = append(e.b[:0], `{"emitter":`...)
	e.b = appendJSONString(e.b, emitter)
	e.b = append(e.b, `,"from":`...)
	e.b = strconv.AppendUint(e.b, from, 10)
	e.b = append(e.b, `,"records":[`...)
	e.n = 0
}

func (e *batchEncoder) add(r *Record) {
	if e.n > 0 {
		e.b = append(e.b, ',')
	}
	e.n++
	b := append(e.b, `{"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"kind":"`...)
	b = append(b, r.Kind.String()...)
	b = append(b, `","ts":`...)
	b = strconv.AppendInt(b, r.Time.UnixNano(), 10)
	b = append(b, `,"app":`...)
	b = appendJSONString(b, r.App)
	if r.Instance != 0 {
		b = append(b, `,"instance":`...)
		b = strconv.AppendInt(b, r.Instance, 10)
	}
	if r.Stream != "" {
		b = append(b, `,"stream":`...)
		b = appendJSONString(b, r.Stream)
	}
	if r.Kind == KindLog {
		if utf8.Valid(r.Text) {
			b = append(b, `,"text":`...)
			b = appendJSONString(b, string(r.Text)) // no copy: the compiler sees through it
		} else {
			b = append(b, `,"text64":"`...)
			b = base64.StdEncoding.AppendEncode(b, r.Text)
			b = append(b, '"')
		}
		if r.Truncated {
			b = append(b, `,"truncated":true`...)
		}
	} else {
		b = append(b, `,"name":`...)
		b = appendJSONString(b, r.Name)
		b = append(b, `,"value":`...)
		b = strconv.AppendFloat(b, r.Value, 'g', -1, 64)
	}
	e.b = append(b, '}')
}

func (e *batchEncoder) end() []byte {
	e.b = append(e.b, "]}"...)
	return e.b
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

// decodeBatch parses and validates a TypeBatch body. A record that fails
// validation fails the whole batch (its sender holds a key: it is a bug).
func decodeBatch(body []byte, maxLine int, recs []Record) (emitter string, from uint64, _ []Record, cut int, err error) {
	var wb wireBatch
	if err := parseWireBatch(body, &wb); err != nil {
		return "", 0, recs, 0, fmt.Errorf("%w: batch body: %v", ErrInvalidRecord, err)
	}
	if !validEmitter(wb.Emitter) {
		return "", 0, recs, 0, fmt.Errorf("%w: bad emitter %q", ErrInvalidRecord, wb.Emitter)
	}
	if len(wb.Records) == 0 {
		return "", 0, recs, 0, fmt.Errorf("%w: batch of no records", ErrInvalidRecord)
	}
	for i := range wb.Records {
		w := &wb.Records[i]
		k, ok := parseKind(w.Kind)
		if !ok {
			return "", 0, recs, 0, fmt.Errorf("%w: record %d: unknown kind %q", ErrInvalidRecord, w.Seq, w.Kind)
		}
		if w.TS == nil {
			return "", 0, recs, 0, fmt.Errorf("%w: record %d: no ts", ErrInvalidRecord, w.Seq)
		}
		if i > 0 && w.Seq != wb.Records[i-1].Seq+1 {
			return "", 0, recs, 0, fmt.Errorf("%w: record %d follows %d: seqs must be consecutive", ErrInvalidRecord, w.Seq, wb.Records[i-1].Seq)
		}
		r := Record{Kind: k, Emitter: wb.Emitter, Seq: w.Seq, Time: time.Unix(0, *w.TS),
			Tags: Tags{App: w.App, Instance: w.Instance, Stream: w.Stream}, Name: w.Name, Value: w.Value, Truncated: w.Truncated}
		if k == KindLog {
			switch {
			case w.Text != nil && w.Text64 != nil:
				return "", 0, recs, 0, fmt.Errorf("%w: record %d has text and text64", ErrInvalidRecord, w.Seq)
			case w.Text != nil:
				r.Text = []byte(*w.Text)
			default:
				r.Text = w.Text64
			}
		}
		n := len(r.Text)
		if err := r.validate(maxLine); err != nil {
			return "", 0, recs, 0, fmt.Errorf("record %d: %w", w.Seq, err)
		}
		if len(r.Text) < n {
			cut++
		}
		recs = append(recs, r)
	}
	return wb.Emitter, wb.From, recs, cut, nil
}
