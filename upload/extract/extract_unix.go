//go:build unix

package extract

import "syscall"

// syscallNoFollow makes creating an extracted file refuse a symbolic link
// in its place.
const syscallNoFollow = syscall.O_NOFOLLOW
