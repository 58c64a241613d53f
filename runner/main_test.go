package runner_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paaskit/paaskit/runner"
	"github.com/stretchr/testify/require"
)

// imageDir is a directory holding the test app binary, built once per test
// binary; it serves as every test app's image.
var imageDir string

// initHelper is internal/cmd/runnerinit built without the race detector:
// the init helper of the suite's runners (see newEnvFront).
var initHelper string

func TestMain(m *testing.M) {
	// A sandbox's init helper is this test binary re-executed.
	runner.Init()
	runChild()
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	// Children of this binary (the suite's second run, the child modes)
	// inherit the setting; see quickExit.
	os.Setenv("GORACE", withQuickExit(os.Getenv("GORACE")))
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "runner's tests build real sandboxes (namespaces, cgroups, other UIDs) and must run as root, as `make test` does in CI")
		return 1
	}
	dir, err := os.MkdirTemp("", "runner-image")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "testapp"), "github.com/paaskit/paaskit/internal/testapp")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build the test app (needs the go tool, as `make test` has): %v\n%s", err, out)
		return 1
	}
	imageDir = dir
	helperDir, err := os.MkdirTemp("", "runner-init")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(helperDir)
	initHelper = filepath.Join(helperDir, "runnerinit")
	cmd = exec.Command("go", "build", "-o", initHelper, "github.com/paaskit/paaskit/internal/cmd/runnerinit")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build the init helper: %v\n%s", err, out)
		return 1
	}
	code := m.Run()
	set := func(name string) bool { f := flag.Lookup(name); return f != nil && f.Value.String() != "" }
	if os.Getenv(frontEnv) == "" && code == 0 && !set("test.fuzz") && !set("test.bench") {
		// The whole suite again with the front's event loops off, so
		// both fronts keep every behaviour.
		args := os.Args[1:]
		if !set("test.skip") {
			args = append(args, "-test.skip", "^("+strings.Join(sandboxOnlyTests, "|")+")$")
		}
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), frontEnv+"=goroutines")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		fmt.Println("runner: the suite again on the goroutine-per-connection front (EventLoops -1)")
		if err := cmd.Run(); err != nil {
			fmt.Println("runner: goroutine-front run failed:", err)
			code = 1
		}
	}
	return code
}

// sandboxOnlyTests are left out of the goroutine-front run: they build
// sandboxes, spawn commands or parse specs and send no request through a
// front, or only plain GETs that make an app try its sandbox (network
// policy, egress, the host's ip_forward, the init-helper pool), which
// the front serves as any other; a second run tests nothing new and cost
// about half the package's time. A test of what the front does with a
// request stays out of this list.
var sandboxOnlyTests = []string{
	"TestDetectCgroupsOnThisHost", "TestUnescapeMount",
	"TestFloodOfOutputKeepsRunnerMemoryBounded", "TestLongLinesAreSplitAndMarked", "TestForkBombIsStoppedByProcessLimit",
	"TestWritesOutsideDataAreRefused", "TestSignallingAnotherAppIsRefused", "TestSignallingAnotherAppIsRefusedWithoutPIDNamespace",
	"TestUIDsAreStableAcrossRestarts", "TestCommandRunsInTheAppSandbox", "TestCPUAndMemoryAreAccounted",
	"TestPutRejectsBadSpecsAndHostClashes", "TestOutputIsCapturedWithTags", "TestLimitsApplyInsideTheSandbox",
	"TestSandboxHoldsNoCapabilityAndNoNewPrivs", "TestDeniedSystemCallsFailWithEPERM", "TestSeccompCanBeSwitchedOffAndIsReported",
	"TestThousandConfiguredAppsCostNoProcessAndLittleMemory", "TestFileSink", "TestNewChecksInitHelper",
	"TestBadNetworkSpecsAreRefusedAndOthersUnaffected", "TestNothingOfTheNetworkOutlivesASIGKILLedRunner",
	"TestRunnerWithoutCapNetAdminReportsWhatIsMissing", "TestTwoRunnersOnOneEgressSubnetIsAClearError",
	"TestParseBytes", "TestDurationAndBytesJSON", "TestSpecValidate", "TestLoadSpecFile", "TestUIDTablePersistsAtomically", "TestNormHost",
	"TestSubIDOverlapsAreFound", "TestTamperedUIDTableIsRefused", "TestStateDirectoryWritableByOthersIsRefused",
	"TestFileSinkRotatesBySizeAndKeepsABoundedNumber", "TestCopyChunkedPassesBodyThrough",
	"TestCommandsGetTheAppsNetworkPolicy", "TestCommandMountsAndEnvironment", // a command's network and mounts; the front only sets up the other app
	"TestCopyChunkedReencodesTheBody", "TestChunkedBodyReads",
	"TestNetworkPolicyNoneIsLoopbackOnly", "TestEgressReachesAllowedDestinationsOnly", "TestTwoRunnersShareIPForward",
	"TestInitHelperPool", "ExampleRunner_Command",
}

