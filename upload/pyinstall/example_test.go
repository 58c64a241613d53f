package pyinstall_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/paaskit/paaskit/internal/pyindex"
	"github.com/paaskit/paaskit/upload/pyinstall"
)

func ExampleParseRequirements() {
	reqs, err := pyinstall.ParseRequirements(strings.NewReader(`
# web app
Django>=4.2,<5
requests[socks] ~= 2.31 ; python_version >= "3.8"
six==1.16.0 --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254
`), "requirements.txt", "/srv/app")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range reqs.Requirements {
		fmt.Printf("%s (%s) %s\n", r.Key(), r.Source, r)
	}
	_, err = pyinstall.ParseRequirements(strings.NewReader("flask\nDjango >>= 4\n"), "requirements.txt", "/srv/app")
	fmt.Println(err)
	// Output:
	// django (requirements.txt:3) Django>=4.2,<5
	// requests (requirements.txt:4) requests[socks]~=2.31; python_version >= "3.8"
	// six (requirements.txt:5) six==1.16.0
	// requirements.txt:2: bad version specifier ">>=4" in "Django >>= 4": "Django >>= 4"
}

func ExampleParseMarker() {
	m, _ := pyinstall.ParseMarker(`python_version >= "3.8" and extra == "fast"`)
	env := pyinstall.Env{"python_version": "3.11"}
	fmt.Println(m.Eval(env, ""), m.Eval(env, "fast"), m.Extras())
	// Output: false true [fast]
}

func ExampleInstaller_Install() {
	// A local index with an app that depends on a library published only
	// as an sdist.
	ix, _ := pyindex.New([]pyindex.Dist{
		{Name: "webapp", Version: "1.0", Requires: []string{"helper>=2"}},
		{Name: "helper", Version: "1.0"},
		{Name: "helper", Version: "2.1", Kind: pyindex.Sdist},
	})
	srv, _ := pyindex.Serve(ix, pyindex.ServerConfig{})
	defer srv.Close()
	dir, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(dir)

	in, err := pyinstall.New(pyinstall.Config{
		IndexURL: srv.URL(),
		CacheDir: filepath.Join(dir, "wheel-cache"),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	reqs, _ := pyinstall.ParseRequirements(strings.NewReader("webapp\n"), "requirements.txt", dir)
	res, err := in.Install(context.Background(), reqs, filepath.Join(dir, "venv"), pyinstall.InstallOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Packages, "built:", res.Built)
	// Output: [helper==2.1 webapp==1.0] built: 1
}

// pip's --no-binary and --only-binary, with pip's precedence: a project
// named in either option wins over :all:.
func ExampleBinaryPolicy() {
	var b pyinstall.BinaryPolicy
	_ = b.SetOnlyBinary(":all:")
	_ = b.SetNoBinary("Pillow")
	for _, p := range []string{"pillow", "requests"} {
		wheel, sdist := b.Allowed(p)
		fmt.Println(p, "wheel:", wheel, "sdist:", sdist)
	}
	// Output:
	// pillow wheel: false sdist: true
	// requests wheel: true sdist: false
}

// A build sandbox wraps each build process. This one runs it in a new
// network namespace (unshare(1), as root), so a build gets no network; the
// platform's is built on runner's sandbox instead.
func ExampleBuildSandbox() {
	ix, _ := pyindex.New([]pyindex.Dist{{Name: "native-ext", Version: "1.0", Kind: pyindex.Sdist, DynamicMetadata: true}})
	srv, _ := pyindex.Serve(ix, pyindex.ServerConfig{})
	defer srv.Close()
	dir, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(dir)

	noNetwork := func(ctx context.Context, cmd *exec.Cmd) (*exec.Cmd, error) {
		w := exec.CommandContext(ctx, "unshare", append([]string{"--net", "--", cmd.Path}, cmd.Args[1:]...)...)
		w.Dir, w.Env, w.Stdout, w.Stderr = cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr
		return w, nil
	}
	in, err := pyinstall.New(pyinstall.Config{
		IndexURL: srv.URL(),
		CacheDir: filepath.Join(dir, "cache"),
		Sandbox:  noNetwork,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	reqs, _ := pyinstall.ParseRequirements(strings.NewReader("native-ext\n"), "requirements.txt", dir)
	res, err := in.Install(context.Background(), reqs, filepath.Join(dir, "venv"), pyinstall.InstallOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Packages, "metadata hooks:", res.MetadataHooks, "built:", res.Built)
	// Output: [native-ext==1.0] metadata hooks: 1 built: 1
}
