package extract_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/paaskit/paaskit/upload/extract"
)

func bundle(files map[string]string, order ...string) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, name := range order {
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg})
		_, _ = tw.Write([]byte(files[name]))
	}
	_ = tw.Close()
	_ = gz.Close()
	return buf.Bytes()
}

func ExampleExtract() {
	dir, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(dir)
	data := bundle(map[string]string{"app/main.py": "print('hi')\n", "requirements.txt": "flask\n"}, "app/main.py", "requirements.txt")

	target := filepath.Join(dir, "app-v1")
	if err := extract.Extract(context.Background(), bytes.NewReader(data), target, extract.FormatAuto, extract.Config{}); err != nil {
		fmt.Println(err)
		return
	}
	_ = filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(target, p)
		fmt.Println(rel)
		return nil
	})
	// Output:
	// .
	// app
	// app/main.py
	// requirements.txt
}

func ExampleExtract_refused() {
	dir, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(dir)
	data := bundle(map[string]string{"ok.txt": "fine", "../../etc/cron.d/evil": "* * * * * root sh"}, "ok.txt", "../../etc/cron.d/evil")

	target := filepath.Join(dir, "app-v2")
	err := extract.Extract(context.Background(), bytes.NewReader(data), target, extract.FormatAuto, extract.Config{})
	fmt.Println(err)
	fmt.Println(errors.Is(err, extract.ErrUnsafePath))
	_, statErr := os.Stat(target)
	fmt.Println("target exists:", statErr == nil)
	// Output:
	// archive entry "../../etc/cron.d/evil": unsafe path
	// true
	// target exists: false
}
