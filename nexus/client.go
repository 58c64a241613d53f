package nexus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/paaskit/paaskit/zmqloop"
)

// Defaults for ClientConfig's zero values.
const (
	DefaultTryTimeout    = 100 * time.Millisecond
	DefaultLookupTimeout = 5 * time.Second
)

// ClientConfig configures a Client. Zero values are the documented
// defaults.
type ClientConfig struct {
	// Resolvers are the resolvers' endpoints. Required.
	Resolvers []string
	// Codec signs and verifies. Required.
	Codec *zmqloop.Codec
	// TryTimeout is how long a lookup waits for one resolver before it
	// asks the next as well (the first answer wins; see
	// zmqloop.ClientConfig). Default DefaultTryTimeout (100ms).
	TryTimeout time.Duration
	// Timeout bounds a lookup whose ctx has no deadline. Default
	// DefaultLookupTimeout (5s).
	Timeout time.Duration
	// WatchWait is how long a watch request waits at a resolver for a
	// change; a resolver that does not answer within WatchWait plus
	// Timeout is taken for down. Default DefaultWatchWait (5s).
	WatchWait time.Duration
	// Curve, if set, encrypts the transport.
	Curve *zmqloop.Curve
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Client is the Directory served by a set of resolvers. Lookups go to any
// resolver and fail over between them; a resolver that has just started
// (and so may not have heard every heartbeat yet) says so, and the client
// then prefers another's answer. A watch follows every resolver and merges
// their views: an instance is listed while any resolver that answers lists
// it, and is taken out only when one that has run for a full heartbeat
// interval no longer does.
type Client struct {
	cfg  ClientConfig
	log  *slog.Logger
	all  *zmqloop.Client
	each []*zmqloop.Client

	ctx    context.Context // cancelled by Close, to end watches
	cancel context.CancelFunc
	wg     sync.WaitGroup

	cacheMu sync.Mutex
	cache   map[string]*cachedKind
}

var _ Directory = (*Client)(nil)

// NewClient validates cfg and returns a client. It connects lazily.
func NewClient(cfg ClientConfig) (*Client, error) {
	if len(cfg.Resolvers) == 0 {
		return nil, fmt.Errorf("%w: client: Resolvers is required", ErrInvalid)
	}
	if cfg.Codec == nil {
		return nil, fmt.Errorf("%w: client: Codec is required", ErrInvalid)
	}
	if cfg.TryTimeout < 0 || cfg.Timeout < 0 || cfg.WatchWait < 0 {
		return nil, fmt.Errorf("%w: client: negative TryTimeout %v, Timeout %v or WatchWait %v", ErrInvalid, cfg.TryTimeout, cfg.Timeout, cfg.WatchWait)
	}
	if cfg.TryTimeout == 0 {
		cfg.TryTimeout = DefaultTryTimeout
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultLookupTimeout
	}
	if cfg.WatchWait == 0 {
		cfg.WatchWait = DefaultWatchWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Resolvers = append([]string(nil), cfg.Resolvers...)
	all, err := zmqloop.NewClient(zmqloop.ClientConfig{Endpoints: cfg.Resolvers, Codec: cfg.Codec, Curve: cfg.Curve,
		TryTimeout: cfg.TryTimeout, Timeout: cfg.Timeout, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("nexus: client: %w", err)
	}
	c := &Client{cfg: cfg, log: cfg.Logger, all: all, cache: map[string]*cachedKind{}}
	if len(cfg.Resolvers) > 1 {
		for _, ep := range cfg.Resolvers {
			one, err := c.single(ep, cfg.Timeout)
			if err != nil {
				c.Close()
				return nil, err
			}
			c.each = append(c.each, one)
		}
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

func (c *Client) single(ep string, try time.Duration) (*zmqloop.Client, error) {
	// One endpoint: TryTimeout past the call's own timeout, so a slow
	// answer is waited for rather than asked for again.
	one, err := zmqloop.NewClient(zmqloop.ClientConfig{Endpoints: []string{ep}, Codec: c.cfg.Codec, Curve: c.cfg.Curve,
		TryTimeout: try + time.Second, Timeout: try, Logger: c.log})
	if err != nil {
		return nil, fmt.Errorf("nexus: client: %w", err)
	}
	return one, nil
}

// Close releases the client's sockets and ends its watches.
func (c *Client) Close() error {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	err := c.all.Close()
	for _, one := range c.each {
		one.Close()
	}
	return err
}

type lookupReply struct {
	Resolver  string  `json:"resolver"`
	Warm      bool    `json:"warm"`
	Epoch     string  `json:"epoch"`
	Seq       uint64  `json:"seq"`
	Unchanged bool    `json:"unchanged"`
	Entries   []Entry `json:"entries"`
}

// cachedKind is the last answer for a kind: a lookup asks whether it is
// still current, and a resolver that says so sends no entries.
type cachedKind struct {
	epoch   string
	seq     uint64
	entries []Entry
}

func cloneEntries(es []Entry) []Entry {
	out := make([]Entry, len(es))
	for i, e := range es {
		out[i] = e
		out[i].Instance = e.Instance.clone()
	}
	return out
}

func (c *Client) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.cfg.Timeout)
}

// Lookup returns the live instances of kind from any resolver, preferring
// one that is warm. The client keeps the last answer per kind and asks
// whether it is still current, so a lookup of an unchanged kind costs a
// small message each way, whatever the kind's size. The slice is the
// caller's, but the entries' Endpoints and Meta maps are shared with
// other results of lookups of the kind: read them, do not modify them.
func (c *Client) Lookup(ctx context.Context, kind string) ([]Entry, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	c.cacheMu.Lock()
	held := c.cache[kind]
	c.cacheMu.Unlock()
	q := kindReq{Kind: kind}
	if held != nil {
		q.IfEpoch, q.IfSeq = held.epoch, held.seq
	}
	body, _ := json.Marshal(q)
	var rep lookupReply
	if err := c.callWarm(ctx, TypeLookup, body, &rep, func() bool { return rep.Warm }); err != nil {
		return nil, fmt.Errorf("nexus: lookup %q: %w", kind, err)
	}
	if rep.Unchanged && held != nil && rep.Epoch == held.epoch && rep.Seq == held.seq {
		return append([]Entry(nil), held.entries...), nil
	}
	if rep.Entries == nil {
		rep.Entries = []Entry{}
	}
	if rep.Epoch != "" {
		c.cacheMu.Lock()
		c.cache[kind] = &cachedKind{epoch: rep.Epoch, seq: rep.Seq, entries: cloneEntries(rep.Entries)}
		c.cacheMu.Unlock()
	}
	return rep.Entries, nil
}

// Get returns one live instance, or an error wrapping ErrNotFound.
func (c *Client) Get(ctx context.Context, kind, id string) (Entry, error) {
	if err := checkKind(kind); err != nil {
		return Entry{}, err
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	body, _ := json.Marshal(kindReq{Kind: kind, ID: id})
	var rep getReply
	err := c.callWarm(ctx, TypeGet, body, &rep, func() bool { return rep.Warm })
	var re *zmqloop.RemoteError
	if errors.As(err, &re) && re.Code == CodeNotFound {
		return Entry{}, fmt.Errorf("nexus: get %s/%s: %w", kind, id, ErrNotFound)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("nexus: get %s/%s: %w", kind, id, err)
	}
	return rep.Entry, nil
}

// callWarm calls any resolver; if the answer comes from one that is not
// warm yet, it asks each resolver in turn for a warm answer and keeps the
// first answer if none has one. A not-found from a resolver that is not
// warm counts as a cold answer too.
func (c *Client) callWarm(ctx context.Context, typ string, body json.RawMessage, out any, warm func() bool) error {
	raw, err := c.all.Call(ctx, typ, body)
	coldMiss := false
	var re *zmqloop.RemoteError
	if errors.As(err, &re) && re.Code == CodeNotFound && len(c.each) > 0 {
		coldMiss = true // retried below: a warm resolver may know it
	} else if err != nil {
		return err
	} else if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode reply: %w", err)
	}
	if !coldMiss && (warm() || len(c.each) == 0) {
		return nil
	}
	first, firstErr := raw, err
	for _, one := range c.each {
		octx, cancel := context.WithTimeout(ctx, c.cfg.TryTimeout*5)
		raw, err := one.Call(octx, typ, body)
		cancel()
		if err != nil {
			continue
		}
		if json.Unmarshal(raw, out) == nil && warm() {
			return nil
		}
	}
	if firstErr != nil {
		return firstErr
	}
	return json.Unmarshal(first, out)
}

// Watch follows kind on every resolver (see Directory.Watch and Client).
func (c *Client) Watch(ctx context.Context, kind string) (<-chan Event, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, cancel)
	n := len(c.cfg.Resolvers)
	w := &watch{kind: kind, log: c.log, out: make(chan Event, 64), views: make([]map[string]Entry, n),
		up: make([]bool, n), warm: make([]bool, n), heard: make([]bool, n), merged: map[string]Entry{}}
	updates := make(chan pollResult)
	clients := make([]*zmqloop.Client, n)
	for i, ep := range c.cfg.Resolvers {
		one, err := c.single(ep, c.cfg.WatchWait+c.cfg.Timeout)
		if err != nil {
			for _, o := range clients[:i] {
				o.Close()
			}
			stop()
			cancel()
			return nil, err
		}
		clients[i] = one
		w.views[i] = map[string]Entry{}
	}
	var pollers sync.WaitGroup
	for i := range clients {
		pollers.Add(1)
		go func() {
			defer pollers.Done()
			c.poll(ctx, i, clients[i], kind, updates)
		}()
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer stop()
		defer close(w.out)
		w.merge(ctx, updates)
		cancel()
		pollers.Wait()
		for _, o := range clients {
			o.Close()
		}
	}()
	return w.out, nil
}

type pollResult struct {
	i   int
	rep watchReply
	err error
}

// poll long-polls one resolver for kind's changes and hands each answer to
// the merger. A failure is handed on too (the resolver is then not
// trusted) and retried after a pause.
func (c *Client) poll(ctx context.Context, i int, one *zmqloop.Client, kind string, updates chan<- pollResult) {
	var epoch string
	var since uint64
	pause := 50 * time.Millisecond
	for ctx.Err() == nil {
		body, _ := json.Marshal(watchReq{Kind: kind, Epoch: epoch, Since: since, WaitMS: durationMS(c.cfg.WatchWait)})
		cctx, cancel := context.WithTimeout(ctx, c.cfg.WatchWait+c.cfg.Timeout)
		raw, err := one.Call(cctx, TypeWatch, body)
		cancel()
		var rep watchReply
		if err == nil {
			err = json.Unmarshal(raw, &rep)
		}
		select {
		case updates <- pollResult{i: i, rep: rep, err: err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				c.log.Debug("nexus: watch: resolver not answering", "resolver", c.cfg.Resolvers[i], "kind", kind, "err", err)
			}
			select {
			case <-time.After(pause):
			case <-ctx.Done():
			}
			pause = min(2*pause, time.Second)
			continue
		}
		pause = 50 * time.Millisecond
		epoch, since = rep.Epoch, rep.Seq
	}
}

// watch merges the views of several resolvers into one stream. Only the
// merge goroutine touches it.
type watch struct {
	kind   string
	log    *slog.Logger
	out    chan Event
	views  []map[string]Entry
	up     []bool // answered its last request
	warm   []bool
	heard  []bool // answered or failed at least once
	merged map[string]Entry
	synced bool
}

func (w *watch) merge(ctx context.Context, updates <-chan pollResult) {
	for {
		var u pollResult
		select {
		case <-ctx.Done():
			return
		case u = <-updates:
		}
		i := u.i
		w.heard[i] = true
		touched := map[string]bool{}
		if u.err != nil {
			if w.up[i] {
				w.up[i] = false
				for id := range w.views[i] {
					touched[id] = true
				}
			}
		} else {
			turnedWarm := u.rep.Warm && !(w.up[i] && w.warm[i])
			w.up[i], w.warm[i] = true, u.rep.Warm
			if u.rep.Reset {
				for id := range w.views[i] {
					touched[id] = true
				}
				w.views[i] = make(map[string]Entry, len(u.rep.Entries))
				for _, e := range u.rep.Entries {
					w.views[i][e.ID] = e
					touched[e.ID] = true
				}
			}
			for _, ch := range u.rep.Changes {
				touched[ch.Entry.ID] = true
				if ch.Type == Delete.String() {
					delete(w.views[i], ch.Entry.ID)
				} else {
					w.views[i][ch.Entry.ID] = ch.Entry
				}
			}
			// A resolver turning warm (or back) may now confirm absences.
			if turnedWarm {
				for id := range w.merged {
					if _, ok := w.views[i][id]; !ok {
						touched[id] = true
					}
				}
			}
		}
		for id := range touched {
			if !w.apply(ctx, id) {
				return
			}
		}
		if !w.synced && w.ready() {
			w.synced = true
			if !w.emit(ctx, Event{Type: Sync}) {
				return
			}
		}
	}
}

// ready: every resolver has been heard from, or a warm one answers.
func (w *watch) ready() bool {
	all := true
	for i := range w.heard {
		if w.up[i] && w.warm[i] {
			return true
		}
		all = all && w.heard[i]
	}
	return all
}

// apply recomputes id's merged entry and emits the change, if any.
func (w *watch) apply(ctx context.Context, id string) bool {
	cur, had := w.merged[id]
	var best Entry
	found, anyUp, anyWarm := false, false, false
	for i, v := range w.views {
		if !w.up[i] {
			continue
		}
		anyUp = true
		anyWarm = anyWarm || w.warm[i]
		e, ok := v[id]
		if !ok {
			continue
		}
		if !found || better(e, best) {
			best, found = e, true
		}
	}
	switch {
	case !anyUp:
		return true // nobody answers: keep what we had
	case found:
		if had && cur.State == best.State && cur.Incarnation == best.Incarnation && cur.Instance.equal(best.Instance) {
			return true
		}
		w.merged[id] = best
		return w.emit(ctx, Event{Type: Put, Entry: best})
	case had && anyWarm:
		delete(w.merged, id)
		return w.emit(ctx, Event{Type: Delete, Entry: cur})
	}
	return true
}

// better prefers alive to suspect, then the newer mark.
func better(a, b Entry) bool {
	if (a.State == Alive) != (b.State == Alive) {
		return a.State == Alive
	}
	return newer(a.Incarnation, a.Seq, b.Incarnation, b.Seq)
}

func (w *watch) emit(ctx context.Context, ev Event) bool {
	select {
	case w.out <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}
