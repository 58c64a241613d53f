package nexus

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/paaskit/paaskit/zmqloop"
)

// Backend names a directory backend.
type Backend string

const (
	// BackendResolvers is the embedded default: a pair (or more) of
	// Resolvers over zmqloop.
	BackendResolvers Backend = "resolvers"
	// BackendEtcd keeps the directory in etcd.
	BackendEtcd Backend = "etcd"
)

// Config picks and configures a backend, so that a daemon takes one
// --nexus flag and works on either. Zero values are the documented
// defaults.
type Config struct {
	// Backend is BackendResolvers (the default, also for "") or
	// BackendEtcd.
	Backend Backend
	// Endpoints are the resolvers' endpoints ("tcp://10.0.0.1:7400") or
	// etcd's client URLs ("http://10.0.0.1:2379"). Required.
	Endpoints []string
	// Codec signs and verifies resolver traffic. Required for
	// BackendResolvers, unused for etcd.
	Codec *zmqloop.Codec
	// Interval is the heartbeat interval of resolver announcers (default
	// DefaultInterval); TTL the lease of etcd announcements (default
	// DefaultEtcdTTL). Each backend ignores the other's.
	Interval, TTL time.Duration
	// EtcdPrefix is the etcd key prefix; default DefaultEtcdPrefix.
	EtcdPrefix string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// ParseSpec reads the --nexus flag of the reference daemons: a
// comma-separated list of resolver endpoints ("tcp://a:7400,tcp://b:7400")
// for the resolver backend, or "etcd://" followed by a comma-separated
// list of etcd host:port addresses ("etcd://10.0.0.1:2379,10.0.0.2:2379")
// for etcd.
func ParseSpec(spec string) (Config, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return Config{}, fmt.Errorf("%w: empty nexus spec: want tcp://HOST:PORT,... or etcd://HOST:PORT,...", ErrInvalid)
	}
	if rest, ok := strings.CutPrefix(spec, "etcd://"); ok {
		var eps []string
		for _, hp := range strings.Split(rest, ",") {
			hp = strings.TrimSpace(hp)
			if hp == "" || strings.Contains(hp, "/") {
				return Config{}, fmt.Errorf("%w: nexus spec %q: etcd address %q: want HOST:PORT", ErrInvalid, spec, hp)
			}
			eps = append(eps, "http://"+hp)
		}
		return Config{Backend: BackendEtcd, Endpoints: eps}, nil
	}
	var eps []string
	for _, ep := range strings.Split(spec, ",") {
		ep = strings.TrimSpace(ep)
		if !strings.HasPrefix(ep, "tcp://") && !strings.HasPrefix(ep, "ipc://") {
			return Config{}, fmt.Errorf("%w: nexus spec %q: resolver endpoint %q: want tcp://HOST:PORT (or etcd://HOST:PORT,... for etcd)",
				ErrInvalid, spec, ep)
		}
		eps = append(eps, ep)
	}
	return Config{Backend: BackendResolvers, Endpoints: eps}, nil
}

func (c *Config) check() error {
	switch c.Backend {
	case "", BackendResolvers, BackendEtcd:
	default:
		return fmt.Errorf("%w: unknown nexus backend %q (want %q or %q)", ErrInvalid, c.Backend, BackendResolvers, BackendEtcd)
	}
	if len(c.Endpoints) == 0 {
		return fmt.Errorf("%w: nexus config: Endpoints is required", ErrInvalid)
	}
	if c.Backend != BackendEtcd && c.Codec == nil {
		return fmt.Errorf("%w: nexus config: the resolver backend needs a Codec", ErrInvalid)
	}
	return nil
}

func (c *Config) etcd() (*Etcd, error) {
	return NewEtcd(EtcdConfig{Endpoints: c.Endpoints, Prefix: c.EtcdPrefix, TTL: c.TTL, Logger: c.Logger})
}

// Open returns the Directory cfg names.
func Open(cfg Config) (Directory, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Backend == BackendEtcd {
		return cfg.etcd()
	}
	return NewClient(ClientConfig{Resolvers: cfg.Endpoints, Codec: cfg.Codec, Logger: cfg.Logger})
}

// NewAnnouncerFor returns an Announcer of inst on the backend cfg names.
// An etcd announcer dials its own client and closes it when Run returns.
func NewAnnouncerFor(cfg Config, inst Instance) (Announcer, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Backend != BackendEtcd {
		return NewAnnouncer(AnnouncerConfig{Resolvers: cfg.Endpoints, Codec: cfg.Codec, Instance: inst,
			Interval: cfg.Interval, Logger: cfg.Logger})
	}
	if err := inst.Validate(); err != nil {
		return nil, err
	}
	e, err := cfg.etcd()
	if err != nil {
		return nil, err
	}
	a, err := e.Announcer(inst)
	if err != nil {
		e.Close()
		return nil, err
	}
	return closingAnnouncer{a, e}, nil
}

type closingAnnouncer struct {
	*EtcdAnnouncer
	e *Etcd
}

func (c closingAnnouncer) Run(ctx context.Context) error {
	defer c.e.Close()
	return c.EtcdAnnouncer.Run(ctx)
}
