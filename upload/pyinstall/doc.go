// Package pyinstall installs an app's Python requirements into its
// virtualenv for the app image: as correct as pip, and much faster.
//
// The upload endpoint calls Installer.Install with the app's parsed
// requirements file (ParseRequirementsFile: pins, ranges, extras, markers,
// -r/-c includes, --hash, direct URLs, local paths, index options). An
// install goes in three overlapping phases:
//
//   - Resolve. Google's Go port of pip's resolvelib resolver
//     (deps.dev/util/resolve/pypi) picks the versions, so backtracking,
//     extras and conflicts behave as they do with pip. It is fed by a client
//     that fetches PEP 503 index pages and core metadata (PEP 658 files,
//     wheels, or an sdist's static PEP 643 PKG-INFO; dynamic sdists are built,
//     as pip does) in parallel, crawling ahead of the resolver; environment
//     markers are evaluated for the target interpreter, not this process.
//   - Fetch and build. Wheels are downloaded and sdists built with the PEP 517
//     backend their pyproject.toml declares, by bounded worker pools, into a
//     content-addressed Cache shared by every app and every installer process
//     on the host (temporary file, then rename; every read verified by
//     SHA-256, so a truncated or tampered file is fetched or built again).
//     Builds of sdists start as soon as their metadata is read.
//   - Install. The virtualenv is made with `python3 -m venv --without-pip`
//     while the resolver works, and wheels are unpacked into it directly
//     (RECORD, INSTALLER, entry-point scripts with the venv's interpreter);
//     nothing is unpacked unless every wheel was obtained.
//
// pip remains the oracle: the tests resolve every test index with both and
// require the same set. Progress is reported per package through
// Config.Progress and the logger. An sdist's build-system.requires are
// installed by the installer itself into a private virtualenv for the build
// (pip's build isolation). A requirements file that came with an upload is
// parsed with ParseRequirementsFileIn, which keeps its includes and local
// paths inside the app's tree.
package pyinstall
