package main

import (
	"testing"

	"github.com/paaskit/paaskit/internal/testserver"
	"github.com/paaskit/paaskit/runner"
)

func TestMain(m *testing.M) {
	// The runners of the sandboxed-build and usage tests build their
	// sandboxes by re-executing this test binary.
	runner.Init()
	testserver.Main(m)
}
