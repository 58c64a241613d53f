package upload

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Right is something a key may do to an app.
type Right string

// The rights a key store grants, per app.
const (
	// RightDeploy: git push, hg push, deploy an archive, rollback,
	// releases.
	RightDeploy Right = "deploy"
	// RightRun: run a command in the app's sandbox.
	RightRun Right = "run"
	// RightData: rsync and scp into (and out of) the app's data
	// directory.
	RightData Right = "data"
)

// AnyApp in a grant means every app.
const AnyApp = "*"

// Identity is who a public key belongs to and what it may do.
type Identity struct {
	// User names the key's owner in logs and messages.
	User string
	// Grants maps an app name (or AnyApp) to the rights on it.
	Grants map[string][]Right
}

// Can reports whether the identity holds right on app.
func (id Identity) Can(right Right, app string) bool {
	for _, a := range []string{app, AnyApp} {
		for _, r := range id.Grants[a] {
			if r == right {
				return true
			}
		}
	}
	return false
}

// ErrUnknownKey is returned by a KeyStore for a key it does not hold.
var ErrUnknownKey = errors.New("unknown key")

// KeyStore says whose a public key is and what it may do. The server asks
// it at authentication and again for every command, so a revoked key stops
// working without a reconnect. Lookup is called from many goroutines at
// once and must be safe for that.
type KeyStore interface {
	// Lookup returns the key's identity, or an error wrapping
	// ErrUnknownKey.
	Lookup(key ssh.PublicKey) (Identity, error)
}

// FileKeyStore is a KeyStore kept in a file in the authorized_keys format,
// one key a line, its owner and rights in the options:
//
//	user="alice",deploy="blog,shop",run="blog",data="blog" ssh-ed25519 AAAA... alice@laptop
//	user="ci",deploy="*" ssh-ed25519 AAAA... ci
//
// user is required; deploy, run and data are comma-separated app names, "*"
// for every app. Blank lines and lines starting with # are ignored. The file
// is read again whenever its size or modification time changes; a file that
// fails to parse keeps the previous contents in force (and the error is
// returned by Reload and logged by the server).
type FileKeyStore struct {
	path string

	mu    sync.Mutex
	mtime time.Time
	size  int64
	keys  map[string]Identity // by ssh.FingerprintSHA256
	err   error
}

// OpenFileKeyStore reads the key file at path.
func OpenFileKeyStore(path string) (*FileKeyStore, error) {
	ks := &FileKeyStore{path: path}
	if err := ks.Reload(); err != nil {
		return nil, err
	}
	return ks, nil
}

// Reload reads the file if it changed since the last read.
func (ks *FileKeyStore) Reload() error {
	fi, err := os.Stat(ks.path)
	if err != nil {
		return fmt.Errorf("upload: key store %s: %w", ks.path, err)
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.keys != nil && fi.ModTime().Equal(ks.mtime) && fi.Size() == ks.size {
		return ks.err
	}
	data, err := os.ReadFile(ks.path)
	if err != nil {
		return fmt.Errorf("upload: key store %s: %w", ks.path, err)
	}
	keys, err := ParseKeyStore(data)
	ks.mtime, ks.size = fi.ModTime(), fi.Size()
	if err != nil {
		// The previous keys (if any) stay in force.
		ks.err = fmt.Errorf("upload: key store %s: %w", ks.path, err)
		return ks.err
	}
	ks.keys, ks.err = keys, nil
	return nil
}

// Lookup implements KeyStore.
func (ks *FileKeyStore) Lookup(key ssh.PublicKey) (Identity, error) {
	// A file that became unreadable or unparsable keeps the last good
	// contents in force rather than locking everyone out.
	_ = ks.Reload()
	ks.mu.Lock()
	defer ks.mu.Unlock()
	id, ok := ks.keys[ssh.FingerprintSHA256(key)]
	if !ok {
		return Identity{}, fmt.Errorf("upload: key %s: %w", ssh.FingerprintSHA256(key), ErrUnknownKey)
	}
	return id, nil
}

var userNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// ParseKeyStore parses the FileKeyStore format and returns the identities
// by key fingerprint (ssh.FingerprintSHA256).
func ParseKeyStore(data []byte) (map[string]Identity, error) {
	keys := map[string]Identity{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, _, opts, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		id := Identity{Grants: map[string][]Right{}}
		for _, o := range opts {
			name, val, ok := strings.Cut(o, "=")
			if !ok || len(val) < 2 || val[0] != '"' || val[len(val)-1] != '"' {
				return nil, fmt.Errorf("line %d: option %q is not name=\"value\"", n, o)
			}
			val = val[1 : len(val)-1]
			switch name {
			case "user":
				if !userNameRE.MatchString(val) {
					return nil, fmt.Errorf("line %d: user %q is not a valid name", n, val)
				}
				id.User = val
			case string(RightDeploy), string(RightRun), string(RightData):
				for _, app := range strings.Split(val, ",") {
					app = strings.TrimSpace(app)
					if app != AnyApp {
						if err := ValidAppName(app); err != nil {
							return nil, fmt.Errorf("line %d: %s: %w", n, name, err)
						}
					}
					id.Grants[app] = append(id.Grants[app], Right(name))
				}
			default:
				return nil, fmt.Errorf("line %d: unknown option %q (want user, deploy, run, data)", n, name)
			}
		}
		if id.User == "" {
			return nil, fmt.Errorf("line %d: no user=\"...\" option", n)
		}
		fp := ssh.FingerprintSHA256(key)
		if _, dup := keys[fp]; dup {
			return nil, fmt.Errorf("line %d: key %s is listed twice", n, fp)
		}
		keys[fp] = id
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return keys, nil
}

var appNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ErrBadAppName is wrapped by ValidAppName's errors.
var ErrBadAppName = errors.New("invalid app name")

// ValidAppName accepts 1 to 63 lower-case letters, digits and hyphens,
// starting with a letter or digit: a name that is safe as a path component,
// a host label and a command argument, with no "..", "/" or shell
// metacharacter.
func ValidAppName(name string) error {
	if !appNameRE.MatchString(name) {
		return fmt.Errorf("%w %q: use 1-63 lower-case letters, digits and '-', starting with a letter or digit", ErrBadAppName, name)
	}
	return nil
}
