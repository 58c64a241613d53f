package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/nexus"
	"github.com/paaskit/paaskit/zmqloop"
)

// Announcing the node to nexus, so that balancers find it (balancerd
// --nexus). Kept apart from main.go, which wires it in two lines.

type announceOptions struct {
	spec, id, advertise, keyID string
	interval                   time.Duration
}

const demoSecret = "paaskit-demo-secret-change-me"

func announceFlags(fs *flag.FlagSet) *announceOptions {
	a := &announceOptions{}
	host, _ := os.Hostname()
	fs.StringVar(&a.spec, "nexus", "", "announce this node to nexus: the resolvers (tcp://HOST:PORT,...) or etcd (etcd://HOST:PORT,...); the HMAC secret is $NEXUS_SECRET; empty = do not announce")
	fs.StringVar(&a.id, "node-id", host, "this node's stable id in nexus (kind runner)")
	fs.StringVar(&a.advertise, "advertise", "", "the front's address as balancers reach it (default: the --listen address as bound)")
	fs.StringVar(&a.keyID, "nexus-key-id", "k1", "id of the HMAC key")
	fs.DurationVar(&a.interval, "nexus-interval", nexus.DefaultInterval, "heartbeat interval (must match the resolvers')")
	return a
}

// add adds the announcer as the daemon's last loop, so it is the first to
// stop: the node says goodbye before its front closes.
func (a *announceOptions) add(d *daemon.Daemon, front, admin string, log *slog.Logger) error {
	if a.spec == "" {
		return nil
	}
	cfg, err := nexus.ParseSpec(a.spec)
	if err != nil {
		return fmt.Errorf("--nexus: %w", err)
	}
	if cfg.Backend == nexus.BackendResolvers {
		secret := os.Getenv("NEXUS_SECRET")
		if secret == "" {
			log.Warn("NEXUS_SECRET is not set; using the public demo secret")
			secret = demoSecret
		}
		ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: a.keyID, Secret: []byte(secret)})
		if err != nil {
			return fmt.Errorf("--nexus-key-id: %w", err)
		}
		if cfg.Codec, err = zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring}); err != nil {
			return err
		}
	}
	if a.id == "" {
		return errors.New("--node-id is required with --nexus (the host name is unknown)")
	}
	cfg.Interval, cfg.Logger = a.interval, log
	addr := a.advertise
	if addr == "" {
		addr = front
	}
	inst := nexus.Instance{Kind: "runner", ID: a.id, Endpoints: map[string]string{"http": addr}}
	if admin != "" {
		inst.Endpoints["admin"] = admin
	}
	ann, err := nexus.NewAnnouncerFor(cfg, inst)
	if err != nil {
		return fmt.Errorf("--nexus: %w", err)
	}
	log.Info("runnerd: announcing to nexus", "nexus", a.spec, "node", a.id, "http", addr)
	return d.Add("nexus", ann.Run)
}
