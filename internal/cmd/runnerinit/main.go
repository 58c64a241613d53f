// Command runnerinit is a sandbox init helper and nothing else: a program
// whose main calls runner.Init first, for Config.InitPath.
//
// The runner's tests point their runners at it. By default the helper is
// the running binary re-executed, and a test binary built with the race
// detector pays the race runtime's start (about 90 ms of CPU on a small
// VM, four times a plain build's) at every sandbox start and every
// parked helper; this one is built without it (and without cgo), so the
// suite's hundreds of sandboxes cost what they cost in production. The
// code it runs is the same runner package.
package main

import (
	"fmt"
	"os"

	"github.com/paaskit/paaskit/runner"
)

func main() {
	runner.Init()
	fmt.Fprintln(os.Stderr, "runnerinit: the sandbox init helper of a runner (Config.InitPath); it is not run by hand")
	os.Exit(2)
}
