package zmqloop

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for CodecConfig's zero values.
const (
	DefaultWindow  = 30 * time.Second
	DefaultMaxSize = 1 << 20
)

// Message is one envelope's content.
type Message struct {
	// Type names what the message is; receivers route on it. Required,
	// [A-Za-z0-9._:/-]{1,128}.
	Type string
	// ID identifies the message for replay protection and reply matching.
	// Seal fills it when empty; same alphabet as Type.
	ID string
	// Time is the sender's clock when it sealed the message, at millisecond
	// precision. Seal fills it when zero.
	Time time.Time
	// ReplyTo is, on a reply, the ID of the request it answers.
	ReplyTo string
	// Body is any JSON value, or empty for none.
	Body json.RawMessage
	// Error is set on an error reply.
	Error *RemoteError
	// Data is optional raw bytes carried in a fourth envelope frame after
	// the MAC, neither JSON-escaped nor base64'd, and covered by the MAC
	// together with the payload (see the package doc's "Wire format").
	// Empty means none: the message then has three frames, exactly as
	// without this field. Data counts against MaxSize.
	Data []byte
	// KeyID is, on a message Open returned, the id of the key that verified
	// it. Seal ignores it and signs with the ring's signing key.
	KeyID string
}

// CodecConfig configures a Codec. Zero values are the documented defaults.
type CodecConfig struct {
	// Keys signs and verifies. Required.
	Keys *KeyRing
	// Window is how far a message's timestamp may be from the receiver's
	// clock, either way. Default DefaultWindow (30s).
	Window time.Duration
	// MaxSize bounds the sum of the key-id, payload, MAC and (if any) data
	// frames, in bytes.
	// Sockets also get it as ZMQ_MAXMSGSIZE, so libzmq drops the connection
	// of a peer that sends a larger frame. Default DefaultMaxSize (1 MiB).
	MaxSize int
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Codec seals and opens envelopes: it signs and verifies with a KeyRing,
// checks timestamps and bounds sizes. It holds no per-message state (replay
// protection is a ReplayWindow's job, one per receiving loop), so one Codec
// may be shared by every loop and client in a process. It has no sockets.
type Codec struct {
	keys    *KeyRing
	window  time.Duration
	maxSize int
	now     func() time.Time

	idPrefix string
	idSeq    atomic.Uint64
	bufs     sync.Pool // of *[]byte
}

// NewCodec validates cfg and returns a Codec.
func NewCodec(cfg CodecConfig) (*Codec, error) {
	if cfg.Keys == nil {
		return nil, fmt.Errorf("zmqloop: new codec: Keys is required")
	}
	if cfg.Window < 0 || cfg.MaxSize < 0 {
		return nil, fmt.Errorf("zmqloop: new codec: negative Window %v or MaxSize %d", cfg.Window, cfg.MaxSize)
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Window < time.Millisecond {
		return nil, fmt.Errorf("zmqloop: new codec: Window %v is below the timestamp resolution (1ms)", cfg.Window)
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.MaxSize < 256 {
		return nil, fmt.Errorf("zmqloop: new codec: MaxSize %d is below 256 bytes", cfg.MaxSize)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var seed [8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("zmqloop: new codec: read random id prefix: %w", err)
	}
	c := &Codec{keys: cfg.Keys, window: cfg.Window, maxSize: cfg.MaxSize, now: cfg.Now,
		idPrefix: hex.EncodeToString(seed[:]) + "-"}
	c.bufs.New = func() any { b := make([]byte, 0, 512); return &b }
	return c, nil
}

// Window returns the timestamp window.
func (c *Codec) Window() time.Duration { return c.window }

// MaxSize returns the message size bound.
func (c *Codec) MaxSize() int { return c.maxSize }

// Keys returns the key ring.
func (c *Codec) Keys() *KeyRing { return c.keys }

// NewID returns a fresh message id: a random per-Codec prefix and a counter,
// unique across processes without a random read per message.
func (c *Codec) NewID() string {
	return c.idPrefix + strconv.FormatUint(c.idSeq.Add(1), 36)
}

// Seal encodes and signs m with the ring's signing key and returns the three
// frames: key id, payload, MAC; and a fourth, a copy of m.Data, if m.Data
// is not empty. It fills m.ID and m.Time when they are empty (the caller's
// copy is not changed).
func (c *Codec) Seal(m Message) ([][]byte, error) {
	st := c.keys.state.Load()
	buf := make([]byte, 0, 128+len(m.Body))
	payload, err := c.appendPayload(buf, &m)
	if err != nil {
		return nil, err
	}
	if err := c.checkSize(st, &m, len(payload)); err != nil {
		return nil, err
	}
	mac := st.signing.macData(make([]byte, 0, sha256.Size), payload, m.Data)
	if len(m.Data) == 0 {
		return [][]byte{[]byte(st.signing.id), payload, mac}, nil
	}
	return [][]byte{[]byte(st.signing.id), payload, mac, append([]byte(nil), m.Data...)}, nil
}

// checkSize refuses a message whose envelope would be over MaxSize: key
// id, a payload of n bytes, MAC and data.
func (c *Codec) checkSize(st *ringState, m *Message, n int) error {
	if len(st.signing.id)+n+sha256.Size+len(m.Data) > c.maxSize {
		if len(m.Data) > 0 {
			return fmt.Errorf("zmqloop: seal %q message: %d-byte payload and %d bytes of data: %w (max %d)", m.Type, n, len(m.Data), ErrTooLarge, c.maxSize)
		}
		return fmt.Errorf("zmqloop: seal %q message: %d-byte payload: %w (max %d)", m.Type, n, ErrTooLarge, c.maxSize)
	}
	return nil
}

// sealInto is Seal for the loops: the payload and MAC are appended to one
// pooled buffer, returned in *bufp for release with c.release. key is
// shared: callers copy it out and never modify it. The MAC covers m.Data,
// which the caller sends as the fourth frame when it is not empty.
func (c *Codec) sealInto(m *Message) (key, payload, mac []byte, bufp *[]byte, err error) {
	return c.sealIntoID(m, true)
}

// sealIntoID is sealInto; needID false leaves a fresh id out of m (see
// appendPayloadID).
func (c *Codec) sealIntoID(m *Message, needID bool) (key, payload, mac []byte, bufp *[]byte, err error) {
	st := c.keys.state.Load()
	bufp = c.bufs.Get().(*[]byte)
	b, err := c.appendPayloadID((*bufp)[:0], m, needID)
	if err != nil {
		c.release(bufp)
		return nil, nil, nil, nil, err
	}
	n := len(b)
	if err := c.checkSize(st, m, n); err != nil {
		c.release(bufp)
		return nil, nil, nil, nil, err
	}
	b = st.signing.macData(b, b[:n], m.Data)
	*bufp = b
	return st.signing.idb[:len(st.signing.idb):len(st.signing.idb)], b[:n:n], b[n:], bufp, nil
}

// payloadInto is sealIntoID without the MAC, for a Pusher: a message that
// ends up in a batch is never signed alone. The payload is in *bufp. It
// ignores m.Data: a message with data never goes in a batch, and a Pusher
// seals it with sealIntoID.
func (c *Codec) payloadInto(m *Message, needID bool) (payload []byte, bufp *[]byte, err error) {
	st := c.keys.state.Load()
	bufp = c.bufs.Get().(*[]byte)
	b, err := c.appendPayloadID((*bufp)[:0], m, needID)
	if err != nil {
		c.release(bufp)
		return nil, nil, err
	}
	if len(st.signing.id)+len(b)+sha256.Size > c.maxSize {
		c.release(bufp)
		return nil, nil, fmt.Errorf("zmqloop: seal %q message: %d-byte payload: %w (max %d)", m.Type, len(b), ErrTooLarge, c.maxSize)
	}
	*bufp = b
	return b[:len(b):len(b)], bufp, nil
}

// sign returns the signing key's id frame (shared: never modify it) and
// the MAC of payload, appended to dst.
func (c *Codec) sign(dst, payload []byte) (key, mac []byte) {
	st := c.keys.state.Load()
	return st.signing.idb[:len(st.signing.idb):len(st.signing.idb)], st.signing.mac(dst, payload)
}

func (c *Codec) release(bufp *[]byte) {
	if bufp != nil && cap(*bufp) <= 64<<10 {
		c.bufs.Put(bufp)
	}
}

func (c *Codec) appendPayload(dst []byte, m *Message) ([]byte, error) {
	return c.appendPayloadID(dst, m, true)
}

// appendPayloadID is appendPayload; with needID false and m.ID empty it
// writes a fresh Codec id straight into dst and leaves m.ID empty (one
// allocation less for senders that never look at the id).
func (c *Codec) appendPayloadID(dst []byte, m *Message, needID bool) ([]byte, error) {
	var seq uint64
	if m.ID == "" {
		if needID {
			m.ID = c.NewID()
		} else {
			seq = c.idSeq.Add(1)
		}
	}
	if m.Time.IsZero() {
		m.Time = c.now()
	}
	if !validTokenString(m.Type) {
		return nil, fmt.Errorf("zmqloop: seal: type %q: %w: want 1 to 128 bytes of [A-Za-z0-9._:/-]", m.Type, ErrMalformed)
	}
	if seq == 0 && !validTokenString(m.ID) {
		return nil, fmt.Errorf("zmqloop: seal %q message: id %q: %w: want 1 to 128 bytes of [A-Za-z0-9._:/-]", m.Type, m.ID, ErrMalformed)
	}
	if m.ReplyTo != "" && !validTokenString(m.ReplyTo) {
		return nil, fmt.Errorf("zmqloop: seal %q message: reply-to id %q: %w", m.Type, m.ReplyTo, ErrMalformed)
	}
	if m.Error != nil && !validTokenString(m.Error.Code) {
		return nil, fmt.Errorf("zmqloop: seal %q message: error code %q: %w", m.Type, m.Error.Code, ErrMalformed)
	}
	if len(m.Body) > 0 && !validJSON(m.Body) {
		return nil, fmt.Errorf("zmqloop: seal %q message: body is not one JSON value: %w", m.Type, ErrMalformed)
	}
	ms := m.Time.UnixMilli()
	if ms < 0 {
		return nil, fmt.Errorf("zmqloop: seal %q message: time %v is before 1970: %w", m.Type, m.Time, ErrMalformed)
	}
	dst = append(dst, `{"type":"`...)
	dst = append(dst, m.Type...)
	dst = append(dst, `","id":"`...)
	if seq != 0 {
		dst = append(dst, c.idPrefix...)
		dst = strconv.AppendUint(dst, seq, 36)
	} else {
		dst = append(dst, m.ID...)
	}
	dst = append(dst, `","ts":`...)
	dst = strconv.AppendInt(dst, ms, 10)
	if m.ReplyTo != "" {
		dst = append(dst, `,"re":"`...)
		dst = append(dst, m.ReplyTo...)
		dst = append(dst, '"')
	}
	if m.Error != nil {
		dst = append(dst, `,"error":{"code":"`...)
		dst = append(dst, m.Error.Code...)
		dst = append(dst, `","message":`...)
		dst = appendJSONString(dst, m.Error.Message)
		dst = append(dst, '}')
	}
	if len(m.Body) > 0 {
		dst = append(dst, `,"body":`...)
		dst = append(dst, m.Body...)
	}
	return append(dst, '}'), nil
}

// Open verifies and decodes the frames of an envelope (key id, payload,
// MAC, and an optional non-empty data frame; routing frames already
// removed). It checks, in order: frame count (ErrFrames), total size
// (ErrTooLarge), key id (ErrUnknownKey), MAC in constant time (ErrBadMAC),
// payload JSON (ErrMalformed), timestamp (ErrStale). It does not check for
// replays: feed the result to the receiver's ReplayWindow. The returned
// Message does not alias frames.
func (c *Codec) Open(frames [][]byte) (*Message, error) {
	m := new(Message)
	if err := c.open(frames, m); err != nil {
		return nil, err
	}
	return m, nil
}

// open is Open into a caller-provided Message. On ErrStale m is filled, so
// a loop can still answer the (authentic) request with an error.
func (c *Codec) open(frames [][]byte, m *Message) error {
	return c.openAt(frames, m, c.now())
}

// openAt is open with the receiver's clock already read.
func (c *Codec) openAt(frames [][]byte, m *Message, now time.Time) error {
	return c.openWith(frames, m, now, nil, false)
}

// openWith is openAt for the serve loops: intern, if set, maps the type
// bytes to a string without allocating when it knows them (the loop's
// handler names), and aliasBody leaves m.Body and m.Data pointing into
// frames instead of copying them.
func (c *Codec) openWith(frames [][]byte, m *Message, now time.Time, intern func([]byte) string, aliasBody bool) error {
	if len(frames) != 3 && len(frames) != 4 {
		return fmt.Errorf("zmqloop: open: %d envelope frames, want 3 (key id, payload, MAC) or 4 (and data): %w", len(frames), ErrFrames)
	}
	keyID, body, mac := frames[0], frames[1], frames[2]
	var data []byte
	if len(frames) == 4 {
		if data = frames[3]; len(data) == 0 {
			return fmt.Errorf("zmqloop: open: empty data frame (a message without data has 3 frames): %w", ErrFrames)
		}
	}
	if n := len(keyID) + len(body) + len(mac) + len(data); n > c.maxSize {
		return fmt.Errorf("zmqloop: open: %d-byte message: %w (max %d)", n, ErrTooLarge, c.maxSize)
	}
	st := c.keys.state.Load()
	e, ok := st.keys[string(keyID)]
	if !ok {
		return fmt.Errorf("zmqloop: open: key id %q: %w", truncate(keyID), ErrUnknownKey)
	}
	var sum [sha256.Size]byte
	if !hmac.Equal(e.macData(sum[:0], body, data), mac) {
		return fmt.Errorf("zmqloop: open: message signed with key %q: %w", e.id, ErrBadMAC)
	}
	var p payload
	if err := parsePayload(body, &p); err != nil {
		return fmt.Errorf("zmqloop: open: message signed with key %q: %w: %v", e.id, ErrMalformed, err)
	}
	if intern != nil {
		m.Type = intern(p.typ)
	} else {
		m.Type = string(p.typ)
	}
	m.ID = string(p.id)
	m.Time = time.UnixMilli(p.ts)
	m.ReplyTo = string(p.re)
	m.KeyID = e.id
	switch {
	case len(p.body) == 0:
	case aliasBody:
		m.Body = p.body
	default:
		m.Body = append(json.RawMessage(nil), p.body...)
	}
	switch {
	case len(data) == 0:
	case aliasBody:
		m.Data = data
	default:
		m.Data = append([]byte(nil), data...)
	}
	if p.hasErr {
		m.Error = &RemoteError{Code: string(p.errCode), Message: p.errMsg}
	}
	if d := now.Sub(m.Time); d > c.window || d < -c.window {
		return fmt.Errorf("zmqloop: open: %q message %q: timestamp %s is %v from now: %w (window %v)",
			m.Type, m.ID, m.Time.UTC().Format(time.RFC3339Nano), d.Round(time.Millisecond), ErrStale, c.window)
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}
