package balancer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// ErrEmptyTable is returned by ParseTable for a file with no node.
var ErrEmptyTable = errors.New("balancer: table file has no nodes")

// TableFormat documents the text format read by ParseTable.
const TableFormat = `One directive per line; blank lines and lines starting with # are ignored.

  node ID ADDR           a backend node: stable id, host:port
  host PATTERN [ID,...]  a site: example.com, *.example.com (any subdomain),
                         or * (the default for unknown hosts); the node ids
                         serving it, or none for every node
  policy maglev|modulo   the hash policy (default maglev)

Example:

  node web1 10.0.0.1:8080
  node web2 10.0.0.2:8080
  host example.com
  host *.apps.example.com web1,web2
  host * web1
`

// ParseTable reads a table in TableFormat. Errors name the line. A table
// without nodes is ErrEmptyTable, so that a truncated file is never taken
// for an intended empty table.
func ParseTable(r io.Reader, reuse *Table) (*Table, error) {
	var cfg TableConfig
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	ln := 0
	policySet := false
	for sc.Scan() {
		ln++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		switch f[0] {
		case "node":
			if len(f) != 3 {
				return nil, fmt.Errorf("balancer: table line %d: want \"node ID ADDR\", got %q", ln, line)
			}
			cfg.Nodes = append(cfg.Nodes, Node{ID: f[1], Addr: f[2]})
		case "host":
			if len(f) < 2 || len(f) > 3 {
				return nil, fmt.Errorf("balancer: table line %d: want \"host PATTERN [ID,...]\", got %q", ln, line)
			}
			s := Site{Host: f[1]}
			if len(f) == 3 {
				for _, id := range strings.Split(f[2], ",") {
					if id == "" {
						return nil, fmt.Errorf("balancer: table line %d: empty node id in %q", ln, f[2])
					}
					s.Nodes = append(s.Nodes, id)
				}
			}
			cfg.Sites = append(cfg.Sites, s)
		case "policy":
			if len(f) != 2 || policySet {
				return nil, fmt.Errorf("balancer: table line %d: want one \"policy maglev|modulo\", got %q", ln, line)
			}
			p, err := ParsePolicy(f[1])
			if err != nil {
				return nil, fmt.Errorf("balancer: table line %d: %w", ln, err)
			}
			cfg.Policy, policySet = p, true
		default:
			return nil, fmt.Errorf("balancer: table line %d: unknown directive %q", ln, f[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("balancer: reading table: %w", err)
	}
	if len(cfg.Nodes) == 0 {
		return nil, ErrEmptyTable
	}
	cfg.Reuse = reuse
	return NewTable(cfg)
}

// LoadTableFile reads a table file in TableFormat.
func LoadTableFile(path string, reuse *Table) (*Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("balancer: opening table %s: %w", path, err)
	}
	defer f.Close()
	t, err := ParseTable(f, reuse)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}
