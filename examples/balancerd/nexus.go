package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/paaskit/paaskit/balancer"
	"github.com/paaskit/paaskit/nexus"
	"github.com/paaskit/paaskit/zmqloop"
)

// The balancer imports no nexus: its node table is fed by a nodeFeed, a
// plain function value, and this file builds one from nexus.

// nodeFeed follows a set of backend nodes and calls update with the whole
// set whenever it changes, until ctx ends.
type nodeFeed func(ctx context.Context, update func([]balancer.Node)) error

type nexusOptions struct {
	spec, kind, endpoint, keyID string
}

const demoSecret = "paaskit-demo-secret-change-me"

func nexusFlags(fs *flag.FlagSet) *nexusOptions {
	n := &nexusOptions{}
	fs.StringVar(&n.spec, "nexus", "", "follow the nodes that announce themselves to nexus: the resolvers (tcp://HOST:PORT,...) or etcd (etcd://HOST:PORT,...); the HMAC secret is $NEXUS_SECRET. With it --table is optional and gives only sites (default: host *)")
	fs.StringVar(&n.kind, "nexus-kind", "runner", "the kind of instance that is a node")
	fs.StringVar(&n.endpoint, "nexus-endpoint", "http", "the name of the node's endpoint the balancer forwards to (host:port)")
	fs.StringVar(&n.keyID, "nexus-key-id", "k1", "id of the HMAC key")
	return n
}

// nexusNodes returns the feed of the nodes of kind on dir: each instance
// is a node whose id is the instance id and whose address is its named
// endpoint. A suspect instance stays a node until nexus drops it (after
// its grace period); the balancer's own health checks cover the stall.
func nexusNodes(dir nexus.Directory, kind, endpoint string, log *slog.Logger) nodeFeed {
	return func(ctx context.Context, update func([]balancer.Node)) error {
		err := nexus.Follow(ctx, dir, kind, func(es []nexus.Entry) {
			nodes := make([]balancer.Node, 0, len(es))
			for _, e := range es {
				addr := strings.TrimPrefix(e.Endpoints[endpoint], "http://")
				if addr == "" {
					log.Warn("nexus: node has no such endpoint; ignored", "node", e.ID, "endpoint", endpoint)
					continue
				}
				nodes = append(nodes, balancer.Node{ID: e.ID, Addr: addr})
			}
			update(nodes)
		})
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
}

func openNexus(n *nexusOptions, log *slog.Logger) (nexus.Directory, error) {
	cfg, err := nexus.ParseSpec(n.spec)
	if err != nil {
		return nil, err
	}
	if cfg.Backend == nexus.BackendResolvers {
		secret := os.Getenv("NEXUS_SECRET")
		if secret == "" {
			log.Warn("NEXUS_SECRET is not set; using the public demo secret")
			secret = demoSecret
		}
		ring, err := zmqloop.NewKeyRing(zmqloop.Key{ID: n.keyID, Secret: []byte(secret)})
		if err != nil {
			return nil, fmt.Errorf("--nexus-key-id: %w", err)
		}
		if cfg.Codec, err = zmqloop.NewCodec(zmqloop.CodecConfig{Keys: ring}); err != nil {
			return nil, err
		}
	}
	cfg.Logger = log
	return nexus.Open(cfg)
}

// composer builds the table from the file's sites (and static nodes) and
// the fed nodes. It is the one owner of both.
type composer struct {
	proxy *balancer.Proxy
	log   *slog.Logger

	mu    sync.Mutex
	text  string // the table file, or "host *"
	nodes []balancer.Node
	fed   bool
}

// loadFile is the reloader's load in nexus mode: the file's sites with
// the fed nodes.
func (c *composer) loadFile(path string, reuse *balancer.Table) (*balancer.Table, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("balancerd: reading table %s: %w", path, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t, err := c.compose(string(b), c.nodes, reuse)
	if err == nil {
		c.text = string(b)
	}
	return t, err
}

// setNodes is the feed's update.
func (c *composer) setNodes(nodes []balancer.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fed = true
	t, err := c.compose(c.text, nodes, c.proxy.Table())
	if err != nil {
		// No node at all (or a file site naming a node that left):
		// keep routing to the last good set rather than to nothing.
		c.log.Error("nexus: node set not applied; keeping the table in force", "nodes", len(nodes), "err", err)
		return
	}
	c.nodes = nodes
	c.proxy.SetTable(t)
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.ID
	}
	c.log.Info("nexus: nodes changed", "nodes", ids, "sites", t.Len())
}

func (c *composer) compose(text string, nodes []balancer.Node, reuse *balancer.Table) (*balancer.Table, error) {
	static := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "node" {
			static[f[1]] = true
		}
	}
	var sb strings.Builder
	sb.WriteString(text)
	sb.WriteString("\n")
	sorted := append([]balancer.Node(nil), nodes...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	for _, n := range sorted {
		if static[n.ID] || strings.ContainsAny(n.ID+n.Addr, " \t\r\n") {
			continue // the file's node of that id wins
		}
		fmt.Fprintf(&sb, "node %s %s\n", n.ID, n.Addr)
	}
	return balancer.ParseTable(strings.NewReader(sb.String()), reuse)
}
