package pyinstall

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
)

// buildServerScript is a build server: one interpreter that imports what the
// PEP 517 hooks need once, then forks a child per build request read from
// stdin (a JSON line: id, source directory, output directory, work
// directory, and the requirements its build environment was made with).
// Each child runs in its own source tree with its output in a log file,
// asks get_requires_for_build_wheel (and stops there, reporting them, if it
// wants requirements the environment lacks), asks the metadata hook (or
// builds at once when the backend has none), then builds the wheel, and
// reports on the server's stdout as it goes ({"id", "event":
// "step"|"requires"|"metadata"|"wheel", "name", "list"}); the server reports each
// child's exit ({"id", "event": "exit", "code"}). A child dies with the
// server (PR_SET_PDEATHSIG); at the end of stdin the server kills its
// children and exits. Forking a started interpreter costs a millisecond
// where starting one costs tens: that is the whole point.
const buildServerScript = unmetRequiresPy + `
import ctypes, importlib, json, os, signal, sys, threading, time, traceback
import base64, hashlib, tomllib, zipfile
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except Exception:
    _prctl = None
lock = threading.Lock()
pids = {}
server = os.getpid()

def emit(obj):
    data = (json.dumps(obj) + "\n").encode()
    with lock:
        os.write(1, data)

def reaper():
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            time.sleep(0.005)
            continue
        with lock:
            rid = pids.pop(pid, None)
        if rid is not None:
            emit({"id": rid, "event": "exit", "code": os.waitstatus_to_exitcode(status)})

def child(req):
    if _prctl is not None:
        _prctl(1, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != server:
        os._exit(1)
    evfd = os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    def ev(**kw):
        kw["id"] = req["id"]
        os.write(evfd, (json.dumps(kw) + "\n").encode())
    log = os.open(os.path.join(req["out"], "build.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ["HOME"] = req["work"]
    code = 0
    try:
        src, out = req["src"], req["out"]
        os.chdir(src)
        bs = {}
        if os.path.exists("pyproject.toml"):
            with open("pyproject.toml", "rb") as f:
                bs = tomllib.load(f).get("build-system", {})
        backend = bs.get("build-backend") or "setuptools.build_meta:__legacy__"
        for p in reversed(bs.get("backend-path", [])):
            sys.path.insert(0, os.path.abspath(p))
        mod, _, obj = backend.partition(":")
        b = importlib.import_module(mod)
        for a in [x for x in obj.split(".") if x]:
            b = getattr(b, a)
        gr = getattr(b, "get_requires_for_build_wheel", None)
        if gr is not None:
            ev(event="step", name="get_requires_for_build_wheel")
            asked = gr(None)
            if not isinstance(asked, (list, tuple)) or not all(isinstance(x, str) for x in asked):
                raise TypeError("get_requires_for_build_wheel returned %r, not a list of strings" % (asked,))
            if _unmet(asked, req["have"]):
                sys.stdout.flush()
                ev(event="requires", list=list(asked))
                os._exit(0)
        hook = getattr(b, "prepare_metadata_for_build_wheel", None)
        ev(event="step", name="prepare_metadata_for_build_wheel" if hook is not None else "build_wheel")
        mdpath = None
        if hook is not None:
            md = os.path.join(out, "metadata")
            os.mkdir(md)
            name = hook(md)
            sys.stdout.flush()
            ev(event="metadata", name="metadata/" + name)
            mdpath = os.path.join(md, name)
        wd = os.path.join(out, "wheel")
        os.mkdir(wd)
        name = b.build_wheel(wd, None, mdpath) if mdpath else b.build_wheel(wd)
        sys.stdout.flush()
        ev(event="wheel", name="wheel/" + name)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)

threading.Thread(target=reaper, daemon=True).start()
for line in sys.stdin:
    req = json.loads(line)
    with lock:
        pid = os.fork()
        if pid == 0:
            child(req)
        pids[pid] = req["id"]
with lock:
    for pid in list(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
`

// buildServer is one running build server for one interpreter.
type buildServer struct {
	in     *Installer
	python string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.Reader
	dir    string
	stderr *lockedBuffer

	stopKill func() bool

	mu     sync.Mutex
	nextID int
	runs   map[int]*serverRun
	dead   error
}

// serverRun is a hookRun the server is carrying out.
type serverRun struct {
	*hookRun
	p         *preparedSource
	out       string
	wheelName string
	metaOpen  bool
	// step is the hook the child is in; asked is what its
	// get_requires_for_build_wheel wants that its environment lacks.
	step  string
	asked []string
}

// startBuildServer starts a build server for python through the sandbox.
// It runs until ctx ends (which kills it and, with it, its children) or
// close; the caller runs serve, which reads its reports, in a goroutine.
func (in *Installer) startBuildServer(ctx context.Context, python string) (*buildServer, error) {
	dir, err := in.buildTemp(ctx, "buildserver-")
	if err == nil {
		err = in.forBuild(dir, true, 0)
	}
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, python, "-I", "-c", buildServerScript)
	cmd.Dir = dir
	cmd.Env = []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=" + dir,
		"LANG=C.UTF-8",
		"PYTHONDONTWRITEBYTECODE=1",
		"PYTHONUNBUFFERED=1",
		"SOURCE_DATE_EPOCH=315532800",
	}
	srv := &buildServer{in: in, python: python, dir: dir, stderr: &lockedBuffer{}, runs: map[int]*serverRun{}}
	cmd.Stderr = srv.stderr
	if in.cfg.Sandbox != nil {
		wrapped, err := in.cfg.Sandbox(ctx, cmd)
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("pyinstall: build sandbox: %w", err)
		}
		cmd = wrapped
	}
	// The server's stdin and stdout are the installer's pipes, whatever
	// the wrapper is.
	cmd.Stdin, cmd.Stdout = nil, nil
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pyinstall: start build server %s: %w", python, err)
	}
	// A command the sandbox made is not tied to ctx: kill it when ctx
	// ends, as exec.CommandContext would.
	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	srv.stopKill = stop
	srv.cmd, srv.stdin, srv.stdout = cmd, stdin, stdout
	return srv, nil
}

