//go:build !linux

package buildsandbox

import "os/exec"

// dieWithParent is Linux's parent-death signal; elsewhere the runner has
// no sandbox to start anyway.
func dieWithParent(*exec.Cmd) {}
