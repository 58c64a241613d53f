package upload

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os/exec"
	"path"
	"strings"
	"syscall"
	"time"
)

// runCommand serves run, rsync and scp: the command comes from
// Config.Command (the app's sandbox and identity), with a pty when the
// client asked for one, otherwise with stdout and stderr apart.
func (sess *session) runCommand(ctx context.Context, log *slog.Logger, c *command) int {
	s := sess.srv
	if s.cfg.Command == nil {
		sess.say("refused: this server runs no commands (no command runner configured)")
		return 1
	}
	argv := c.argv
	if c.kind == cmdRsync || c.kind == cmdScp {
		if root := s.cfg.DataPath(c.app); !path.IsAbs(root) {
			sess.say("refused: app %s has no data directory", c.app)
			log.Warn("upload: DataPath is not absolute", "path", root)
			return 1
		}
		argv = s.dataArgv(c)
	}
	cmd, err := s.cfg.Command(c.app, argv)
	if err != nil {
		sess.say("refused: %v", err)
		log.Warn("upload: command runner", "argv", argv, "err", err)
		return 1
	}
	sess.mu.Lock()
	pty := sess.pty
	sess.mu.Unlock()
	if pty != nil && c.kind == cmdRun {
		return sess.runInPty(ctx, log, cmd, pty)
	}
	return sess.runPlain(ctx, log, cmd)
}

// dataArgv rewrites rsync's and scp's paths (relative to the data
// directory) to where the data directory is for the command.
func (s *Server) dataArgv(c *command) []string {
	root := s.cfg.DataPath(c.app)
	argv := append([]string(nil), c.argv...)
	// rsync: the paths follow "."; scp: the path follows "--".
	sep := "."
	if c.kind == cmdScp {
		sep = "--"
	}
	i := 0
	for i < len(argv) && argv[i] != sep {
		i++
	}
	for j := i + 1; j < len(argv); j++ {
		p := path.Join(root, argv[j])
		if strings.HasSuffix(argv[j], "/") || argv[j] == "." {
			p += "/"
		}
		argv[j] = p
	}
	return argv
}

// exitCode turns Wait's error into an exit status: the program's own, or
// 128+signal as a shell reports it.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		if ee.ExitCode() >= 0 {
			return ee.ExitCode()
		}
	}
	return 1
}

// killOnDone kills cmd's process when ctx ends before it exits; the
// returned function stops the watch.
func killOnDone(ctx context.Context, cmd *exec.Cmd) func() bool {
	return context.AfterFunc(ctx, func() {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
	})
}

func (sess *session) runPlain(ctx context.Context, log *slog.Logger, cmd *exec.Cmd) int {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		sess.say("failed: %v", err)
		return 1
	}
	cmd.Stdout = sess.ch
	cmd.Stderr = sess.ch.Stderr()
	// A background child keeping stdout open does not hold the session
	// for ever once the command has exited.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		sess.say("failed to start %s: %v", cmd.Args[0], err)
		log.Warn("upload: start command", "argv", cmd.Args, "err", err)
		return 1
	}
	stop := killOnDone(ctx, cmd)
	defer stop()
	// Not waited for: it ends when the client sends EOF or the channel
	// closes after the exit status.
	go func() {
		_, _ = io.Copy(stdin, sess.ch)
		stdin.Close()
	}()
	return exitCode(cmd.Wait())
}

func (sess *session) runInPty(ctx context.Context, log *slog.Logger, cmd *exec.Cmd, p *ptyRequest) int {
	if p.term != "" {
		cmd.Env = append(cmd.Env, "TERM="+p.term)
	}
	sess.mu.Lock()
	rows, cols := p.rows, p.cols
	sess.mu.Unlock()
	master, resize, err := startInPty(cmd, clampWin(rows), clampWin(cols))
	if err != nil {
		sess.say("failed to start %s in a pty: %v", cmd.Args[0], err)
		log.Warn("upload: start command in pty", "argv", cmd.Args, "err", err)
		return 1
	}
	defer func() {
		sess.mu.Lock()
		sess.resize = nil
		sess.mu.Unlock()
		master.Close()
	}()
	stop := killOnDone(ctx, cmd)
	defer stop()
	sess.mu.Lock()
	sess.resize = resize
	// A window-change that came while the command was starting.
	_ = resize(clampWin(p.rows), clampWin(p.cols))
	sess.mu.Unlock()
	go func() { _, _ = io.Copy(master, sess.ch) }()
	output := make(chan struct{})
	go func() {
		// Ends with EIO once the last holder of the terminal has
		// closed it.
		_, _ = io.Copy(sess.ch, master)
		close(output)
	}()
	err = cmd.Wait()
	select {
	case <-output:
	case <-ctx.Done():
	}
	return exitCode(err)
}
