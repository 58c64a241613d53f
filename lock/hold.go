package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// HoldOptions tunes Hold. Zero values are the documented defaults.
type HoldOptions struct {
	// TTL is the lease's time to live. Default 10s.
	TTL time.Duration
	// RenewEvery is how often the lease is renewed. Default TTL/3, so two
	// renewals in a row may fail before the lease runs out. A renewal
	// that fails for any reason but ErrNotHeld is tried again after a
	// quarter of RenewEvery.
	RenewEvery time.Duration
	// Margin is how long before the lease's Expires the function is
	// stopped if no renewal has succeeded: the time it needs to notice
	// and stop. Default TTL/10.
	Margin time.Duration
	// KeepLease leaves the lease to expire when fn returns instead of
	// releasing it: for a job run once per period under a lock named for
	// the period, so that a node that comes to the same period late finds
	// it taken rather than running the job again.
	KeepLease bool
	// Now is the clock the deadline is reckoned on: the Locker's own (its
	// Config's Now), since Lease.Expires comes from it. Default time.Now.
	Now Clock
}

func (o HoldOptions) withDefaults() (HoldOptions, error) {
	if o.TTL == 0 {
		o.TTL = 10 * time.Second
	}
	if err := checkTTL(o.TTL); err != nil {
		return o, err
	}
	if o.RenewEvery == 0 {
		o.RenewEvery = o.TTL / 3
	}
	if o.Margin == 0 {
		o.Margin = o.TTL / 10
	}
	if o.RenewEvery <= 0 || o.RenewEvery >= o.TTL || o.Margin < 0 || o.Margin >= o.TTL {
		return o, fmt.Errorf("%w: hold options RenewEvery %v, Margin %v for TTL %v", ErrInvalid, o.RenewEvery, o.Margin, o.TTL)
	}
	return o, nil
}

// Hold runs fn only while it holds the lease on name: it waits for the
// lease (Acquire), runs fn with a context that is cancelled the moment the
// lease can no longer be renewed (a renewal refused with ErrNotHeld, or
// the lease's Expires less Margin passing without a successful renewal,
// whatever the reason: a partition, a dead backend), renews it every
// RenewEvery meanwhile, and releases it when fn returns. This is "run this
// cron job once across the cluster": the job stops when another node may
// start it, instead of running on alongside it.
//
// fn gets a copy of the lease, whose Token it should pass to whatever it
// writes. fn must return promptly once its ctx is cancelled; Hold waits
// for it. If the lease was lost, Hold returns an error wrapping
// ErrLeaseLost (and fn's error, if any); otherwise fn's error.
func Hold(ctx context.Context, lk Locker, name string, opts HoldOptions, fn func(ctx context.Context, l Lease) error) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	l, err := lk.Acquire(ctx, name, opts.TTL)
	if err != nil {
		return err
	}
	return holdLease(ctx, lk, l, opts, fn)
}

// HoldLease is Hold for a lease the caller already has (from TryAcquire,
// say): it runs fn under l, renewing it, exactly as Hold does after its
// Acquire. opts.TTL is taken from l.
func HoldLease(ctx context.Context, lk Locker, l *Lease, opts HoldOptions, fn func(ctx context.Context, l Lease) error) error {
	if err := checkLease(l); err != nil {
		return err
	}
	opts.TTL = l.TTL
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	return holdLease(ctx, lk, l, opts, fn)
}

func holdLease(ctx context.Context, lk Locker, l *Lease, opts HoldOptions, fn func(ctx context.Context, l Lease) error) error {
	jobCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan error, 1)
	// fn gets its copy now: Renew below updates l.Expires on this
	// goroutine, so the copy must not be taken inside fn's goroutine.
	lease := *l
	go func() { done <- fn(jobCtx, lease) }()

	lost := func(cause error) {
		cancel(fmt.Errorf("%w: %v: %v", ErrLeaseLost, l, cause))
	}
	// A timer, not a ticker: a renewal that fails for a passing reason (a
	// dropped connection, a slow reply) is tried again after a quarter of
	// RenewEvery rather than a whole one, so one such failure does not use
	// up a third of the lease.
	renew := time.NewTimer(opts.RenewEvery)
	defer renew.Stop()
	var fnErr error
	deadline := time.NewTimer(l.Expires.Sub(opts.Now.now()) - opts.Margin)
	defer deadline.Stop()
