package admit_test

import (
	"fmt"
	"net/netip"

	"github.com/paaskit/paaskit/internal/admit"
)

// A gate with a cap of two connections per client address: the third
// from one address is refused, another address is not, and a closed
// connection gives its slot back.
func ExampleGate() {
	g, err := admit.New(admit.Config{MaxConnsPerIP: 2})
	if err != nil {
		fmt.Println(err)
		return
	}
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	fmt.Println(g.Admit(a, false), g.Admit(a, false), g.Admit(a, false), g.Admit(b, false))
	g.Release(a)
	fmt.Println(g.Admit(a, false), g.Refused())
	// Output:
	// true true false true
	// true 1
}
