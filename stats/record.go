package stats

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Kind says what a Record is.
type Kind uint8

// The kinds of record.
const (
	// KindCounter adds Value to a counter (a count of events).
	KindCounter Kind = 1
	// KindGauge sets a gauge to Value (a level: queue length, bytes in use).
	KindGauge Kind = 2
	// KindTiming is one duration, Value in seconds.
	KindTiming Kind = 3
	// KindLog is one log line, in Text.
	KindLog Kind = 4
	// KindUsage is a usage increment for billing: Name is one of the
	// Usage* names, Value the increment (a peak for UsagePeakMemory).
	KindUsage Kind = 5
)

// Usage record names (Record.Name of a KindUsage record).
const (
	UsageCPUSeconds = "cpu_seconds"
	UsagePeakMemory = "peak_memory_bytes"
	UsageRequests   = "requests"
)

var kindNames = [...]string{KindCounter: "counter", KindGauge: "gauge", KindTiming: "timing", KindLog: "log", KindUsage: "usage"}

// String is the kind's wire name.
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

func parseKind(s string) (Kind, bool) {
	for k, n := range kindNames {
		if n != "" && n == s {
			return Kind(k), true
		}
	}
	return 0, false
}

// Tags say where a record comes from. App is required (and is a path
// component of the log files, so it is a name: 1-64 bytes of
// [A-Za-z0-9._-], not "." or ".."); Instance and Stream are optional.
type Tags struct {
	App      string
	Instance int64
	// Stream is "stdout", "stderr" or any other name of the same alphabet
	// as App, up to 32 bytes; empty for metrics.
	Stream string
}

// Record is one metric point or log line as the collector and its sinks
// see it.
type Record struct {
	Kind Kind
	// Emitter and Seq identify the record: Emitter names one emitter
	// incarnation, Seq counts its records from 1 without gaps. Sinks use
	// them to write each record exactly once.
	Emitter string
	Seq     uint64
	// Index is the record's position in the collector's journal (from 1),
	// set by the collector.
	Index uint64
	Time  time.Time
	Tags
	// Name is a metric's name (lower-case snake_case, [a-z0-9_:], at most
	// 128 bytes); empty on a log line.
	Name  string
	Value float64
	// Text is a log line's text, at most MaxLineBytes; Truncated says the
	// emitter cut it (the text then ends with TruncatedMarker).
	Text      []byte
	Truncated bool
}

// TruncatedMarker ends a log line the emitter or the collector cut to
// MaxLineBytes.
const TruncatedMarker = " [truncated]"

// DefaultMaxLineBytes bounds one log line's text.
const DefaultMaxLineBytes = 16 << 10

// Limits on names.
const (
	maxAppLen     = 64
	maxStreamLen  = 32
	maxNameLen    = 128
	maxEmitterLen = 96
)

func validApp(s string) bool {
	if len(s) == 0 || len(s) > maxAppLen || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validStream(s string) bool { return s == "" || len(s) <= maxStreamLen && validApp(s) }

func validMetricName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == ':') {
			return false
		}
	}
	return true
}

func validEmitter(s string) bool { return len(s) <= maxEmitterLen && validApp(s) }

// ErrInvalidRecord is wrapped by errors about records that fail
// validation.
var ErrInvalidRecord = errors.New("stats: invalid record")

// validate checks r as the collector does on arrival; it truncates an
// oversized log line (with the marker) rather than refusing it.
func (r *Record) validate(maxLine int) error {
	switch {
	case r.Kind < KindCounter || r.Kind > KindUsage:
		return fmt.Errorf("%w: unknown kind %d", ErrInvalidRecord, r.Kind)
	case !validEmitter(r.Emitter):
		return fmt.Errorf("%w: bad emitter %q", ErrInvalidRecord, r.Emitter)
	case r.Seq == 0:
		return fmt.Errorf("%w: seq 0", ErrInvalidRecord)
	case !validApp(r.App):
		return fmt.Errorf("%w: bad app %q", ErrInvalidRecord, r.App)
	case !validStream(r.Stream):
		return fmt.Errorf("%w: bad stream %q", ErrInvalidRecord, r.Stream)
	case r.Kind != KindLog && !validMetricName(r.Name):
		return fmt.Errorf("%w: bad metric name %q", ErrInvalidRecord, r.Name)
	case r.Kind != KindLog && (math.IsNaN(r.Value) || math.IsInf(r.Value, 0)):
		return fmt.Errorf("%w: value %v of %s", ErrInvalidRecord, r.Value, r.Name)
	case r.Kind == KindUsage && r.Name != UsageCPUSeconds && r.Name != UsagePeakMemory && r.Name != UsageRequests:
		return fmt.Errorf("%w: unknown usage %q", ErrInvalidRecord, r.Name)
	case r.Kind == KindUsage && r.Value < 0:
		return fmt.Errorf("%w: negative usage %v of %s", ErrInvalidRecord, r.Value, r.Name)
	}
	if r.Kind == KindLog {
		return r.validateLogText(maxLine)
	}
	return nil
}