loop:
	for {
		select {
		case fnErr = <-done:
			break loop
		case <-deadline.C:
			lost(errors.New("no renewal succeeded before its expiry"))
		case <-renew.C:
			if context.Cause(jobCtx) != nil && errors.Is(context.Cause(jobCtx), ErrLeaseLost) {
				continue // fn is being stopped; wait for it to return
			}
			// A timeout, not a deadline: durations between two readings of
			// one clock survive a jump of that clock, a wall-clock
			// deadline would not.
			rctx, rcancel := context.WithTimeout(jobCtx, l.Expires.Sub(opts.Now.now())-opts.Margin)
			err := lk.Renew(rctx, l)
			rcancel()
			switch {
			case err == nil:
				deadline.Reset(l.Expires.Sub(opts.Now.now()) - opts.Margin)
				renew.Reset(opts.RenewEvery)
			case errors.Is(err, ErrNotHeld):
				lost(err)
			default:
				// A dropped connection, a timeout: tried again soon; the
				// deadline timer stops fn if none succeeds in time.
				renew.Reset(opts.RenewEvery / 4)
			}
		}
	}
	cause := context.Cause(jobCtx)
	if cause != nil && errors.Is(cause, ErrLeaseLost) {
		if fnErr != nil && !errors.Is(fnErr, context.Canceled) {
			return errors.Join(cause, fnErr)
		}
		return cause
	}
	if opts.KeepLease {
		return fnErr
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), opts.TTL)
	defer rcancel()
	if err := lk.Release(rctx, l); err != nil && !errors.Is(err, ErrNotHeld) && fnErr == nil {
		// fn finished under the lease; a failed release only delays the
		// next holder by the TTL, so it is not fn's failure.
		_ = err
	}
	return fnErr
}

// HoldCommand runs cmd under Hold: the command starts once the lease is
// held, in a process group of its own, and the whole group is killed
// (SIGKILL) the moment the lease can no longer be renewed or ctx is
// cancelled. The command's environment (cmd.Env, or this process's if
// nil) gets PAASKIT_LOCK_NAME and PAASKIT_LOCK_TOKEN, so the job can pass
// its fencing token to what it writes. It returns the command's error, or
// one wrapping ErrLeaseLost if it was killed for that. cmd must not have
// been started; HoldCommand sets its SysProcAttr.Setpgid.
func HoldCommand(ctx context.Context, lk Locker, name string, opts HoldOptions, cmd *exec.Cmd) error {
	if cmd == nil || cmd.Process != nil {
		return fmt.Errorf("%w: HoldCommand needs an unstarted command", ErrInvalid)
	}
	return Hold(ctx, lk, name, opts, Command(cmd))
}

// Command adapts cmd into a function for Hold or HoldLease, as HoldCommand
// runs it: started once the lease is held, in its own process group, with
// the lease's name and token in its environment, and the group killed
// when the function's ctx is cancelled.
func Command(cmd *exec.Cmd) func(ctx context.Context, l Lease) error {
	return func(ctx context.Context, l Lease) error {
		if cmd == nil || cmd.Process != nil {
			return fmt.Errorf("%w: an unstarted command is needed", ErrInvalid)
		}
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.Setpgid = true
		if cmd.Env == nil {
			cmd.Env = os.Environ()
		}
		cmd.Env = append(cmd.Env, "PAASKIT_LOCK_NAME="+l.Name, "PAASKIT_LOCK_TOKEN="+strconv.FormatUint(l.Token, 10))
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("lock: start %s under %v: %w", cmd.Path, &l, err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			return err
		case <-ctx.Done():
			// Kill the group, not just the leader: a shell's children
			// would otherwise go on writing.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			return fmt.Errorf("lock: %s killed: %w", cmd.Path, context.Cause(ctx))
		}
	}
}
