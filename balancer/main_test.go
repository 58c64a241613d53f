package balancer

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// forwarderEnv selects the forwarder the whole suite runs on: unset, the
// default (event loops for plain listeners); "goroutine", a goroutine
// per connection (Config.EventLoops -1).
const forwarderEnv = "PAASKIT_BALANCER_TEST_FORWARDER"

// TestMain runs every test twice: on the event loops, then (in a child
// process) on the goroutine path, so both forwarders keep every
// behaviour of the proxy.
func TestMain(m *testing.M) {
	code := m.Run()
	fuzzing := flag.Lookup("test.fuzz") != nil && flag.Lookup("test.fuzz").Value.String() != ""
	if os.Getenv(forwarderEnv) == "" && code == 0 && !fuzzing {
		cmd := exec.Command(os.Args[0], os.Args[1:]...)
		cmd.Env = append(os.Environ(), forwarderEnv+"=goroutine")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		fmt.Println("balancer: the suite again on the goroutine-per-connection forwarder")
		if err := cmd.Run(); err != nil {
			fmt.Println("balancer: goroutine-forwarder run failed:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testForwarder applies the suite's forwarder to cfg unless the test
// chose one.
func testForwarder(cfg *Config) {
	if cfg.EventLoops == 0 && os.Getenv(forwarderEnv) == "goroutine" {
		cfg.EventLoops = -1
	}
}
