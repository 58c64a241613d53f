// Package pyinstall installs an app's Python requirements into its
// virtualenv for the app image: as correct as pip, and much faster.
//
// The upload endpoint calls Installer.Install with the app's parsed
// requirements file (ParseRequirementsFileIn for an uploaded one: pins,
// ranges, extras, markers, -r/-c includes, --hash, direct URLs, local paths,
// git requirements, and pip's file options --index-url, --extra-index-url,
// --find-links, --no-index, --pre, --only-binary, --no-binary,
// --prefer-binary, --require-hashes). An install goes in three overlapping
// phases:
//
//   - Resolve. Google's Go port of pip's resolvelib resolver
//     (deps.dev/util/resolve/pypi) picks the versions, so backtracking,
//     extras and conflicts behave as they do with pip. It is fed by a client
//     that fetches index pages and core metadata in parallel, crawling ahead
//     of the resolver. Metadata comes the cheapest way there is: PEP 658/714
//     metadata files or the wheel; for an sdist, a wheel already built from
//     it, its static PEP 643 PKG-INFO, or else (Metadata-Version 2.1, as
//     most of PyPI's sdists are) the PEP 517 prepare_metadata_for_build_wheel
//     hook run in the build's isolated environment, as pip does; only a
//     backend without that hook is built whole to learn its dependencies.
//     Environment markers are evaluated for the target interpreter.
//   - Fetch and build. Wheels are downloaded and sdists built by bounded
//     worker pools; an sdist's build starts as soon as its metadata is
//     known, so the builds of a resolution overlap each other and the rest
//     of the resolution. A built wheel whose metadata differs from what the
//     hook said (the resolution was made on the hook's) is refused, as pip
//     refuses it (*MetadataMismatchError).
//   - Install. The virtualenv is made with `python3 -m venv --without-pip`
//     while the resolver works, and wheels are unpacked into it directly
//     (RECORD, INSTALLER, entry-point scripts with the venv's interpreter);
//     nothing is unpacked unless every wheel was obtained.
//
// # The cache
//
// One Cache directory is shared by every app and every installer process on
// a host (see Cache for its layout). Files are content-addressed and every
// write goes through a temporary file and a rename, so racing installers
// both succeed and never see a torn file. It keeps: downloads by SHA-256;
// built wheels keyed by the sdist's SHA-256 (or a git URL and commit) and a
// hash of the interpreter's supported tags, so two Pythons sharing a cache
// never get each other's wheels; what metadata hooks returned, keyed the
// same way; git checkouts by commit; and index pages with their HTTP
// validators. A page is used without a request while it is fresh
// (Cache-Control max-age, judged by Config.Now), revalidated with
// If-None-Match / If-Modified-Since when stale (a 304 reuses it), fetched
// otherwise; so a warm install within max-age makes no request at all.
// Pages are asked for with an Accept header that prefers PEP 691 JSON and
// falls back to PEP 503 HTML.
//
// # Git requirements
//
// `git+https://host/repo.git@rev#egg=name` and `name @ git+https://…@rev`
// (also ssh://, git:// and file://, with #subdirectory=) are cloned with
// Debian's git into the cache, keyed by the resolved commit: a branch or tag
// is resolved to a commit with one `git ls-remote` per install, and a
// commit already in the cache is neither cloned nor built again. A
// repository that cannot be reached is a *GitError; a branch, tag or commit
// it does not have wraps ErrRevisionNotFound. A git requirement cannot be
// hash-checked, so --require-hashes refuses it.
//
// # Trust
//
// Builds run code from the upload, so every build process goes through
// Config.Sandbox (a BuildSandbox that wraps the command; the platform
// passes one built on runner's sandbox, examples/internal/buildsandbox:
// own UID, a network that reaches the index only, read-only system, a
// bounded cgroup). Everything one install's builds read and write lies
// beneath its BuildDir, which such a sandbox mounts and nothing else of
// the cache; with Config.BuildUser what a build writes is that user's and
// the rest stays the installer's, and a build's wheel or metadata is
// copied out of its reach (opened beneath its output directory, never
// through a link leading out) before it is used. Before the metadata or
// build hook, the backend's get_requires_for_build_wheel is asked; what it
// wants beyond build-system.requires (and what the interpreter lacks) goes
// into a build environment made with both. The installer fetches everything a build needs
// itself, build requirements included (pip's build isolation: a private
// virtualenv per set of build-system.requires), so a build needs no
// network; one that tries fails with a *BuildError naming the package and
// saying so. With no Sandbox builds run as plain processes, and New logs a
// warning saying so. Config.AllowedIndexes restricts the remote locations
// an uploaded file may name; anything else is an *IndexNotAllowedError
// before any request.
//
// pip remains the oracle: the tests resolve every test index (generated
// and served locally by internal/pyindex) with both and require the same
// set. Progress is reported per package through Config.Progress and the
// logger; examples/pyinstall is a command with pip's flags on top.
package pyinstall
