package buildsandbox

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes c's process get SIGKILL when the installer's thread
// that started it ends.
func dieWithParent(c *exec.Cmd) { c.SysProcAttr.Pdeathsig = syscall.SIGKILL }
