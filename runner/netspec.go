package runner

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Network policies of Spec.Network.Policy.
const (
	// PolicyNone: the instance's own network namespace with loopback
	// only. The default.
	PolicyNone = "none"
	// PolicyEgress: loopback plus a veth on the node's bridge with NAT,
	// reaching public addresses but never the host, loopback services,
	// other apps, 169.254.0.0/16 or private ranges, except the
	// destinations Network.Allow names.
	PolicyEgress = "egress"
	// PolicyAllowOnly: loopback plus a veth on the node's bridge that
	// reaches the destinations Network.Allow names and nothing else (a
	// build that may fetch from its package index only, say). Allow
	// must name at least one.
	PolicyAllowOnly = "allow-only"
)

// egress reports whether the policy gives the namespace a veth on the
// bridge.
func (n *Network) egress() bool {
	return n.Policy == PolicyEgress || n.Policy == PolicyAllowOnly
}

// Network is an app's network policy. Inbound traffic only ever comes
// through the node's front, whatever the policy.
type Network struct {
	// Policy is PolicyNone ("" means it), PolicyEgress or
	// PolicyAllowOnly.
	Policy string `json:"policy,omitempty"`
	// Allow names destinations an egress app may reach even where the
	// policy refuses (its database on a private address, say): "host",
	// "host:port", "10.1.2.3" or "10.1.2.3:5432". Names are resolved
	// (IPv4) when the spec is put, which fails on a name that does not
	// resolve, and again at each start.
	Allow []string `json:"allow,omitempty"`
}

// Destination is an allowed destination resolved to addresses.
type Destination struct {
	Name string
	Port int // 0: any port
	IPs  []netip.Addr
}

func (n *Network) validate() error {
	switch n.Policy {
	case "", PolicyNone:
		if len(n.Allow) > 0 {
			return fmt.Errorf("network.allow needs network.policy %q (policy %q reaches nothing beyond loopback)", PolicyEgress, PolicyNone)
		}
	case PolicyEgress:
	case PolicyAllowOnly:
		if len(n.Allow) == 0 {
			return fmt.Errorf("network.policy %q needs at least one network.allow destination (policy %q is loopback only)", PolicyAllowOnly, PolicyNone)
		}
	default:
		return fmt.Errorf("network.policy %q: want %q, %q or %q", n.Policy, PolicyNone, PolicyEgress, PolicyAllowOnly)
	}
	if len(n.Allow) > 64 {
		return fmt.Errorf("network.allow has %d entries: at most 64", len(n.Allow))
	}
	for _, a := range n.Allow {
		if _, _, err := splitDestination(a); err != nil {
			return err
		}
	}
	return nil
}

func splitDestination(a string) (string, int, error) {
	host, port := a, 0
	if h, p, err := net.SplitHostPort(a); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return "", 0, fmt.Errorf("network.allow %q: port %q is not 1-65535", a, p)
		}
		host, port = h, n
	}
	if host == "" || len(host) > 253 || strings.ContainsAny(host, " /\t\x00") {
		return "", 0, fmt.Errorf("network.allow %q: not a host, host:port, address or address:port", a)
	}
	return host, port, nil
}

// resolveDestinations resolves every Allow entry to IPv4 addresses.
func resolveDestinations(ctx context.Context, allow []string) ([]Destination, error) {
	out := make([]Destination, 0, len(allow))
	for _, a := range allow {
		host, port, err := splitDestination(a)
		if err != nil {
			return nil, err
		}
		d := Destination{Name: a, Port: port}
		if ip, err := netip.ParseAddr(host); err == nil {
			if !ip.Unmap().Is4() {
				return nil, fmt.Errorf("network.allow %q: only IPv4 destinations are supported", a)
			}
			d.IPs = []netip.Addr{ip.Unmap()}
		} else {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			ips, err := net.DefaultResolver.LookupNetIP(rctx, "ip4", host)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("network.allow %q: cannot resolve %s: %w", a, host, err)
			}
			for _, ip := range ips {
				d.IPs = append(d.IPs, ip.Unmap())
			}
			if len(d.IPs) == 0 {
				return nil, fmt.Errorf("network.allow %q: %s has no IPv4 address", a, host)
			}
		}
		out = append(out, d)
	}
	return out, nil
}
