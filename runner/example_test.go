package runner_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/paaskit/paaskit/runner"
)

// A node with one app: the first request starts the app's instance in its
// sandbox and is answered once the instance's socket accepts.
func ExampleRunner() {
	// In a real program, runner.Init() is the first line of main.
	state, _ := os.MkdirTemp("", "rx")
	defer os.RemoveAll(state)
	r, err := runner.New(runner.Config{StateDir: state, CgroupRoot: "paaskit-example", Sink: runner.SinkFunc(func(*runner.Line) error { return nil })})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	<-r.Ready()

	err = r.Put(runner.Spec{
		Name:    "blog",
		Hosts:   []string{"blog.example.com"},
		Image:   imageDir, // a directory with the app; /app in the sandbox
		Command: []string{"/app/testapp"},
		Limits:  runner.Limits{Memory: 128 << 20, Processes: 64},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest("GET", "http://Blog.Example.com/", nil))
	fmt.Print(rec.Code, " ", rec.Body.String())

	st, _ := r.AppStatus("blog")
	fmt.Println(st.State, st.Starts)

	cancel()
	fmt.Println(<-done)
	// Output:
	// 200 hello blog
	// running 1
	// <nil>
}

// One-off commands run in the app's sandbox, as its user, with its data
// directory at /data.
func ExampleRunner_Command() {
	state, _ := os.MkdirTemp("", "rx")
	defer os.RemoveAll(state)
	r, err := runner.New(runner.Config{StateDir: state, CgroupRoot: "paaskit-example", UIDMin: 70000, UIDMax: 70099})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }() // Run's end removes the commands' cgroup
	_ = r.Put(runner.Spec{Name: "shop", Hosts: []string{"shop.example"}, Image: imageDir, Command: []string{"/app/testapp"}})
	cmd, err := r.Command("shop", []string{"/bin/sh", "-c", "hostname; echo $HOME; touch /app/x 2>/dev/null || echo read-only"})
	if err != nil {
		fmt.Println(err)
		return
	}
	out, err := cmd.Output()
	fmt.Print(string(out))
	fmt.Println(err)
	// Output:
	// shop
	// /data
	// read-only
	// <nil>
}

func ExampleLoadSpecFile() {
	dir, _ := os.MkdirTemp("", "specs")
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "blog.json")
	_ = os.WriteFile(p, []byte(`{
		"name": "blog",
		"hosts": ["blog.example.com", "www.blog.example.com"],
		"image": "/",
		"command": ["/app/venv/bin/gunicorn", "--bind", "unix:/run/paaskit/app.sock", "blog:app"],
		"limits": {"memory": "256M", "processes": 128},
		"idle_timeout": "15m"
	}`), 0o644)
	s, err := runner.LoadSpecFile(p)
	fmt.Println(s.Name, s.Hosts, s.Limits.Memory, time.Duration(s.IdleTimeout), err)

	_ = os.WriteFile(p, []byte(`{"name": "blog", "limits": {"memroy": "1G"}}`), 0o644)
	_, err = runner.LoadSpecFile(p)
	fmt.Println(strings.Replace(err.Error(), dir, "DIR", 1))
	// Output:
	// blog [blog.example.com www.blog.example.com] 268435456 15m0s <nil>
	// runner: spec file DIR/blog.json: malformed JSON: json: unknown field "memroy"
}

func ExampleParseBytes() {
	n, err := runner.ParseBytes("256M")
	fmt.Println(n, err)
	_, err = runner.ParseBytes("lots")
	fmt.Println(err)
	// Output:
	// 268435456 <nil>
	// size "lots": want a number with an optional K, M or G suffix
}

func ExampleFileSink() {
	dir, _ := os.MkdirTemp("", "logs")
	defer os.RemoveAll(dir)
	s, _ := runner.NewFileSink(dir)
	_ = s.WriteLine(&runner.Line{App: "blog", Instance: 3, Stream: runner.Stderr,
		Time: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), Text: []byte("GET / 200")})
	_ = s.Close()
	b, _ := os.ReadFile(filepath.Join(dir, "blog.log"))
	fmt.Print(string(b))
	// Output:
	// 2026-05-01T12:00:00Z 3 stderr |GET / 200
}