// serve dispatches the server's reports to the runs until it exits, then
// fails whatever is still pending.
func (b *buildServer) serve() {
	stdout, dir := b.stdout, b.dir
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev struct {
			ID    int      `json:"id"`
			Event string   `json:"event"`
			Name  string   `json:"name"`
			List  []string `json:"list"`
			Code  int      `json:"code"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		b.mu.Lock()
		r := b.runs[ev.ID]
		if ev.Event == "exit" {
			delete(b.runs, ev.ID)
		}
		b.mu.Unlock()
		if r == nil {
			continue
		}
		b.in.log.Debug("pyinstall: build server report", "package", r.p.pkg, "event", ev.Event, "name", ev.Name)
		switch ev.Event {
		case "metadata":
			r.metadata(ev.Name)
		case "wheel":
			r.wheelName = ev.Name
		case "step":
			r.step = ev.Name
		case "requires":
			r.asked = append([]string{}, ev.List...)
		case "exit":
			r.exit(ev.Code)
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	werr := b.cmd.Wait()
	b.stopKill()
	if g := b.cmd.Process; g != nil {
		_ = syscall.Kill(-g.Pid, syscall.SIGKILL) // any child left
	}
	_ = os.RemoveAll(dir)
	b.mu.Lock()
	b.dead = fmt.Errorf("build server %s exited: %v: %s", b.python, werr, tail(b.stderr.bytes(), 10))
	runs := b.runs
	b.runs = map[int]*serverRun{}
	b.mu.Unlock()
	for _, r := range runs {
		r.fail(b.dead)
	}
}

// close ends the server's input: it kills its children and exits.
func (b *buildServer) close() { _ = b.stdin.Close() }

// submit asks the server to prepare metadata and build a wheel for p, which
// must be built with this server's interpreter.
func (b *buildServer) submit(p *preparedSource) (*hookRun, error) {
	_, have := p.env()
	out, err := os.MkdirTemp(p.work, "out-")
	if err == nil {
		err = b.in.forBuild(out, true, 0)
	}
	if err != nil {
		return nil, err
	}
	r := &serverRun{hookRun: &hookRun{metaDone: make(chan struct{}), done: make(chan struct{})}, p: p, out: out, metaOpen: true}
	b.mu.Lock()
	if b.dead != nil {
		b.mu.Unlock()
		return nil, b.dead
	}
	b.nextID++
	id := b.nextID
	b.runs[id] = r
	line, _ := json.Marshal(map[string]any{"id": id, "src": p.dir, "out": out, "work": p.work, "have": append([]string{}, have...)})
	b.in.log.Debug("pyinstall: build server request", "package", p.pkg, "id", id)
	_, err = b.stdin.Write(append(line, '\n'))
	if err != nil {
		delete(b.runs, id)
	}
	b.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("pyinstall: build server %s: %w", b.python, err)
	}
	return r.hookRun, nil
}

func (r *serverRun) output() []byte {
	data, _ := os.ReadFile(filepath.Join(r.out, "build.log"))
	return data
}

func (r *serverRun) bad(step string, err error) error {
	out := r.output()
	return &BuildError{Package: r.p.pkg, Version: r.p.version, Source: r.p.source, Step: step, Err: err, StderrTail: tail(out, 20), Network: networkRe.Match(out)}
}

func (r *serverRun) endMeta(err error) {
	if r.metaOpen {
		r.metaErr = err
		r.metaOpen = false
		close(r.metaDone)
	}
}

func (r *serverRun) metadata(name string) {
	dir, err := takeHookResult(r.out, name, true)
	if err != nil {
		r.endMeta(r.bad("prepare_metadata_for_build_wheel", err))
		return
	}
	r.meta = hookResult{metadataDir: dir}
	r.endMeta(nil)
}

func (r *serverRun) exit(code int) {
	step := "prepare_metadata_for_build_wheel"
	if r.step != "" {
		step = r.step
	}
	if !r.metaOpen {
		step = "build_wheel"
	}
	switch {
	case code != 0:
		be := r.bad(step, fmt.Errorf("exit status %d", code)).(*BuildError)
		// A child's status as the server saw it: -9 for SIGKILL.
		be.Killed = code == -int(syscall.SIGKILL)
		r.err = be
	case r.asked != nil:
		r.err = &dynamicRequiresError{asked: r.asked}
	case r.wheelName == "":
		r.err = r.bad(step, errors.New("backend returned no wheel name"))
	default:
		w, err := takeHookResult(r.out, r.wheelName, false)
		if err != nil {
			r.err = r.bad("build_wheel", err)
		} else {
			r.wheel = w
			if r.metaOpen {
				// No metadata hook: the wheel is the metadata.
				r.meta = hookResult{wheel: w}
			}
		}
	}
	if r.err != nil {
		r.endMeta(r.err)
	}
	r.endMeta(nil)
	close(r.done)
}

func (r *serverRun) fail(err error) {
	r.err = err
	r.endMeta(err)
	close(r.done)
}
