// Command nexusd runs a nexus resolver: it keeps the table of who runs
// what where from the heartbeats of every announcing service, and answers
// lookups and watches. Run two (or more), on different machines; they
// never talk to each other, announcers beat to all of them and clients
// ask any. The same binary asks a resolver set for a kind (--lookup).
//
// Usage:
//
//	NEXUS_SECRET=... nexusd [--bind tcp://0.0.0.0:7400] [flags]
//	NEXUS_SECRET=... nexusd --lookup runner --nexus tcp://a:7400,tcp://b:7400
//
// The secret (at least 16 bytes) must be the one every announcer and
// client uses; without NEXUS_SECRET a public demo secret is used and a
// warning logged. SIGTERM or SIGINT stop it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/nexus"
	"github.com/paaskit/paaskit/zmqloop"
)

const demoSecret = "paaskit-demo-secret-change-me"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, false))
}

// run is the whole program; noSignals is for tests, which stop it with
// ctx. started, when set, gets the resolver's endpoints once it serves.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, noSignals bool) int {
	return runWith(ctx, args, stdout, stderr, noSignals, nil)
}

func runWith(ctx context.Context, args []string, stdout, stderr io.Writer, noSignals bool, started func([]string)) int {
	fs := flag.NewFlagSet("nexusd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bind := fs.String("bind", "tcp://127.0.0.1:7400", "comma-separated endpoints the resolver serves on")
	name := fs.String("name", "", "the resolver's name in replies and logs (default: the first --bind)")
	interval := fs.Duration("interval", nexus.DefaultInterval, "the announcers' heartbeat interval")
	suspect := fs.Duration("suspect-after", 0, "an instance silent this long is suspect (default 3 intervals)")
	grace := fs.Duration("grace", 0, "a suspect instance silent this much longer is dropped (default 5 intervals)")
	keyID := fs.String("key-id", "k1", "id of the HMAC key (the secret is $NEXUS_SECRET)")
	lookup := fs.String("lookup", "", "client mode: print the live instances of this kind as JSON and exit")
	spec := fs.String("nexus", "tcp://127.0.0.1:7400", "client mode: the resolvers (tcp://HOST:PORT,...) or etcd (etcd://HOST:PORT,...)")
	lc := daemon.LogFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: nexusd [flags]\n       nexusd --lookup KIND --nexus SPEC\n\n"+
			"A nexus resolver: the table of who runs what where, kept from heartbeats.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nexusd: unexpected arguments %q\n", fs.Args())
		return 2
	}
	lc.Name = "nexusd"
	lc.Stderr = stderr
	log, closeLog, err := daemon.NewLogger(*lc)
	if err != nil {
		fmt.Fprintln(stderr, "nexusd:", err)
		return 2
	}
	defer closeLog()
	codec, err := newCodec(log, *keyID)
	if err != nil {
		log.Error("nexusd: bad key", "err", err)
		return 2
	}
	if *lookup != "" {
		return lookupOnce(ctx, log, codec, *spec, *lookup, stdout)
	}
	r, err := nexus.NewResolver(nexus.ResolverConfig{Bind: strings.Split(*bind, ","), Codec: codec, Name: *name,
		Interval: *interval, SuspectAfter: *suspect, Grace: *grace, Logger: log})
	if err != nil {
		log.Error("nexusd: cannot start", "err", err)
		return 2
	}
	d, err := daemon.New(daemon.Config{Name: "nexusd", Logger: log, NoSignals: noSignals})
	if err == nil {
		err = d.Add("resolver", r.Run)
	}
	if err != nil {
		log.Error("nexusd: cannot start", "err", err)
		return 2
	}
	if started != nil {
		go func() {
			select {
			case <-r.Ready():
				started(r.Endpoints())
			case <-ctx.Done():
			}
		}()
	}
	if err := d.Run(ctx); err != nil {
		return 1
	}
	return 0
}

func newCodec(log *slog.Logger, keyID string) (*zmqloop.Codec, error) {
	secret := os.Getenv("NEXUS_SECRET")
	if secret == "" {
		log.Warn("NEXUS_SECRET is not set; using the public demo secret")
		secret = demoSecret
	}
	ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: keyID, Secret: []byte(secret)})
	if err != nil {
		return nil, err
	}
	return zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
}

func lookupOnce(ctx context.Context, log *slog.Logger, codec *zmqloop.Codec, spec, kind string, stdout io.Writer) int {
	cfg, err := nexus.ParseSpec(spec)
	if err != nil {
		log.Error("nexusd: --nexus", "err", err)
		return 2
	}
	cfg.Codec, cfg.Logger = codec, log
	dir, err := nexus.Open(cfg)
	if err != nil {
		log.Error("nexusd: --nexus", "err", err)
		return 2
	}
	defer dir.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	es, err := dir.Lookup(ctx, kind)
	if err != nil {
		log.Error("nexusd: lookup failed", "kind", kind, "err", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(es)
	return 0
}
