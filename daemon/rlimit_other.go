//go:build !linux

package daemon

import "fmt"

// GetLimit returns ErrUnsupported on this system.
func GetLimit(r Resource) (Limit, error) {
	return Limit{}, fmt.Errorf("daemon: read %s limit: %w", r, ErrUnsupported)
}

// SetLimit returns ErrUnsupported on this system.
func SetLimit(r Resource, l Limit) error {
	return fmt.Errorf("daemon: set %s limit: %w", r, ErrUnsupported)
}
