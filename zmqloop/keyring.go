package zmqloop

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"sort"
	"sync"
	"sync/atomic"
)

// MinSecretLen is the shortest HMAC secret a Key may have.
const MinSecretLen = 16

// Key is one HMAC-SHA256 key: an id that travels in the clear in every
// message and a secret that never does.
type Key struct {
	ID     string // [A-Za-z0-9._-], 1 to 64 bytes
	Secret []byte // at least MinSecretLen bytes; 32 random bytes recommended
}

// KeyRing holds the live keys. One key signs outgoing messages; any key in
// the ring verifies incoming ones, so a key rotates without downtime: add the
// new key on every node, then make it the signing key everywhere, then
// remove the old one. A KeyRing is safe for concurrent use; readers never
// block (the ring is copied on write).
type KeyRing struct {
	mu    sync.Mutex // serialises writers
	state atomic.Pointer[ringState]
}

type ringState struct {
	signing *keyEntry
	keys    map[string]*keyEntry
}

type keyEntry struct {
	id   string
	idb  []byte    // id, shared by every sealed message: never modify it
	macs sync.Pool // of hash.Hash keyed with the secret
}

func newKeyEntry(k Key) *keyEntry {
	secret := append([]byte(nil), k.Secret...)
	e := &keyEntry{id: k.ID, idb: []byte(k.ID)}
	e.macs.New = func() any { return hmac.New(sha256.New, secret) }
	return e
}

// mac appends HMAC-SHA256(secret, keyID || 0x00 || payload) to dst.
func (e *keyEntry) mac(dst, payload []byte) []byte {
	h := e.macs.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(e.id))
	h.Write(zeroByte[:])
	h.Write(payload)
	dst = h.Sum(dst)
	e.macs.Put(h)
	return dst
}

var zeroByte = [1]byte{0}

// macData appends the MAC of a message with a data frame to dst:
// HMAC-SHA256(secret, keyID || 0x01 || uint64be(len(payload)) ||
// uint64be(len(data)) || payload || data). The 0x01 (0x00 without data;
// a key id holds neither byte) keeps the two forms apart, and the lengths
// fix where payload ends and data begins, so no frame can be moved, split
// or swapped without changing the MAC. With empty data it is mac.
func (e *keyEntry) macData(dst, payload, data []byte) []byte {
	if len(data) == 0 {
		return e.mac(dst, payload)
	}
	h := e.macs.Get().(hash.Hash)
	h.Reset()
	var hdr [17]byte
	hdr[0] = 1
	binary.BigEndian.PutUint64(hdr[1:9], uint64(len(payload)))
	binary.BigEndian.PutUint64(hdr[9:17], uint64(len(data)))
	h.Write([]byte(e.id))
	h.Write(hdr[:])
	h.Write(payload)
	h.Write(data)
	dst = h.Sum(dst)
	e.macs.Put(h)
	return dst
}

// NewKeyRing returns a ring holding keys; the first one signs.
func NewKeyRing(keys ...Key) (*KeyRing, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("zmqloop: new key ring: at least one key is required")
	}
	st := &ringState{keys: make(map[string]*keyEntry, len(keys))}
	for _, k := range keys {
		if err := validateKey(k); err != nil {
			return nil, fmt.Errorf("zmqloop: new key ring: %w", err)
		}
		if _, dup := st.keys[k.ID]; dup {
			return nil, fmt.Errorf("zmqloop: new key ring: duplicate key id %q", k.ID)
		}
		st.keys[k.ID] = newKeyEntry(k)
	}
	st.signing = st.keys[keys[0].ID]
	r := &KeyRing{}
	r.state.Store(st)
	return r, nil
}

func validateKey(k Key) error {
	if !validKeyID(k.ID) {
		return fmt.Errorf("key id %q: want 1 to 64 bytes of [A-Za-z0-9._-]", k.ID)
	}
	if len(k.Secret) < MinSecretLen {
		return fmt.Errorf("key %q: secret is %d bytes, want at least %d", k.ID, len(k.Secret), MinSecretLen)
	}
	return nil
}

// Add puts a key in the ring for verifying. Adding an id that is already
// there is an error (remove it first), so a secret is never replaced by
// accident.
func (r *KeyRing) Add(k Key) error {
	if err := validateKey(k); err != nil {
		return fmt.Errorf("zmqloop: add key: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.state.Load()
	if _, dup := old.keys[k.ID]; dup {
		return fmt.Errorf("zmqloop: add key %q: already in the ring", k.ID)
	}
	st := old.clone()
	st.keys[k.ID] = newKeyEntry(k)
	r.state.Store(st)
	return nil
}

// Remove takes a key out of the ring. The signing key cannot be removed.
func (r *KeyRing) Remove(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.state.Load()
	if _, ok := old.keys[id]; !ok {
		return fmt.Errorf("zmqloop: remove key %q: %w", id, ErrUnknownKey)
	}
	if old.signing.id == id {
		return fmt.Errorf("zmqloop: remove key %q: it is the signing key; sign with another first", id)
	}
	st := old.clone()
	delete(st.keys, id)
	r.state.Store(st)
	return nil
}

// SetSigning makes the key with this id (already in the ring) the one that
// signs outgoing messages.
func (r *KeyRing) SetSigning(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.state.Load()
	e, ok := old.keys[id]
	if !ok {
		return fmt.Errorf("zmqloop: set signing key %q: %w", id, ErrUnknownKey)
	}
	st := old.clone()
	st.signing = e
	r.state.Store(st)
	return nil
}

// SigningKeyID returns the id of the key that signs outgoing messages.
func (r *KeyRing) SigningKeyID() string { return r.state.Load().signing.id }

// KeyIDs returns the ids of all keys in the ring, sorted.
func (r *KeyRing) KeyIDs() []string {
	st := r.state.Load()
	ids := make([]string, 0, len(st.keys))
	for id := range st.keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (s *ringState) clone() *ringState {
	c := &ringState{signing: s.signing, keys: make(map[string]*keyEntry, len(s.keys)+1)}
	for id, e := range s.keys {
		c.keys[id] = e
	}
	return c
}

// validKeyID reports whether s is 1 to 64 bytes of [A-Za-z0-9._-].
func validKeyID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
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

// validToken reports whether s is 1 to 128 bytes of [A-Za-z0-9._:/-], the
// alphabet of message types, ids and error codes (no JSON escaping needed).
func validToken(s []byte) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == ':' || c == '/') {
			return false
		}
	}
	return true
}

func validTokenString(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == ':' || c == '/') {
			return false
		}
	}
	return true
}
