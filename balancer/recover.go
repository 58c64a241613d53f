package balancer

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
)

// errHookPanicked is what a hook that panicked counts as: an error, so
// the request it was called for is answered (502) and the proxy goes on.
var errHookPanicked = errors.New("hook panicked")

// callOnMiss is Config.OnMiss with a panic in it logged with its stack
// and returned as an error, which answers the request 502.
func (p *Proxy) callOnMiss(ctx context.Context, m Miss) (err error) {
	defer func() {
		if v := recover(); v != nil {
			p.hookPanic("OnMiss", v)
			err = fmt.Errorf("OnMiss for %s: %w: %v", m.Host, errHookPanicked, v)
		}
	}()
	return p.cfg.OnMiss(ctx, m)
}

func (p *Proxy) hookPanic(where string, v any) {
	p.panics.Add(1)
	p.log.Error("balancer: panic recovered", "in", where, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
}
