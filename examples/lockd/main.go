// Command lockd is the reference locker daemon for package lock: one member
// of the ZeroMQ locker pair, run as a main loop under package daemon.
//
// Usage:
//
//	LOCKD_SECRET=... lockd -id a -bind tcp://127.0.0.1:7400 -peer tcp://127.0.0.1:7401 -state /var/lib/lockd/a.json
//	LOCKD_SECRET=... lockd -id b -bind tcp://127.0.0.1:7401 -peer tcp://127.0.0.1:7400 -state /var/lib/lockd/b.json
//	LOCKD_SECRET=... lockd -acquire NAME -endpoints tcp://127.0.0.1:7400,tcp://127.0.0.1:7401
//
// Two members with each other as -peer are a pair: one grants, the other
// keeps a replica and takes over when the first stops answering (see the
// lock package doc). A member that becomes active with no replica to go on
// (the pair's first start, or after both were down) grants nothing for
// -cold-start-wait (by default -max-ttl), so no lease of an earlier run can
// still be live. -acquire is a one-shot client: it waits for the lease
// on NAME, prints its fencing token and releases it. The secret (at least
// 16 bytes) is the same on every member and client; without LOCKD_SECRET a
// demo secret is used and a warning logged. LOCKD_PEER_SECRET, set on both
// members only, gives them a key of their own for beats, syncs and
// replication, which they refuse under the client key.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/lock"
	"github.com/paaskit/paaskit/zmqloop"
)

const demoSecret = "paaskit-demo-secret-change-me"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, false))
}

// run is the whole program; noSignals is for tests, which stop it with ctx.
func run(ctx context.Context, args []string, stdout io.Writer, noSignals bool) int {
	fs := flag.NewFlagSet("lockd", flag.ContinueOnError)
	id := fs.String("id", "", "this member's id (serve mode; the two members differ)")
	bind := fs.String("bind", "tcp://127.0.0.1:7400", "endpoint clients and the peer reach this member on")
	peer := fs.String("peer", "", "the other member's endpoint (empty: a single locker)")
	state := fs.String("state", "", "file keeping the token epoch across restarts")
	heartbeat := fs.Duration("heartbeat", lock.DefaultHeartbeatInterval, "heartbeat interval between the members")
	failover := fs.Duration("failover-after", lock.DefaultFailoverAfter, "the standby takes over after this long without a word from the active member")
	maxTTL := fs.Duration("max-ttl", lock.DefaultServerMaxTTL, "longest lease granted")
	coldWait := fs.Duration("cold-start-wait", 0, "a member that becomes active without a replica (the pair's first start, or both were down) grants nothing for this long; 0: max-ttl, negative: none (only for a pair known to be new)")
	acquire := fs.String("acquire", "", "client mode: wait for the lease on this name, print its token, release it")
	endpoints := fs.String("endpoints", "tcp://127.0.0.1:7400", "client mode: comma-separated locker members")
	ttl := fs.Duration("ttl", 10*time.Second, "client mode: lease TTL")
	timeout := fs.Duration("timeout", 10*time.Second, "client mode: give up after this long")
	keyID := fs.String("key-id", "k1", "id of the HMAC key")
	lc := daemon.LogFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: lockd -id ID [flags] | lockd -acquire NAME [flags]\n\nA member of paaskit's ZeroMQ locker pair.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	lc.Name = "lockd"
	log, closeLog, err := daemon.NewLogger(*lc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lockd:", err)
		return 2
	}
	defer closeLog()
	secret := os.Getenv("LOCKD_SECRET")
	if secret == "" {
		log.Warn("LOCKD_SECRET is not set; using the public demo secret")
		secret = demoSecret
	}
	ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: *keyID, Secret: []byte(secret)})
	if err != nil {
		log.Error("bad key", "error", err)
		return 2
	}
	codec, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
	if err != nil {
		log.Error("bad codec config", "error", err)
		return 2
	}
	if *acquire != "" {
		z, err := lock.NewZMQ(lock.ZMQConfig{Endpoints: strings.Split(*endpoints, ","), Codec: codec, Logger: log})
		if err != nil {
			log.Error("bad client config", "error", err)
			return 2
		}
		defer z.Close()
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		l, err := z.Acquire(ctx, *acquire, *ttl)
		if err != nil {
			log.Error("acquire failed", "name", *acquire, "error", err)
			return 1
		}
		fmt.Fprintln(stdout, l.Token)
		if err := z.Release(ctx, l); err != nil {
			log.Error("release failed", "lease", l, "error", err)
			return 1
		}
		return 0
	}
	var peerCodec *zmqloop.Codec
	if ps := os.Getenv("LOCKD_PEER_SECRET"); ps != "" {
		// The members' own key: clients never get it, so they cannot forge
		// member-to-member traffic.
		pk := zmqloop.Key{ID: "lockd-peer", Secret: []byte(ps)}
		if err := ring.Add(pk); err != nil {
			log.Error("bad peer key", "error", err)
			return 2
		}
		pring, err := zmqloop.NewKeyRing(pk, zmqloop.Key{ID: *keyID, Secret: []byte(secret)})
		if err == nil {
			peerCodec, err = zmqloop.NewCodec(zmqloop.CodecConfig{Keys: pring})
		}
		if err != nil {
			log.Error("bad peer key", "error", err)
			return 2
		}
	}
	srv, err := lock.NewServer(lock.ServerConfig{ID: *id, Bind: *bind, Peer: *peer, Codec: codec, PeerCodec: peerCodec, StateFile: *state,
		HeartbeatInterval: *heartbeat, FailoverAfter: *failover, MaxTTL: *maxTTL, ColdStartWait: *coldWait, Logger: log})
	if err != nil {
		log.Error("cannot start", "error", err)
		return 2
	}
	d, err := daemon.New(daemon.Config{Name: "lockd", Logger: log, NoSignals: noSignals})
	if err == nil {
		err = d.Add("locker", srv.Run)
	}
	if err != nil {
		log.Error("cannot start", "error", err)
		return 2
	}
	go func() {
		select {
		case <-srv.Ready():
			log.Info("serving", "endpoint", srv.Endpoint(), "peer", *peer)
		case <-ctx.Done():
		}
	}()
	if err := d.Run(ctx); err != nil {
		return 1
	}
	return 0
}
