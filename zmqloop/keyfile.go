package zmqloop

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// ReadKeyFile reads a key ring from a file of "ID SECRET" lines (blank
// lines and lines starting with # are ignored); the first key signs. The
// secret is the rest of the line, surrounding blanks trimmed. The daemons
// and clients under examples/ share this format.
func ReadKeyFile(path string) (*KeyRing, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("zmqloop: key file: %w", err)
	}
	defer f.Close()
	return ParseKeyFile(f, path)
}

// ParseKeyFile is ReadKeyFile over r; name is used in error messages.
func ParseKeyFile(r io.Reader, name string) (*KeyRing, error) {
	var keys []Key
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, secret, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("zmqloop: %s:%d: want \"ID SECRET\"", name, n)
		}
		keys = append(keys, Key{ID: id, Secret: []byte(strings.TrimSpace(secret))})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("zmqloop: read %s: %w", name, err)
	}
	ring, err := NewKeyRing(keys...)
	if err != nil {
		return nil, fmt.Errorf("zmqloop: %s: %w", name, err)
	}
	return ring, nil
}
