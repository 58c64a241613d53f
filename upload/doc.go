// Package upload turns what a developer uploads into an app image that
// runner can start, and serves the SSH endpoint developers upload through.
//
// An upload arrives as a bundle (tar, tar.gz or zip), which package
// upload/extract unpacks safely; its Python dependencies are resolved
// exactly as pip would and installed into a virtualenv by package
// upload/pyinstall, in parallel and through a wheel cache shared by every
// app on the host. BuildImage then packs the app and its virtualenv into a
// reproducible SquashFS image (same tree, same bytes, same content-hash ID)
// kept in the shared image store, and MountImage gives runner a read-only
// view of it: a loop mount where the host allows one, or a read-only copy
// otherwise (logged).
//
// # The SSH endpoint
//
// Server is the upload endpoint developers talk to, an SSH server on
// golang.org/x/crypto/ssh with a persisted host key (ServerConfig.HostKeyFile)
// and public-key authentication against a KeyStore (FileKeyStore: an
// authorized_keys file whose options say who the key is and which apps it
// may deploy to, run commands in, or copy data into). No shell is ever run:
// an exec request's command line is split into words the way a shell
// would split a simple command, with no expansion, an unquoted shell
// metacharacter refused, and dispatched to one of these:
//
//	git-receive-pack 'APP.git'          git push: into RepoDir/APP.git (bare, made on first use)
//	git-upload-pack 'APP.git'           git fetch and clone
//	hg -R APP serve --stdio             hg push and pull: RepoDir/APP.hg
//	deploy APP                          an archive (tar, tar.gz, zip) on stdin
//	releases APP                        the kept images, the live one marked *
//	rollback APP [ID]                   make the previous (or the given) image live
//	run APP -- PROGRAM ARGS...          in the app's sandbox; a pty with ssh -t
//	rsync --server ... . APP/PATH       rsync -e ssh into (or out of) the data directory
//	scp -t|-f [-r -p -d] APP/PATH       scp -O (the legacy protocol) likewise
//
// A shell request and the sftp subsystem (what a plain OpenSSH 9 scp asks
// for) are refused with a message naming the alternative. Refusals (an
// unknown key, which gets a banner; a key without the right; a bad app
// name; a command that is not served; a push or archive over its size
// limit; a repository path that is a symbolic link) are one line on the
// client's stderr, exit status 1, and change nothing.
//
// A push runs the VCS's own server side (git receive-pack, bounded by
// receive.maxInputSize and a byte count; hg serve --stdio) and, if it moved
// the deploy branch (main or master, hg's default, or ServerConfig.Branch),
// checks the new head out as a tar archive (git archive, hg archive), builds
// it with a Builder (extract, install requirements.txt, pack SquashFS),
// hands the image to ServerConfig.Activate and records it in the image
// store (Releases: the last Keep images per app, for rollback). Each step
// and every installer progress event is a line on the client's stderr
// while it happens; a failed build or activation exits non-zero with the
// previous image still live. Pushes, archive deploys and rollbacks of one
// app hold its lock in arrival order; different apps build in parallel. A
// client that disconnects mid-build cancels the build (scratch tree and
// partial image removed, live image untouched); an activation once begun
// runs to its end.
//
// run, rsync and scp go through ServerConfig.Command, which the platform
// wires to runner.Command: the program runs as the app's own UID in its
// sandbox, so rsync and scp can write only where the app can (its data
// directory, at ServerConfig.DataPath). With a pty request the command gets
// a terminal of the requested size and window-change requests resize it;
// otherwise stdout and stderr stay apart. The program's exit status (or
// 128+signal) is the session's.
package upload
