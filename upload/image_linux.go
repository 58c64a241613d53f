package upload

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// loopMount mounts a SquashFS image read-only through a loop device (util-
// linux's mount sets the loop device to clear itself on unmount).
func loopMount(ctx context.Context, image, dir string) error {
	out, err := exec.CommandContext(ctx, "mount", "-t", "squashfs", "-o", "loop,ro,nodev,nosuid", image, dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mount -t squashfs -o loop,ro %s %s: %w: %s", image, dir, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func loopUnmount(ctx context.Context, dir string) error {
	out, err := exec.CommandContext(ctx, "umount", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("umount %s: %w: %s", dir, err, strings.TrimSpace(string(out)))
	}
	return nil
}
