// Package upload turns what a developer uploads into an app image that
// runner can start.
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
// The SSH upload endpoint (git push, rsync, commands in a pty) is built on
// these pieces in a later part; the functions here take plain paths and
// readers so any front end can drive them.
package upload
