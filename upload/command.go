package upload

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// ErrBadCommand is wrapped by every refusal of a command line.
var ErrBadCommand = errors.New("command refused")

// CommandError is a refused command line and why.
type CommandError struct {
	Reason string
}

func (e *CommandError) Error() string { return "command refused: " + e.Reason }

// Unwrap gives ErrBadCommand.
func (e *CommandError) Unwrap() error { return ErrBadCommand }

func refuse(format string, a ...any) error {
	return &CommandError{Reason: fmt.Sprintf(format, a...)}
}

// splitWords splits an SSH command line into words the way a POSIX shell
// would split a simple command: blanks separate words, single quotes keep
// everything literally, double quotes keep everything but \" \\ \$ \`, and a
// backslash outside quotes escapes the next character. No expansion
// happens, and an unquoted shell metacharacter (; & | < > ( ) $ `) or a
// newline is refused rather than taken literally, since the client's user
// may have meant it for a shell that is not there.
func splitWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, refuse("unterminated single quote")
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) && strings.IndexByte("\"\\$`", line[i+1]) >= 0 {
					i++
				} else if line[i] == '$' || line[i] == '`' {
					return nil, refuse("%q inside double quotes would be expanded by a shell; there is none here, use single quotes", line[i])
				}
				cur.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, refuse("unterminated double quote")
			}
			inWord = true
		case c == '\\':
			if i+1 >= len(line) {
				return nil, refuse("trailing backslash")
			}
			i++
			cur.WriteByte(line[i])
			inWord = true
		case strings.IndexByte(";&|<>()$`\n\r", c) >= 0:
			return nil, refuse("shell metacharacter %q: no shell runs here; quote it if it is meant literally", c)
		case c == 0:
			return nil, refuse("NUL byte in command")
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// commandKind is what a parsed command does.
type commandKind int

const (
	cmdGitReceive commandKind = iota + 1
	cmdGitUpload
	cmdHgServe
	cmdRun
	cmdRsync
	cmdScp
	cmdDeployArchive
	cmdRollback
	cmdReleases
	cmdHelp
)

// command is a parsed, validated command line.
type command struct {
	kind commandKind
	app  string
	// argv is the program's arguments for run, rsync and scp; for rsync
	// and scp the path arguments are still relative to the data
	// directory ("." for its top).
	argv []string
	// rollbackTo is the release ID asked for by rollback, "" for the one
	// before the live one.
	rollbackTo string
}

// right is what the command needs.
func (c *command) right() Right {
	switch c.kind {
	case cmdRun:
		return RightRun
	case cmdRsync, cmdScp:
		return RightData
	default:
		return RightDeploy
	}
}

const usage = `commands:
  git push / git fetch           ssh://HOST/APP.git
  hg push / hg pull              ssh://HOST/APP
  deploy APP < bundle.tar.gz     build and activate an archive (tar, tar.gz, zip)
  releases APP                   list the kept images, the live one marked
  rollback APP [ID]              activate the previous (or the given) image
  run APP -- PROGRAM ARGS...     run a command in the app's sandbox (ssh -t for a terminal)
  rsync -e ssh DIR HOST:APP/     copy into the app's data directory (also scp -O)
`

// parseCommand parses and validates an exec request's command line. The
// app name is validated; rights are checked by the caller.
func parseCommand(line string) (*command, error) {
	words, err := splitWords(line)
	if err != nil {
		return nil, err
	}
	if len(words) == 0 {
		return &command{kind: cmdHelp}, nil
	}
	switch words[0] {
	case "help":
		return &command{kind: cmdHelp}, nil
	case "git-receive-pack", "git-upload-pack":
		if len(words) != 2 {
			return nil, refuse("%s takes one repository argument", words[0])
		}
		app, err := repoApp(words[1], ".git")
		if err != nil {
			return nil, err
		}
		kind := cmdGitReceive
		if words[0] == "git-upload-pack" {
			kind = cmdGitUpload
		}
		return &command{kind: kind, app: app}, nil
	case "git":
		if len(words) == 3 && (words[1] == "receive-pack" || words[1] == "upload-pack") {
			return parseCommand("git-" + words[1] + " " + shellQuote(words[2]))
		}
		return nil, refuse("only git receive-pack and git upload-pack are served")
	case "hg":
		// hg -R REPO serve --stdio, exactly what hg's ssh peer sends.
		if len(words) != 5 || words[1] != "-R" || words[3] != "serve" || words[4] != "--stdio" {
			return nil, refuse("only `hg -R REPO serve --stdio` is served")
		}
		app, err := repoApp(words[2], ".hg")
		if err != nil {
			return nil, err
		}
		return &command{kind: cmdHgServe, app: app}, nil
	case "deploy", "releases":
		if len(words) != 2 {
			return nil, refuse("usage: %s APP", words[0])
		}
		if err := ValidAppName(words[1]); err != nil {
			return nil, refuse("%v", err)
		}
		kind := cmdDeployArchive
		if words[0] == "releases" {
			kind = cmdReleases
		}
		return &command{kind: kind, app: words[1]}, nil
	case "rollback":
		if len(words) != 2 && len(words) != 3 {
			return nil, refuse("usage: rollback APP [ID]")
		}
		if err := ValidAppName(words[1]); err != nil {
			return nil, refuse("%v", err)
		}
		c := &command{kind: cmdRollback, app: words[1]}
		if len(words) == 3 {
			c.rollbackTo = words[2]
		}
		return c, nil
	case "run":
		if len(words) < 3 {
			return nil, refuse("usage: run APP -- PROGRAM ARGS...")
		}
		if err := ValidAppName(words[1]); err != nil {
			return nil, refuse("%v", err)
		}
		argv := words[2:]
		if argv[0] == "--" {
			argv = argv[1:]
		}
		if len(argv) == 0 || argv[0] == "" {
			return nil, refuse("run %s: no program given", words[1])
		}
		return &command{kind: cmdRun, app: words[1], argv: argv}, nil
	case "rsync":
		return parseRsync(words)
	case "scp":
		return parseScp(words)
	}
	return nil, refuse("%q is not a command here\n%s", words[0], usage)
}

