package lock_test

import (
	"errors"
	"fmt"

	"github.com/paaskit/paaskit/lock"
)

// A store guarded by fencing tokens refuses a write from a holder whose
// lease was taken over, however late the write arrives.
func ExampleFence() {
	f := lock.NewFence()
	fmt.Println(f.Admit("report", 7)) // the holder of token 7 writes
	fmt.Println(f.Admit("report", 9)) // its lease ran out; token 9 took over
	err := f.Admit("report", 7)       // the paused first holder wakes up
	fmt.Println(errors.Is(err, lock.ErrStaleToken), f.Highest("report"))
	// Output:
	// <nil>
	// <nil>
	// true 9
}
