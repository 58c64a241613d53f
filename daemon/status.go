package daemon

import (
	"encoding/json"
	"net/http"
	"time"
)

// MarshalJSON encodes the status with LastError as its message, so status
// pages and tools see the text of the error rather than an empty object.
func (s LoopStatus) MarshalJSON() ([]byte, error) {
	type plain struct {
		Name        string     `json:"name"`
		State       State      `json:"state"`
		Runs        int64      `json:"runs"`
		Restarts    int64      `json:"restarts"`
		Failures    int64      `json:"failures"`
		LastError   string     `json:"last_error,omitempty"`
		LastErrorAt *time.Time `json:"last_error_at,omitempty"`
		StartedAt   *time.Time `json:"started_at,omitempty"`
	}
	p := plain{Name: s.Name, State: s.State, Runs: s.Runs, Restarts: s.Restarts, Failures: s.Failures}
	if s.LastError != nil {
		p.LastError = s.LastError.Error()
		p.LastErrorAt = &s.LastErrorAt
	}
	if !s.StartedAt.IsZero() {
		p.StartedAt = &s.StartedAt
	}
	return json.Marshal(p)
}

// StatusHandler returns an http.Handler that answers with the daemon's name
// and every loop's status as JSON:
//
//	{"daemon": "heartbeat", "loops": [{"name": "status", "state": "running", ...}]}
//
// Mount it on an admin listener; it only reads.
func (d *Daemon) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(struct {
			Daemon string       `json:"daemon"`
			Loops  []LoopStatus `json:"loops"`
		}{d.cfg.Name, d.Status()})
	})
}
