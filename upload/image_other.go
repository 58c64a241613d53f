//go:build !linux

package upload

import "context"

func loopMount(ctx context.Context, image, dir string) error { return ErrMountUnsupported }

func loopUnmount(ctx context.Context, dir string) error { return ErrMountUnsupported }
