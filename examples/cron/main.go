// Command cron is the reference "run this job once across the cluster"
// daemon for package lock: run it on two (or more) nodes with the same job
// and schedule, and each period the job runs on exactly one of them.
//
// Usage:
//
//	LOCKD_SECRET=... cron -job backup -every 1m -lock zmq:tcp://a:7400,tcp://b:7400 -- /usr/local/bin/backup
//	cron -job backup -every 1m -lock redis:127.0.0.1:6379 -- ...
//	cron -job backup -every 1m -lock postgres:postgres://user@host/db -- ...
//	cron -job backup -every 1m -lock etcd:http://127.0.0.1:2379 -- ...
//
// At the start of each period (wall-clock multiples of -every) every node
// tries the lease named JOB@PERIOD-START (TTL: the period). The winner runs
// the command under that lease (lock.HoldLease with lock.Command): in a process group of its own, with
// PAASKIT_LOCK_NAME and PAASKIT_LOCK_TOKEN in its environment (pass the
// token to whatever it writes), killed the moment the lease can no longer
// be renewed. The lease is left to expire rather than released, so a node
// whose clock is a little behind finds the period taken. The losers log
// that the period is taken and wait for the next.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/paaskit/paaskit/daemon"
	"github.com/paaskit/paaskit/lock"
	"github.com/paaskit/paaskit/zmqloop"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const demoSecret = "paaskit-demo-secret-change-me"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, false))
}

func run(ctx context.Context, args []string, stdout io.Writer, noSignals bool) int {
	fs := flag.NewFlagSet("cron", flag.ContinueOnError)
	job := fs.String("job", "", "the job's name (the same on every node)")
	every := fs.Duration("every", time.Minute, "the period: the job runs once per multiple of it")
	lockSpec := fs.String("lock", "zmq:tcp://127.0.0.1:7400", "lock backend: zmq:ENDPOINTS, redis:ADDR, postgres:URL or etcd:ENDPOINTS")
	lc := daemon.LogFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: cron -job NAME -every D -lock BACKEND:ADDR -- command [args]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	lc.Name = "cron"
	log, closeLog, err := daemon.NewLogger(*lc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cron:", err)
		return 2
	}
	defer closeLog()
	if *job == "" || fs.NArg() == 0 || *every < 100*time.Millisecond {
		log.Error("need -job, -every of at least 100ms, and a command after --")
		return 2
	}
	lk, closeLk, err := openLocker(ctx, *lockSpec, log)
	if err != nil {
		log.Error("cannot open the lock backend", "lock", *lockSpec, "error", err)
		return 2
	}
	defer closeLk()
	d, err := daemon.New(daemon.Config{Name: "cron", Logger: log, NoSignals: noSignals})
	if err == nil {
		err = d.Add("schedule", func(ctx context.Context) error {
			return schedule(ctx, log, lk, *job, *every, fs.Args())
		})
	}
	if err != nil {
		log.Error("cannot start", "error", err)
		return 2
	}
	if err := d.Run(ctx); err != nil {
		return 1
	}
	return 0
}

// schedule runs the job once per period on whichever node wins the period.
func schedule(ctx context.Context, log *slog.Logger, lk lock.Locker, job string, every time.Duration, argv []string) error {
	for {
		now := time.Now()
		next := now.Truncate(every).Add(every)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next.Sub(now)):
		}
		name := fmt.Sprintf("%s@%d", job, next.UnixMilli())
		// A try, not a wait: the period belongs to whoever asks first.
		tctx, cancel := context.WithTimeout(ctx, every/2)
		l, err := lk.TryAcquire(tctx, name, every)
		cancel()
		if errors.Is(err, lock.ErrHeld) {
			log.Info("period taken by another node", "lock", name)
			continue
		}
		if err != nil {
			log.Warn("cannot ask for the period", "lock", name, "error", err)
			continue
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		hctx, cancel := context.WithTimeout(ctx, every)
		err = lock.HoldLease(hctx, lk, l, lock.HoldOptions{KeepLease: true}, lock.Command(cmd))
		cancel()
		log.Info("job ran", "lock", name, "error", err)
	}
}

func openLocker(ctx context.Context, spec string, log *slog.Logger) (lock.Locker, func(), error) {
	kind, addr, ok := strings.Cut(spec, ":")
	if !ok || addr == "" {
		return nil, nil, fmt.Errorf("lock spec %q: want BACKEND:ADDRESS", spec)
	}
	switch kind {
	case "zmq":
		secret := os.Getenv("LOCKD_SECRET")
		if secret == "" {
			log.Warn("LOCKD_SECRET is not set; using the public demo secret")
			secret = demoSecret
		}
		ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: "k1", Secret: []byte(secret)})
		if err != nil {
			return nil, nil, err
		}
		codec, err := zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring})
		if err != nil {
			return nil, nil, err
		}
		z, err := lock.NewZMQ(lock.ZMQConfig{Endpoints: strings.Split(addr, ","), Codec: codec, Logger: log})
		if err != nil {
			return nil, nil, err
		}
		return z, func() { z.Close() }, nil
	case "redis":
		c := redis.NewClient(&redis.Options{Addr: addr})
		r, err := lock.NewRedis(lock.RedisConfig{Client: c})
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		return r, func() { c.Close() }, nil
	case "postgres":
		pool, err := pgxpool.New(ctx, addr)
		if err != nil {
			return nil, nil, err
		}
		p, err := lock.NewPostgres(ctx, lock.PostgresConfig{Pool: pool})
		if err != nil {
			pool.Close()
			return nil, nil, err
		}
		return p, pool.Close, nil
	case "etcd":
		c, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(addr, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return nil, nil, err
		}
		e, err := lock.NewEtcd(lock.EtcdConfig{Client: c})
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		return e, func() { c.Close() }, nil
	}
	return nil, nil, fmt.Errorf("lock spec %q: unknown backend %q (zmq, redis, postgres, etcd)", spec, kind)
}
