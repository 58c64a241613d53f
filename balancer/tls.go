package balancer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
)

// ErrNoCertificate is returned by CertStore.GetCertificate when no
// certificate covers the requested server name.
var ErrNoCertificate = errors.New("balancer: no certificate for server name")

// CertStore holds TLS certificates loaded from a directory and picks one
// by SNI. Each pair is NAME.crt with NAME.key (PEM); a certificate serves
// every DNS name in its subject alternative names, wildcards included.
// Reload swaps the whole set atomically; a pair that fails to load is
// logged and skipped, and the others still load.
type CertStore struct {
	dir string
	log *slog.Logger
	cur atomic.Pointer[certSet]
}

type certSet struct {
	exact    map[string]*tls.Certificate
	wildcard map[string]*tls.Certificate // key: ".example.com"
	first    *tls.Certificate            // for clients without SNI
}

// NewCertStore loads the certificates in dir. It fails when dir cannot be
// read or holds no usable pair; unusable pairs next to usable ones are
// logged and skipped.
func NewCertStore(dir string, log *slog.Logger) (*CertStore, error) {
	if log == nil {
		log = slog.Default()
	}
	cs := &CertStore{dir: dir, log: log}
	err := cs.Reload()
	if set := cs.cur.Load(); set == nil || set.first == nil {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("balancer: no certificate pair (NAME.crt + NAME.key) in %s", dir)
	}
	// Bad pairs next to good ones were logged by Reload; serve the good ones.
	return cs, nil
}

// Reload re-reads the directory. On an unreadable directory the old set
// stays and the error is returned; bad pairs are skipped and reported in
// the returned error while the good ones are swapped in.
func (cs *CertStore) Reload() error {
	matches, err := filepath.Glob(filepath.Join(cs.dir, "*.crt"))
	if err == nil {
		_, err = os.Stat(cs.dir)
	}
	if err != nil {
		return fmt.Errorf("balancer: reading certificate directory %s: %w", cs.dir, err)
	}
	set := &certSet{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	var errs []error
	for _, crt := range matches {
		key := strings.TrimSuffix(crt, ".crt") + ".key"
		pair, err := tls.LoadX509KeyPair(crt, key)
		if err != nil {
			errs = append(errs, fmt.Errorf("certificate %s: %w", crt, err))
			continue
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			errs = append(errs, fmt.Errorf("certificate %s: %w", crt, err))
			continue
		}
		pair.Leaf = leaf
		c := &pair
		if set.first == nil {
			set.first = c
		}
		names := leaf.DNSNames
		if len(names) == 0 && leaf.Subject.CommonName != "" {
			names = []string{leaf.Subject.CommonName}
		}
		for _, n := range names {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			if strings.HasPrefix(n, "*.") {
				set.wildcard[n[1:]] = c
			} else {
				set.exact[n] = c
			}
		}
	}
	cs.cur.Store(set)
	if len(errs) > 0 {
		for _, e := range errs {
			cs.log.Error("balancer: skipping certificate", "err", e)
		}
		return errors.Join(errs...)
	}
	return nil
}

// GetCertificate picks the certificate for hello's server name: an exact
// name, then a wildcard one label up, then (without SNI) the first pair.
// It has the signature of tls.Config.GetCertificate.
func (cs *CertStore) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	set := cs.cur.Load()
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if name == "" {
		if set.first != nil {
			return set.first, nil
		}
		return nil, ErrNoCertificate
	}
	if c := set.exact[name]; c != nil {
		return c, nil
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c := set.wildcard[name[i:]]; c != nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrNoCertificate, hello.ServerName)
}