// frontEnv selects the front the whole suite runs on: unset, the default
// (event loops for warm requests), and TestMain runs the suite again with
// "goroutines", a goroutine per connection (Config.EventLoops -1); any
// other value, the default front only (bench/sections/40-runner.sh).
// Benchmarks run once.
const frontEnv = "PAASKIT_RUNNER_TEST_FRONT"

var cgroupSeq atomic.Int64

// quickExit has cmd's process, when it is this test binary built with
// the race detector, exit at once rather than after the race runtime's
// default second of sleep (GORACE atexit_sleep_ms, taken on every exit
// with status 0). A one-off command's init helper is this binary, with an
// environment of the runner's making, which carries no GORACE: each
// command would last a second longer than it runs. The helper gives the
// command the environment of its spec, not its own, so the app never
// sees the setting. Without the race detector the variable is ignored.
func quickExit(cmd *exec.Cmd) *exec.Cmd {
	cmd.Env = append(cmd.Env, "GORACE="+withQuickExit(os.Getenv("GORACE")))
	return cmd
}

// withQuickExit adds atexit_sleep_ms=0 to a GORACE value that does not
// set it.
func withQuickExit(gorace string) string {
	if strings.Contains(gorace, "atexit_sleep_ms=") {
		return gorace
	}
	return strings.TrimSpace(gorace + " atexit_sleep_ms=0")
}

// memSink keeps every line in memory, per app; tests read it.
type memSink struct {
	mu    sync.Mutex
	lines []runner.Line
	bytes atomic.Int64
	count atomic.Int64
	keep  bool
}

func (s *memSink) WriteLine(l *runner.Line) error {
	s.bytes.Add(int64(len(l.Text)))
	s.count.Add(1)
	if !s.keep {
		return nil
	}
	c := *l
	c.Text = append([]byte(nil), l.Text...)
	s.mu.Lock()
	s.lines = append(s.lines, c)
	s.mu.Unlock()
	return nil
}

