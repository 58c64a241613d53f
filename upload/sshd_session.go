package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// session is one SSH session channel: at most one command, and the
// requests that come with it (pty-req before it, window-change and signal
// during it).
type session struct {
	srv  *Server
	conn *ssh.ServerConn
	ch   ssh.Channel

	mu         sync.Mutex
	pty        *ptyRequest
	resize     func(rows, cols uint16) error // set while a pty runs
	gitProto   string
	started    bool
	exitedOnce sync.Once
}

type ptyRequest struct {
	term       string
	cols, rows uint32
}

var gitProtocolRE = regexp.MustCompile(`^version=[0-9]$`)

func (s *Server) serveSession(ctx context.Context, conn *ssh.ServerConn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	sess := &session{srv: s, conn: conn, ch: ch}
	// The requests end when the channel closes: by us after the command,
	// or by the client going away, which must stop the command.
	ctx, cancel := context.WithCancel(ctx)
	var handler sync.WaitGroup
	defer func() {
		cancel()
		handler.Wait()
		ch.Close()
	}()
	for req := range reqs {
		switch req.Type {
		case "pty-req":
			var p struct {
				Term             string
				Cols, Rows, W, H uint32
				Modes            string
			}
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				_ = req.Reply(false, nil)
				continue
			}
			sess.mu.Lock()
			ok := !sess.started
			if ok {
				sess.pty = &ptyRequest{term: p.Term, cols: p.Cols, rows: p.Rows}
			}
			sess.mu.Unlock()
			_ = req.Reply(ok, nil)
		case "window-change":
			var w struct{ Cols, Rows, W, H uint32 }
			if err := ssh.Unmarshal(req.Payload, &w); err != nil {
				continue
			}
			// Resized under the lock: runInPty clears resize under it
			// before closing the terminal.
			sess.mu.Lock()
			if sess.pty != nil {
				sess.pty.cols, sess.pty.rows = w.Cols, w.Rows
			}
			if sess.resize != nil {
				_ = sess.resize(clampWin(w.Rows), clampWin(w.Cols))
			}
			sess.mu.Unlock()
		case "env":
			// Only git's protocol version is taken (git sends it with
			// SendEnv); other variables are refused, not passed on.
			var kv struct{ Name, Value string }
			ok := ssh.Unmarshal(req.Payload, &kv) == nil && kv.Name == "GIT_PROTOCOL" && gitProtocolRE.MatchString(kv.Value)
			if ok {
				sess.mu.Lock()
				sess.gitProto = kv.Value
				sess.mu.Unlock()
			}
			_ = req.Reply(ok, nil)
		case "exec", "shell", "subsystem":
			var line struct{ Value string }
			if req.Type != "shell" {
				if err := ssh.Unmarshal(req.Payload, &line); err != nil {
					_ = req.Reply(false, nil)
					continue
				}
			}
			sess.mu.Lock()
			already := sess.started
			sess.started = true
			sess.mu.Unlock()
			if already {
				_ = req.Reply(false, nil)
				continue
			}
			_ = req.Reply(true, nil)
			handler.Add(1)
			go func() {
				defer handler.Done()
				code := sess.dispatch(ctx, req.Type, line.Value)
				sess.exit(code)
			}()
		default:
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
}

func clampWin(v uint32) uint16 {
	if v > 0xffff {
		return 0xffff
	}
	return uint16(v)
}

// exit sends EOF, the exit status and closes the channel.
func (sess *session) exit(code int) {
	sess.exitedOnce.Do(func() {
		_ = sess.ch.CloseWrite()
		_, _ = sess.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
		_ = sess.ch.Close()
	})
}

// stderr writes a line to the client's stderr (a pty session has no
// separate stderr, so there it goes to the terminal with CR LF).
func (sess *session) say(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if len(msg) == 0 || msg[len(msg)-1] != '\n' {
		msg += "\n"
	}
	_, _ = io.WriteString(sess.ch.Stderr(), msg)
}

// dispatch parses and runs one request, returning the exit status.
func (sess *session) dispatch(ctx context.Context, kind, line string) int {
	s := sess.srv
	t0 := time.Now()
	user := sess.conn.Permissions.Extensions["user"]
	log := s.log.With("user", user, "remote", sess.conn.RemoteAddr().String())
	switch kind {
	case "shell":
		sess.say("refused: there is no shell here.\n%s", usage)
		log.Info("upload: shell refused")
		return 1
	case "subsystem":
		sess.say("refused: subsystem %q is not served (for scp use scp -O, or rsync -e ssh).", line)
		log.Info("upload: subsystem refused", "subsystem", line)
		return 1
	}
	// Look the key up again: a key removed since the connection was
	// authenticated stops working now.
	key, err := ssh.ParsePublicKey([]byte(sess.conn.Permissions.Extensions["pubkey"]))
	if err != nil {
		sess.say("refused: internal error reading your key")
		return 1
	}
	id, err := s.cfg.Keys.Lookup(key)
	if err != nil {
		sess.say("refused: key %s is not known here (any more)", ssh.FingerprintSHA256(key))
		log.Info("upload: key no longer known", "err", err)
		return 1
	}
	c, err := parseCommand(line)
	if err != nil {
		reason := err.Error()
		var ce *CommandError
		if errors.As(err, &ce) {
			reason = ce.Reason
		}
		sess.say("refused: %s", reason)
		log.Info("upload: command refused", "command", line, "err", err)
		return 1
	}
	if c.kind == cmdHelp {
		sess.say("%s", usage)
		return 0
	}
	if !id.Can(c.right(), c.app) {
		sess.say("refused: %s may not %s app %s", id.User, c.right(), c.app)
		log.Info("upload: no right", "command", line, "app", c.app, "right", c.right())
		return 1
	}
	log = log.With("app", c.app)
	var code int
	switch c.kind {
	case cmdGitReceive, cmdGitUpload:
		code = sess.git(ctx, log, id, c)
	case cmdHgServe:
		code = sess.hgServe(ctx, log, id, c)
	case cmdDeployArchive:
		code = sess.deployArchive(ctx, log, id, c)
	case cmdRollback:
		code = sess.rollback(ctx, log, id, c)
	case cmdReleases:
		code = sess.listReleases(c)
	case cmdRun, cmdRsync, cmdScp:
		code = sess.runCommand(ctx, log, c)
	default:
		sess.say("refused: not a command")
		code = 1
	}
	log.Info("upload: command done", "command", line, "exit", code, "elapsed", time.Since(t0).Round(time.Millisecond))
	return code
}
