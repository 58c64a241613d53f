#!/usr/bin/env bash
# Section: installer. paaskit's installer (upload/pyinstall) against plain
# serial `pip install -r` (Debian's pip 23, in a fresh venv) on the same
# local index (internal/pyindex) in the same run: 15 requirements resolving
# to 22 packages, 12 of them sdists whose build_wheel takes 1 s each, 100 ms
# latency per request. pip is measured twice as the peer: cold
# (--no-cache-dir) and with a warm cache (--cache-dir filled by one earlier
# pip run, so its HTTP cache and built-wheel cache are as warm as ours).
#
# Rows: cold install (empty cache) against pip cold, warm install (shared
# cache, new venv) against pip cold and against pip warm, and whether the
# installed sets are identical (the section fails if not); bar lines: the
# warm install's index requests (pages within max-age: none) and, for the
# git variant, that the git requirement was neither cloned nor built again.
#
# Variants:
#   realistic (the issue's conditions, an index we did not write): PEP 503
#     HTML only, no PEP 658 metadata files, Metadata-Version 2.1 sdists with
#     a cheap prepare_metadata_for_build_wheel hook, pages with max-age 600
#     (as PyPI sends), and one requirement (cli-helpers) from a local bare
#     git repository by file:// on branch main. REAL_RUNS times.
#   friendly: PEP 658 files, static PEP 643 sdist metadata. RUNS times.
#
# Env: LATENCY (default 100ms), BUILD (default 1s), REAL_RUNS (default 2),
# RUNS (default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
LATENCY=${LATENCY:-100ms}
BUILD=${BUILD:-1s}
REAL_RUNS=${REAL_RUNS:-2}
RUNS=${RUNS:-1}
for tool in /usr/bin/python3 git; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install python3-venv python3-pip git)" >&2; exit 1; }
done
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/installbench" ./internal/pyindex/cmd/installbench
for run in $(seq 1 "$REAL_RUNS"); do
  echo "-- realistic run $run of $REAL_RUNS" >&2
  "$bin/installbench" -dynamic -pep658=false -git -latency "$LATENCY" -build "$BUILD" | sed "s/\t\([^\t]*\)$/\t\1, run $run/"
done
for run in $(seq 1 "$RUNS"); do
  echo "-- friendly run $run of $RUNS" >&2
  "$bin/installbench" -latency "$LATENCY" -build "$BUILD" | sed "s/\t\([^\t]*\)$/\t\1, run $run/"
done
