package upload_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/paaskit/paaskit/upload"
)

func ExampleBuildImage() {
	dir, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "app")
	_ = os.MkdirAll(filepath.Join(src, "code"), 0o755)
	_ = os.WriteFile(filepath.Join(src, "code", "main.py"), []byte("print('hi')\n"), 0o644)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	first, err := upload.BuildImage(context.Background(), src, filepath.Join(dir, "store"), upload.ImageConfig{Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	// Touching the tree does not change the image: times are fixed.
	now := time.Now()
	_ = os.Chtimes(filepath.Join(src, "code", "main.py"), now, now)
	second, _ := upload.BuildImage(context.Background(), src, filepath.Join(dir, "store"), upload.ImageConfig{Logger: quiet})
	fmt.Println(first.ID == second.ID)
	// Output: true
}

func ExampleMountImage() {
	dir, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "app")
	_ = os.MkdirAll(src, 0o755)
	_ = os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello from the image\n"), 0o644)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	img, err := upload.BuildImage(context.Background(), src, filepath.Join(dir, "store"), upload.ImageConfig{Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}

	// MountAuto loop-mounts where permitted, else unpacks a read-only copy.
	m, err := upload.MountImage(context.Background(), img.Path, filepath.Join(dir, "mnt"), upload.MountConfig{Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Unmount(context.Background())
	b, _ := os.ReadFile(filepath.Join(m.Dir, "hello.txt"))
	fmt.Print(string(b))
	// Output: hello from the image
}

// ExampleNewServer serves the upload endpoint: git push builds and
// activates, run goes through the platform's command runner.
func ExampleNewServer() {
	dir, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(dir)
	keys := filepath.Join(dir, "keys")
	// user="alice",deploy="blog",run="blog" ssh-ed25519 AAAA... alice@laptop
	_ = os.WriteFile(keys, nil, 0o600)
	ks, err := upload.OpenFileKeyStore(keys)
	if err != nil {
		fmt.Println(err)
		return
	}
	srv, err := upload.NewServer(upload.ServerConfig{
		Addr:        "127.0.0.1:0",
		HostKeyFile: filepath.Join(dir, "host_key"),
		Keys:        ks,
		RepoDir:     filepath.Join(dir, "repos"),
		StoreDir:    filepath.Join(dir, "images"),
		Activate: func(ctx context.Context, app string, img *upload.Image) error {
			// Mount img.Path and point the app's instances at it.
			return nil
		},
		Command: func(app string, argv []string) (*exec.Cmd, error) {
			// runner.Command in the platform: the app's sandbox and UID.
			return nil, fmt.Errorf("no sandbox in this example")
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a real daemon runs until SIGTERM
	fmt.Println(srv.Run(ctx))
	// Output: <nil>
}
