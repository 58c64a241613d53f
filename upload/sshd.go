package upload

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/paaskit/paaskit/upload/pyinstall"
)

// ServerConfig configures a Server. Zero values are the documented
// defaults; the fields marked required have none.
type ServerConfig struct {
	// Addr is the TCP address to listen on when Listener is nil.
	// Default "127.0.0.1:2222".
	Addr string
	// Listener, if set, is served instead of listening on Addr; Run
	// closes it.
	Listener net.Listener
	// HostKeyFile holds the server's private host key (OpenSSH format).
	// If it does not exist an Ed25519 key is generated and written there
	// (mode 0600), with its public half in HostKeyFile+".pub", so clients
	// see the same host key across restarts. An existing file readable by
	// group or others is refused, as sshd does. Required.
	HostKeyFile string
	// Keys says whose a public key is and what it may do. Required.
	Keys KeyStore
	// RepoDir holds a bare repository per app: APP.git for git, APP.hg
	// for Mercurial, created on first use. Required.
	RepoDir string
	// StoreDir is the image store: images (<hex>.squashfs) and each
	// app's releases. Required.
	StoreDir string
	// Keep is how many releases per app the store keeps for rollback.
	// Default 5.
	Keep int
	// Build configures the builder of each push; its StoreDir is
	// replaced by StoreDir. Its Installer is used only when Installer
	// below is nil.
	Build BuilderConfig
	// Installer, if set, is the configuration of the Python installer
	// (its CacheDir shared by every build). Each build gets an Installer
	// of its own made from it, whose Progress also streams every event
	// to the pushing client as a line (a Progress set here is called
	// too). With neither this nor Build.Installer, an app with a
	// requirements.txt fails to build.
	Installer *pyinstall.Config
	// Activate makes a newly built (or rolled-back-to) image live for
	// app: the platform mounts it and points the app's instances at it
	// (examples/platform wires it to runner). It is called from the
	// session's goroutine with the app's push lock held, so it never
	// runs twice at once for one app; its context is not cancelled when
	// the pushing client disconnects (an activation is not left half
	// done), only when the server stops. An error is shown to the client,
	// the push fails and the previous image stays live. Nil means images
	// are only recorded as live.
	Activate func(ctx context.Context, app string, img *Image) error
	// Command returns the command that runs argv in app's sandbox, as
	// app's identity (runner.Command in the platform). It serves `run`,
	// and rsync and scp into the data directory, which is why it must
	// never run argv as the server's own user. The server sets Stdin,
	// Stdout and Stderr (or a pty) and runs it. Nil means run, rsync and
	// scp are refused.
	Command func(app string, argv []string) (*exec.Cmd, error)
	// DataPath is where app's data directory is as Command's programs
	// see it. Default: "/data" for every app (runner mounts it there).
	DataPath func(app string) string
	// MaxPushSize bounds the bytes a git or hg push may send. Default
	// 256 MiB.
	MaxPushSize int64
	// MaxArchiveSize bounds an archive sent to `deploy APP`. Default
	// 256 MiB.
	MaxArchiveSize int64
	// Branch is the git branch (and hg named branch) a push deploys.
	// Default: git's main, or master when main was not pushed; hg's
	// default.
	Branch string
	// Git and Hg are the programs. Defaults "git" and "hg" on PATH
	// (Debian packages git and mercurial).
	Git, Hg string
	// HandshakeTimeout bounds an SSH handshake and authentication.
	// Default 30 s.
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds connections not yet authenticated (sshd's
	// MaxStartups); a connection beyond it is closed at once. Default
	// 64.
	MaxHandshakes int
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

var branchRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$`)

// Server is the upload endpoint: an SSH server that takes git and hg
// pushes and builds and activates their images, deploys archives, rolls
// back, runs commands in an app's sandbox and serves rsync and scp into
// its data directory. It never runs a shell. See the package
// documentation for the commands.
type Server struct {
	cfg      ServerConfig
	log      *slog.Logger
	ln       net.Listener
	sshCfg   *ssh.ServerConfig
	releases *Releases
	git, hg  string
	// httpClient is shared by the builds' installers (nil when the
	// configuration brings its own).
	httpClient *http.Client

	locksMu sync.Mutex
	locks   map[string]*fifoLock

	handshakes chan struct{} // a token per connection not yet authenticated

	connsMu sync.Mutex
	conns   map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// NewServer validates cfg, loads or creates the host key, opens the image
// store and starts listening (so Addr is known before Run).
func NewServer(cfg ServerConfig) (*Server, error) {
	switch {
	case cfg.HostKeyFile == "":
		return nil, errors.New("upload: ServerConfig.HostKeyFile is required")
	case cfg.Keys == nil:
		return nil, errors.New("upload: ServerConfig.Keys is required")
	case cfg.RepoDir == "":
		return nil, errors.New("upload: ServerConfig.RepoDir is required")
	case cfg.StoreDir == "":
		return nil, errors.New("upload: ServerConfig.StoreDir is required")
	case cfg.Keep < 0, cfg.MaxPushSize < 0, cfg.MaxArchiveSize < 0, cfg.HandshakeTimeout < 0, cfg.MaxHandshakes < 0:
		return nil, errors.New("upload: ServerConfig: negative Keep, MaxPushSize, MaxArchiveSize, HandshakeTimeout or MaxHandshakes")
	}
	if cfg.Branch != "" {
		if !branchRE.MatchString(cfg.Branch) {
			return nil, fmt.Errorf("upload: ServerConfig.Branch %q is not a plain branch name", cfg.Branch)
		}
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:2222"
	}
	if cfg.Keep == 0 {
		cfg.Keep = 5
	}
	if cfg.MaxPushSize == 0 {
		cfg.MaxPushSize = 256 << 20
	}
	if cfg.MaxArchiveSize == 0 {
		cfg.MaxArchiveSize = 256 << 20
	}
	if cfg.DataPath == nil {
		cfg.DataPath = func(string) string { return "/data" }
	}
	if cfg.Git == "" {
		cfg.Git = "git"
	}
	if cfg.Hg == "" {
		cfg.Hg = "hg"
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 30 * time.Second
	}
	if cfg.MaxHandshakes == 0 {
		cfg.MaxHandshakes = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, locks: map[string]*fifoLock{}, conns: map[net.Conn]struct{}{},
		handshakes: make(chan struct{}, cfg.MaxHandshakes)}
	var err error
	if s.git, err = exec.LookPath(cfg.Git); err != nil {
		return nil, fmt.Errorf("upload: %s not found (apt-get install git): %w", cfg.Git, err)
	}
	// hg is optional: without it hg pushes are refused.
	if s.hg, err = exec.LookPath(cfg.Hg); err != nil {
		s.log.Warn("upload: hg not found; hg pushes will be refused (apt-get install mercurial)", "hg", cfg.Hg)
		s.hg = ""
	}
	if err := os.MkdirAll(cfg.RepoDir, 0o755); err != nil {
		return nil, fmt.Errorf("upload: repository dir %s: %w", cfg.RepoDir, err)
	}
	if s.releases, err = OpenReleases(cfg.StoreDir, cfg.Keep); err != nil {
		return nil, err
	}
	if cfg.Installer != nil && cfg.Installer.HTTPClient == nil {
		// One client for every build's installer, so index connections
		// are reused across pushes instead of idling per build.
		s.httpClient = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   30 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			MaxIdleConnsPerHost:   32,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		}}
	}
	// Validate the build configuration once, here, not at the first push.
	if _, err := s.newBuilder(nil); err != nil {
		return nil, err
	}
	signer, err := loadOrCreateHostKey(cfg.HostKeyFile)
	if err != nil {
		return nil, err
	}
	s.sshCfg = &ssh.ServerConfig{
		PublicKeyCallback: s.authenticate,
		ServerVersion:     "SSH-2.0-paaskit-upload",
	}
	s.sshCfg.AddHostKey(signer)
	s.ln = cfg.Listener
	if s.ln == nil {
		if s.ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("upload: listen on %s: %w", cfg.Addr, err)
		}
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Releases is the server's image store.
func (s *Server) Releases() *Releases { return s.releases }

// Run serves SSH connections until ctx is cancelled, then closes the
// listener and every connection (killing the commands and cancelling the
// builds they run; an activation in progress finishes) and returns once
// every session has ended.
func (s *Server) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		s.ln.Close()
		s.connsMu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		s.connsMu.Unlock()
	})
	defer stop()
	s.log.Info("upload: ssh endpoint listening", "addr", s.ln.Addr().String())
	var err error
	for {
		var nc net.Conn
		nc, err = s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				err = nil
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			err = fmt.Errorf("upload: accept on %s: %w", s.ln.Addr(), err)
			break
		}
		s.connsMu.Lock()
		if s.closed {
			s.connsMu.Unlock()
			nc.Close()
			continue
		}
		s.conns[nc] = struct{}{}
		s.wg.Add(1)
		s.connsMu.Unlock()
		go s.serveConn(ctx, nc)
	}
	s.ln.Close()
	if err != nil {
		// A broken listener stops the server: close what it serves.
		s.connsMu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		s.connsMu.Unlock()
	}
	s.wg.Wait()
	if s.httpClient != nil {
		s.httpClient.CloseIdleConnections()
	}
	return err
}

// authenticate is the public-key callback: the key store decides. A key it
// does not know gets a banner saying so (OpenSSH prints it) rather than a
// bare "Permission denied".
func (s *Server) authenticate(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	id, err := s.cfg.Keys.Lookup(key)
	if err != nil {
		fp := ssh.FingerprintSHA256(key)
		s.log.Info("upload: key refused", "remote", meta.RemoteAddr().String(), "fingerprint", fp, "err", err)
		return nil, &ssh.BannerError{Err: err, Message: fmt.Sprintf("refused: key %s is not known here; ask an operator to add it\n", fp)}
	}
	return &ssh.Permissions{Extensions: map[string]string{"pubkey": string(key.Marshal()), "user": id.User}}, nil
}

// serveConn runs one SSH connection: its session channels, each in its own
// goroutine. Its context ends when the connection does, which cancels the
// builds and kills the commands it started.
func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	defer s.wg.Done()
	defer func() {
		nc.Close()
		s.connsMu.Lock()
		delete(s.conns, nc)
		s.connsMu.Unlock()
	}()
	select {
	case s.handshakes <- struct{}{}:
	default:
		s.log.Warn("upload: too many connections authenticating; dropping one", "remote", nc.RemoteAddr().String(), "max", s.cfg.MaxHandshakes)
		return
	}
	_ = nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	conn, chans, reqs, err := ssh.NewServerConn(nc, s.sshCfg)
	<-s.handshakes
	if err != nil {
		s.log.Debug("upload: ssh handshake failed", "remote", nc.RemoteAddr().String(), "err", err)
		return
	}
	_ = nc.SetDeadline(time.Time{})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go ssh.DiscardRequests(reqs)
	var sessions sync.WaitGroup
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "only session channels are served")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		sessions.Add(1)
		go func() {
			defer sessions.Done()
			s.serveSession(ctx, conn, ch, creqs)
		}()
	}
	// The connection is gone: stop what its sessions run.
	cancel()
	sessions.Wait()
}

// fifoLock is a mutual exclusion lock taken in the order it was asked
// for: pushes of one app build in the order they arrived.
type fifoLock struct {
	mu      sync.Mutex
	held    bool
	waiters []chan struct{}
}

// lock takes the lock, calling waiting (once, with how many are ahead)
// if it must wait, or returns ctx's error having taken nothing.
func (l *fifoLock) lock(ctx context.Context, waiting func(ahead int)) error {
	l.mu.Lock()
	if !l.held {
		l.held = true
		l.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	l.waiters = append(l.waiters, ch)
	ahead := len(l.waiters)
	l.mu.Unlock()
	if waiting != nil {
		waiting(ahead)
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		for i, w := range l.waiters {
			if w == ch {
				l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
				l.mu.Unlock()
				return ctx.Err()
			}
		}
		l.mu.Unlock()
		// Handed over just as ctx ended: pass it on.
		l.unlock()
		return ctx.Err()
	}
}

func (l *fifoLock) unlock() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.waiters) > 0 {
		ch := l.waiters[0]
		l.waiters = l.waiters[1:]
		close(ch) // ownership passes; held stays true
		return
	}
	l.held = false
}

func (s *Server) appLock(app string) *fifoLock {
	s.locksMu.Lock()
	defer s.locksMu.Unlock()
	l, ok := s.locks[app]
	if !ok {
		l = &fifoLock{}
		s.locks[app] = l
	}
	return l
}

// newBuilder makes the builder of one build, its installer's progress
// going to progress (nil: nowhere extra).
func (s *Server) newBuilder(progress func(pyinstall.Event)) (*Builder, error) {
	bc := s.cfg.Build
	bc.StoreDir = s.cfg.StoreDir
	if bc.Logger == nil {
		bc.Logger = s.log
	}
	if s.cfg.Installer != nil {
		ic := *s.cfg.Installer
		if ic.Logger == nil {
			ic.Logger = s.log
		}
		own := ic.Progress
		if progress != nil || own != nil {
			ic.Progress = func(ev pyinstall.Event) {
				if progress != nil {
					progress(ev)
				}
				if own != nil {
					own(ev)
				}
			}
		}
		if ic.HTTPClient == nil {
			ic.HTTPClient = s.httpClient
		}
		in, err := pyinstall.New(ic)
		if err != nil {
			return nil, fmt.Errorf("upload: installer: %w", err)
		}
		bc.Installer = in
	}
	return NewBuilder(bc)
}

// loadOrCreateHostKey reads the host key at path, creating an Ed25519 one
// there if it does not exist.
func loadOrCreateHostKey(path string) (ssh.Signer, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("upload: generate host key: %w", err)
		}
		block, err := ssh.MarshalPrivateKey(priv, "paaskit upload host key")
		if err != nil {
			return nil, fmt.Errorf("upload: encode host key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("upload: host key %s: %w", path, err)
		}
		// CreateTemp makes the file 0600.
		if err := writeFileAtomic(path, pem.EncodeToMemory(block)); err != nil {
			return nil, fmt.Errorf("upload: write host key %s: %w", path, err)
		}
		signer, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			return nil, fmt.Errorf("upload: host key: %w", err)
		}
		if err := writeFileAtomic(path+".pub", ssh.MarshalAuthorizedKey(signer.PublicKey())); err != nil {
			return nil, fmt.Errorf("upload: write host key %s.pub: %w", path, err)
		}
		_ = os.Chmod(path+".pub", 0o644)
		return signer, nil
	}
	if err != nil {
		return nil, fmt.Errorf("upload: host key %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("upload: host key %s is readable by group or others (mode %04o); chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("upload: host key %s: %w", path, err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("upload: host key %s: %w", path, err)
	}
	return signer, nil
}

// lockState describes app's push lock ("free", or "held, N waiting"), for
// tests and debugging.
func (s *Server) lockState(app string) string {
	l := s.appLock(app)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held {
		return "free"
	}
	return fmt.Sprintf("held, %d waiting", len(l.waiters))
}