func (s *memSink) text(app string, stream runner.Stream) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, l := range s.lines {
		if l.App == app && l.Stream == stream {
			b.Write(l.Text)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

type env struct {
	t     testing.TB
	r     *runner.Runner
	state string
	sink  *memSink
	front string // host:port of the front
	cfg   runner.Config
	stop  func() // stops the front and the runner, once
}

// shutdown stops the env's front and runner now rather than at cleanup.
func (e *env) shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() { e.stop(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// front is one way to serve the runner's front in a test.
type front struct {
	name    string
	tweak   func(*runner.Config)
	handler bool // net/http serving Runner.ServeHTTP
}

// fronts are the fronts the front tests run on: Serve with its default
// event loops, Serve with a goroutine per connection, and net/http.
var fronts = []front{
	{name: "loops"},
	{name: "goroutines", tweak: func(c *runner.Config) { c.EventLoops = -1 }},
	{name: "net/http", handler: true},
}

// newEnv builds a Runner on a fresh state directory with fast timings,
// runs it and serves its front on loopback; both stop at cleanup.
func newEnv(t testing.TB, tweak func(*runner.Config)) *env {
	t.Helper()
	return newEnvFront(t, tweak, false)
}

// newEnvFront is newEnv with a choice of front: Runner.Serve (the fast
// path, the default) or net/http serving Runner.ServeHTTP.
func newEnvFront(t testing.TB, tweak func(*runner.Config), handler bool) *env {
	t.Helper()
	state, err := os.MkdirTemp("", "rt")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(state, 0o711))
	sink := &memSink{keep: true}
	cfg := runner.Config{
		StateDir:            state,
		CgroupRoot:          fmt.Sprintf("paaskit-test-%d-%d", os.Getpid(), cgroupSeq.Add(1)),
		DefaultStartTimeout: 10 * time.Second,
		StopGrace:           2 * time.Second,
		ReapInterval:        20 * time.Millisecond,
		DefaultLimits:       runner.Limits{Memory: 256 << 20},
		Sink:                sink,
	}
	// Tests start their sandboxes from a helper built without the race
	// detector (see internal/cmd/runnerinit); benchmarks, and tests that
	// set InitPath back to "", measure and test the default, this very
	// binary re-executed.
	if _, bench := t.(*testing.B); !bench {
		cfg.InitPath = initHelper
	}
	if tweak != nil {
		tweak(&cfg)
	}
	if cfg.EventLoops == 0 && os.Getenv(frontEnv) == "goroutines" {
		cfg.EventLoops = -1
	}
	r, err := runner.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-r.Ready()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: r}
	frontCtx, frontCancel := context.WithCancel(context.Background())
	frontDone := make(chan error, 1)
	if handler {
		go srv.Serve(l)
	} else {
		go func() { frontDone <- r.Serve(frontCtx, l) }()
	}
	stop := func() {
		if handler {
			srv.Close()
		} else {
			frontCancel()
			select {
			case err := <-frontDone:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Errorf("Serve did not return within 30s of cancel")
			}
		}
		frontCancel()
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return within 30s of cancel")
		}
		os.RemoveAll(state)
	}
	e := &env{t: t, r: r, state: state, sink: sink, front: l.Addr().String(), cfg: cfg}
	var once sync.Once
	e.stop = func() { once.Do(stop) }
	t.Cleanup(func() { e.stop() })
	return e
}

// spec returns a spec for the test app in mode (args) serving host name.
func spec(name string, args ...string) runner.Spec {
	return runner.Spec{
		Name:    name,
		Hosts:   []string{name + ".example"},
		Image:   imageDir,
		Command: append([]string{"/app/testapp"}, args...),
	}
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 200}, Timeout: 60 * time.Second}

// get sends GET path with Host host to the front.
func (e *env) get(host, path string) (int, string, http.Header) {
	e.t.Helper()
	req, err := http.NewRequest("GET", "http://"+e.front+path, nil)
	require.NoError(e.t, err)
	req.Host = host
	resp, err := client.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return resp.StatusCode, string(b), resp.Header
}

func (e *env) mustGet(host, path string) string {
	e.t.Helper()
	code, body, _ := e.get(host, path)
	require.Equal(e.t, 200, code, "GET %s%s: %s", host, path, body)
	return body
}

func (e *env) put(s runner.Spec) {
	e.t.Helper()
	require.NoError(e.t, e.r.Put(s))
}

func (e *env) status(app string) runner.AppStatus {
	e.t.Helper()
	st, err := e.r.AppStatus(app)
	require.NoError(e.t, err)
	return st
}

type whoami struct {
	UID      int    `json:"uid"`
	GID      int    `json:"gid"`
	PID      int    `json:"pid"`
	PPID     int    `json:"ppid"`
	Hostname string `json:"hostname"`
	Socket   string `json:"socket"`
	App      string `json:"app"`
}

func (e *env) whoami(host string) whoami {
	e.t.Helper()
	var w whoami
	require.NoError(e.t, json.Unmarshal([]byte(e.mustGet(host, "/whoami")), &w))
	return w
}

// procsOfUID lists the host pids of processes running as uid.
func procsOfUID(uid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" && f[1] == strconv.Itoa(uid) {
				out = append(out, pid)
			}
		}
	}
	return out
}

// childrenOf lists the direct children of pid.
func childrenOf(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

func heapInuse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func killPid(pid int) error { return syscallKill(pid) }
