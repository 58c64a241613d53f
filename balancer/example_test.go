package balancer_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/paaskit/paaskit/balancer"
)

// Hosts map to nodes by a consistent hash of the host; case, port and a
// trailing dot do not matter, and the order nodes are listed in does not
// either.
func ExampleTable_Pick() {
	t, err := balancer.NewTable(balancer.TableConfig{
		Nodes: []balancer.Node{
			{ID: "web3", Addr: "10.0.0.3:8080"},
			{ID: "web1", Addr: "10.0.0.1:8080"},
			{ID: "web2", Addr: "10.0.0.2:8080"},
		},
		Sites: []balancer.Site{
			{Host: "shop.example.com", Nodes: []string{"web1"}},
			{Host: "*.apps.example.com"}, // every node
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, host := range []string{"Shop.Example.com.:443", "blog.apps.example.com", "unknown.org"} {
		n, err := t.Pick(host)
		if err != nil {
			fmt.Println(host, "->", err)
			continue
		}
		fmt.Println(host, "->", n.ID)
	}
	// Output:
	// Shop.Example.com.:443 -> web1
	// blog.apps.example.com -> web1
	// unknown.org -> balancer: unknown host: "unknown.org"
}

// A table file in the line format balancerd reads.
func ExampleParseTable() {
	t, err := balancer.ParseTable(strings.NewReader(`
# two runner nodes
node r1 127.0.0.1:9001
node r2 127.0.0.1:9002
host example.com r1
host * 
`), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(t.Nodes()), "nodes,", t.Len(), "sites, policy", t.Policy())
	// Output: 2 nodes, 2 sites, policy maglev
}

// A proxy in front of one node, serving until its context ends.
func ExampleProxy() {
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the node, for %s", r.Host)
	}))
	defer node.Close()

	table, err := balancer.NewTable(balancer.TableConfig{
		Nodes: []balancer.Node{{ID: "n1", Addr: strings.TrimPrefix(node.URL, "http://")}},
		Sites: []balancer.Site{{Host: "*"}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	p, err := balancer.New(balancer.Config{
		Listener: ln,
		Table:    table,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-p.Ready()

	req, _ := http.NewRequest("GET", "http://"+p.Addr().String()+"/", nil)
	req.Host = "www.example.com"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.Status, string(body))

	cancel()
	fmt.Println("Run:", <-done)
	// Output:
	// 200 OK hello from the node, for www.example.com
	// Run: <nil>
}
