package runner

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The sandbox's system-call filter is a small classic-BPF program of our
// own rather than libseccomp: it is a deny list of some sixty calls with
// one argument check (clone's namespace flags), which hand-assembles into
// fewer than a hundred instructions, keeps the runner free of cgo and of
// a libseccomp-dev build dependency (the demo builds the runner), and is
// read in one screen. The list is what Docker's default profile refuses
// to a container without capabilities: namespaces and mounts (unshare,
// setns, mount and the new mount API, pivot_root, chroot, clone with
// namespace flags), the kernel keyring (keyctl, add_key, request_key),
// tracing and other processes' memory (ptrace, process_vm_*, kcmp,
// perf_event_open), bpf, userfaultfd, io_uring, modules and kexec, clocks,
// swap, quotas, reboot, NUMA policy, handles to files by inode
// (open_by_handle_at: the "shocker" escape), personality-free legacy
// calls. Refused calls fail with EPERM, as Docker's do; clone3 fails with
// ENOSYS so that libc falls back to clone, whose flags the filter can
// see. A call from another ABI than the runner's own (x32 on amd64, a
// 32-bit compat call) kills the process: the filter's numbers would not
// mean what they say there.

// seccomp_data offsets.
const (
	seccompNr   = 0
	seccompArch = 4
	seccompArg0 = 16 // low 32 bits on a little-endian machine
)

const (
	retAllow  = 0x7fff0000 // SECCOMP_RET_ALLOW
	retErrno  = 0x00050000 // SECCOMP_RET_ERRNO
	retKill   = 0x80000000 // SECCOMP_RET_KILL_PROCESS
	nsFlags   = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME
	bpfLdW    = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	bpfJeq    = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	bpfJge    = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
	bpfJset   = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
	bpfRet    = unix.BPF_RET | unix.BPF_K
	maxFilter = 250 // every jump to the shared returns must fit in 8 bits
)

// errNoSeccompArch is returned where the runner has no syscall list for
// the machine.
var errNoSeccompArch = errors.New("no system-call list for this architecture")

// seccompProgram assembles the filter.
func seccompProgram() ([]unix.SockFilter, error) {
	if seccompAuditArch == 0 {
		return nil, errNoSeccompArch
	}
	var p []unix.SockFilter
	ins := func(code uint16, k uint32) { p = append(p, unix.SockFilter{Code: code, K: k}) }
	// Jumps to the shared tail are patched once its place is known.
	type fix struct {
		at     int
		target string
		onTrue bool
	}
	var fixes []fix
	jump := func(code uint16, k uint32, target string) {
		fixes = append(fixes, fix{at: len(p), target: target, onTrue: true})
		ins(code, k)
	}
	ins(bpfLdW, seccompArch)
	jump(bpfJeq, seccompAuditArch, "") // patched: true = next, false = kill
	fixes[len(fixes)-1].onTrue = false
	fixes[len(fixes)-1].target = "kill"
	ins(bpfLdW, seccompNr)
	if seccompX32Bit != 0 {
		jump(bpfJge, seccompX32Bit, "kill")
	}
	for _, nr := range seccompDenied {
		jump(bpfJeq, uint32(nr), "eperm")
	}
	jump(bpfJeq, uint32(unix.SYS_CLONE3), "enosys")
	jump(bpfJeq, uint32(unix.SYS_CLONE), "clone")
	ins(bpfRet, retAllow)
	labels := map[string]int{}
	labels["clone"] = len(p)
	ins(bpfLdW, seccompArg0)
	jump(bpfJset, nsFlags, "eperm")
	ins(bpfRet, retAllow)
	labels["eperm"] = len(p)
	ins(bpfRet, retErrno|uint32(unix.EPERM))
	labels["enosys"] = len(p)
	ins(bpfRet, retErrno|uint32(unix.ENOSYS))
	labels["kill"] = len(p)
	ins(bpfRet, retKill)
	for _, f := range fixes {
		d := labels[f.target] - f.at - 1
		if d < 0 || d > 255 {
			return nil, fmt.Errorf("seccomp filter: jump of %d instructions", d)
		}
		if f.onTrue {
			p[f.at].Jt = uint8(d)
		} else {
			p[f.at].Jf = uint8(d)
		}
	}
	if len(p) > maxFilter+10 {
		return nil, fmt.Errorf("seccomp filter: %d instructions", len(p))
	}
	return p, nil
}

// installSeccomp loads the filter on every thread of the process
// (SECCOMP_FILTER_FLAG_TSYNC), which must already have no_new_privs.
func installSeccomp() error {
	p, err := seccompProgram()
	if err != nil {
		return err
	}
	prog := unix.SockFprog{Len: uint16(len(p)), Filter: &p[0]}
	_, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	if e != 0 {
		return fmt.Errorf("install seccomp filter: %w", e)
	}
	return nil
}

// seccompAvailable reports why the filter cannot be used here, or nil.
func seccompAvailable() error {
	if _, err := seccompProgram(); err != nil {
		return err
	}
	if _, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("the kernel has no seccomp (%w)", err)
	}
	return nil
}