// repoApp takes the app name out of a repository path as clients send it:
// "APP", "/APP", "APP.git", "/APP.git/" (suffix being .git or .hg).
func repoApp(p, suffix string) (string, error) {
	name := strings.TrimSuffix(strings.TrimPrefix(p, "/"), "/")
	name = strings.TrimPrefix(name, "~/")
	name = strings.TrimSuffix(name, suffix)
	if err := ValidAppName(name); err != nil {
		return "", refuse("repository %q: %v", p, err)
	}
	return name, nil
}

// rsync server options a client legitimately sends for a copy into or out
// of a directory. Anything else (--log-file, --temp-dir, --backup-dir,
// --files-from, --write-devices, --copy-dest and the like could name paths
// outside the data directory or change what rsync may touch) is refused.
var rsyncLongOptions = map[string]bool{
	"--server": true, "--sender": true,
	"--delete": true, "--delete-before": true, "--delete-during": true, "--delete-after": true,
	"--delete-delay": true, "--delete-excluded": true, "--delay-updates": true,
	"--partial": true, "--inplace": true, "--append": true, "--numeric-ids": true,
	"--safe-links": true, "--munge-links": true, "--size-only": true, "--ignore-times": true,
	"--ignore-existing": true, "--existing": true, "--remove-source-files": true,
	"--no-implied-dirs": true, "--force": true, "--checksum": true, "--stats": true,
	"--mkpath": true,
}

var rsyncValueOptions = []string{"--timeout=", "--bwlimit=", "--compress-level=", "--max-size=", "--min-size=", "--max-delete=", "--modify-window=", "--checksum-choice=", "--compress-choice="}

func parseRsync(words []string) (*command, error) {
	if len(words) < 4 || words[1] != "--server" {
		return nil, refuse("only `rsync --server ...` (what rsync -e ssh sends) is served")
	}
	argv := []string{"rsync"}
	i := 1
	for ; i < len(words); i++ {
		w := words[i]
		if w == "." {
			// rsync --server's "." separates options from paths.
			break
		}
		switch {
		case rsyncLongOptions[w]:
		case strings.HasPrefix(w, "--") && hasAnyPrefix(w, rsyncValueOptions):
		case len(w) > 1 && w[0] == '-' && w[1] != '-':
			// A cluster of short options. "-e.xyz" carries the
			// client's protocol capabilities, not options.
			cluster := w[1:]
			if k := strings.IndexByte(cluster, 'e'); k >= 0 {
				cluster = cluster[:k] // the rest is the -e capability string
			}
			// -T (temp dir), -M (remote option), -f (a filter,
			// which can merge a file) and -0 take or change arguments.
			if strings.ContainsAny(cluster, "TMf0") {
				return nil, refuse("rsync option %q is not allowed here", w)
			}
		default:
			return nil, refuse("rsync option %q is not allowed here", w)
		}
		argv = append(argv, w)
	}
	if i >= len(words)-1 {
		return nil, refuse("rsync: no path given")
	}
	argv = append(argv, ".")
	var app string
	for _, p := range words[i+1:] {
		a, rel, err := dataPath(p)
		if err != nil {
			return nil, err
		}
		if app != "" && a != app {
			return nil, refuse("rsync: paths name two apps, %q and %q", app, a)
		}
		app = a
		argv = append(argv, rel)
	}
	return &command{kind: cmdRsync, app: app, argv: argv}, nil
}

func parseScp(words []string) (*command, error) {
	argv := []string{"scp"}
	direction := ""
	i := 1
	for ; i < len(words); i++ {
		w := words[i]
		if w == "--" {
			i++
			break
		}
		if len(w) < 2 || w[0] != '-' {
			break
		}
		for _, f := range w[1:] {
			switch f {
			case 't', 'f':
				direction = string(f)
			case 'r', 'p', 'd', 'v':
			default:
				return nil, refuse("scp option -%c is not allowed here", f)
			}
		}
		argv = append(argv, w)
	}
	if direction == "" {
		return nil, refuse("only `scp -t` and `scp -f` (what scp -O sends) are served")
	}
	if i != len(words)-1 {
		return nil, refuse("scp takes exactly one path here")
	}
	app, rel, err := dataPath(words[i])
	if err != nil {
		return nil, err
	}
	argv = append(argv, "--", rel)
	return &command{kind: cmdScp, app: app, argv: argv}, nil
}

// dataPath splits "APP/sub/path" (as rsync and scp send HOST:APP/sub/path)
// into the app and a clean path relative to its data directory. A path
// that climbs out ("..") or is absolute is refused.
func dataPath(p string) (app, rel string, err error) {
	if strings.HasPrefix(p, "/") {
		return "", "", refuse("path %q: give APP/path, relative to the app's data directory", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", "", refuse("path %q climbs out with ..", p)
		}
	}
	app, rest, _ := strings.Cut(p, "/")
	if err := ValidAppName(app); err != nil {
		return "", "", refuse("path %q: %v", p, err)
	}
	rel = path.Clean("./" + rest)
	if strings.HasSuffix(rest, "/") && rel != "." {
		// rsync and scp give a trailing slash meaning.
		rel += "/"
	}
	return app, rel, nil
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// shellQuote quotes s for splitWords.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Usage is the list of commands the server takes, as it prints it.
func Usage() string { return usage }