// validateLogText is validate for a log line whose other fields are known
// good (those of the line before it in its batch): it cuts an oversized
// text.
func (r *Record) validateLogText(maxLine int) error {
	if len(r.Text) > maxLine {
		r.Text = truncateLine(r.Text, maxLine)
		r.Truncated = true
	}
	return nil
}

// truncateLine cuts text so that it and the marker fit in max bytes,
// at a UTF-8 boundary, and appends the marker. It reuses text's array.
func truncateLine(text []byte, max int) []byte {
	keep := max - len(TruncatedMarker)
	if keep < 0 {
		keep = 0
	}
	for keep > 0 && keep < len(text) && !utf8.RuneStart(text[keep]) {
		keep--
	}
	return append(text[:keep], TruncatedMarker...)
}

// Binary record layout, used in the emitter's memory queue and spool and
// in the collector's journal (inside a segLog frame):
//
//	u8 kind, u8 flags (bit 0: truncated), uvarint seq, varint unix nanos,
//	str emitter, str app, varint instance, str stream, str name,
//	u64 value bits (little endian), str text
//
// where str is a uvarint length and the bytes.

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendRecord encodes a record from its parts (so the emitter's hot path
// needs no Record value).
func appendRecord(b []byte, k Kind, trunc bool, seq uint64, ts int64, emitter string, t *Tags, name string, v float64, text []byte) []byte {
	var fl byte
	if trunc {
		fl = 1
	}
	b = append(b, byte(k), fl)
	b = binary.AppendUvarint(b, seq)
	b = binary.AppendVarint(b, ts)
	b = appendStr(b, emitter)
	b = appendStr(b, t.App)
	b = binary.AppendVarint(b, t.Instance)
	b = appendStr(b, t.Stream)
	b = appendStr(b, name)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	return appendBytes(b, text)
}

func (r *Record) appendBinary(b []byte) []byte {
	return appendRecord(b, r.Kind, r.Truncated, r.Seq, r.Time.UnixNano(), r.Emitter, &r.Tags, r.Name, r.Value, r.Text)
}

var (
	errShort    = errors.New("stats: short record")
	errTrailing = errors.New("stats: bytes after the record's last field")
)

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errShort
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

// intern returns s as a string, reusing the previous one when equal (apps,
// streams and names repeat from one record to the next).
func intern(prev *string, s []byte) string {
	if *prev != string(s) {
		*prev = string(s)
	}
	return *prev
}

// decodeRecord decodes a binary record into r. r.Text aliases b; strings
// are copied (interned against r's previous values).
func decodeRecord(b []byte, r *Record) error {
	if len(b) < 2 {
		return errShort
	}
	d := decoder{b: b[2:]}
	r.Kind, r.Truncated = Kind(b[0]), b[1]&1 != 0
	r.Seq = d.uvarint()
	r.Time = time.Unix(0, d.varint())
	r.Emitter = intern(&r.Emitter, d.bytes())
	r.App = intern(&r.App, d.bytes())
	r.Instance = d.varint()
	r.Stream = intern(&r.Stream, d.bytes())
	r.Name = intern(&r.Name, d.bytes())
	if d.err == nil && len(d.b) < 8 {
		d.err = errShort
	}
	if d.err != nil {
		return d.err
	}
	r.Value = math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	r.Text = d.bytes()
	if d.err == nil && len(d.b) > 0 {
		return errTrailing
	}
	return d.err
}
