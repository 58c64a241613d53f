// Command withservers starts a throwaway PostgreSQL, Redis and etcd on free
// loopback ports, runs a command with their addresses in
// PAASKIT_TEST_POSTGRES, PAASKIT_TEST_REDIS and PAASKIT_TEST_ETCD, and stops
// them when the command ends. `make test` runs the test suite under it.
//
// Usage: withservers command [args...]
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/paaskit/paaskit/internal/testserver"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: withservers command [args...]")
		return 2
	}
	ctx := context.Background()
	pg, err := testserver.StartPostgres(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "withservers:", err)
		return 1
	}
	defer pg.Stop()
	rd, err := testserver.StartRedis(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "withservers:", err)
		return 1
	}
	defer rd.Stop()
	et, err := testserver.StartEtcd(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "withservers:", err)
		return 1
	}
	defer et.Stop()
	fmt.Fprintf(os.Stderr, "withservers: PostgreSQL at %s, Redis at %s, etcd at %s\n", pg.Addr, rd.Addr, et.Addr)

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), testserver.EnvPostgres+"="+pg.Addr, testserver.EnvRedis+"="+rd.Addr,
		testserver.EnvEtcd+"="+et.Addr)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "withservers:", err)
		return 1
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "withservers:", err)
		return 1
	}
	return 0
}
