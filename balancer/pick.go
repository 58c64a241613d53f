package balancer

import "math"

// startInflight counts a request toward be's load (and the mean of
// bounded-load mode) from its pick; endInflight, called exactly once for
// each startInflight, ends it when the exchange is wholly over: the
// response body relayed or cut, a tunnel closed, or the attempt given up
// (a failed connection, a hand-off, a retry on another node). Both
// forwarders and ServeHTTP count this way, so NodeStatus.InFlight and
// bounded load mean the same whichever path served a request.
func (p *Proxy) startInflight(be *backend) {
	be.inflight.Add(1)
	p.total.Add(1)
}

func (p *Proxy) endInflight(be *backend) {
	be.inflight.Add(-1)
	p.total.Add(-1)
}

// pick returns the first usable node in the host's order.
func (p *Proxy) pick(b *bound, pl *pool, h uint64, tried []int32) (int32, *backend) {
	n := len(pl.nodes)
	capLoad := int64(math.MaxInt64)
	if p.cfg.BoundedLoad > 0 {
		mean := float64(p.total.Load()+1) / float64(len(b.be))
		c := int64(p.cfg.BoundedLoad*mean + 0.999999)
		capLoad = max(c, int64(p.cfg.BoundedLoadFloor))
	}
	var fallback *backend
	fallbackIdx := int32(-1)
	probes := min(4*n, 64)
	if probes < 4 {
		probes = 4
	}
	usable := func(idx int32) *backend {
		for _, t := range tried {
			if t == idx {
				return nil
			}
		}
		be := b.be[idx]
		if be.ejected.Load() {
			return nil
		}
		return be
	}
	for i := 0; i < probes; i++ {
		idx := pl.at(h, i)
		be := usable(idx)
		if be == nil {
			continue
		}
		if be.inflight.Load() < capLoad {
			return idx, be
		}
		if fallback == nil {
			fallback, fallbackIdx = be, idx
		}
	}
	// Walk the whole pool from the host's position.
	start := int(h % uint64(n))
	for k := 0; k < n; k++ {
		idx := pl.nodes[(start+k)%n]
		be := usable(idx)
		if be == nil {
			continue
		}
		if be.inflight.Load() < capLoad {
			return idx, be
		}
		if fallback == nil {
			fallback, fallbackIdx = be, idx
		}
	}
	return fallbackIdx, fallback
}
