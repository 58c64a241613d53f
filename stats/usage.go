package stats

import (
	"sync"
	"time"
)

// AppUsage is one app's usage as its runner reports it: totals since the
// app's counters started (CPU time of all its instances, requests served)
// and the current peak memory of its instance.
type AppUsage struct {
	App             string
	CPU             time.Duration
	PeakMemoryBytes int64
	Requests        uint64
}

// UsageMeter turns periodic usage reports into usage records: it emits
// the increments since the previous report (CPU seconds and requests) and
// the peak memory, which the PostgreSQL sink rolls up per app and hour
// (sums, and the peak). A total that went down (a runner restarted, its
// counters with it) counts from zero. It is safe for concurrent use.
type UsageMeter struct {
	e    *Emitter
	mu   sync.Mutex
	prev map[string]AppUsage
}

// NewUsageMeter returns a meter emitting through e.
func NewUsageMeter(e *Emitter) *UsageMeter {
	return &UsageMeter{e: e, prev: map[string]AppUsage{}}
}

// Observe records one report, taken at at, of every app's usage. An app
// seen for the first time counts from zero, so its whole total so far is
// billed to at's hour.
func (m *UsageMeter) Observe(at time.Time, apps []AppUsage) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, u := range apps {
		if !validApp(u.App) {
			continue
		}
		p := m.prev[u.App]
		cpu := u.CPU - p.CPU
		if u.CPU < p.CPU {
			cpu = u.CPU
		}
		reqs := u.Requests - p.Requests
		if u.Requests < p.Requests {
			reqs = u.Requests
		}
		if cpu > 0 {
			m.e.usage(u.App, UsageCPUSeconds, cpu.Seconds(), at)
		}
		if reqs > 0 {
			m.e.usage(u.App, UsageRequests, float64(reqs), at)
		}
		if u.PeakMemoryBytes > 0 {
			m.e.usage(u.App, UsagePeakMemory, float64(u.PeakMemoryBytes), at)
		}
		m.prev[u.App] = u
	}
}
