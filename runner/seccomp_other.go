//go:build linux && !amd64 && !arm64

package runner

const (
	seccompAuditArch = 0
	seccompX32Bit    = 0
)

var seccompDenied []int
