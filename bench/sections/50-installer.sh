#!/usr/bin/env bash
# Section: installer. paaskit's installer (upload/pyinstall) against plain
# serial `pip install -r` (Debian's pip 23, in a fresh venv, --no-cache-dir)
# on the same local index (internal/pyindex) in the same run: 15
# requirements resolving to 22 packages, 12 of them sdists whose builds take
# ~1 s each, 100 ms latency per index request. Rows: cold install (empty
# cache) and warm install (shared cache, new venv) as pip's time over ours,
# and whether the installed sets are identical (the section fails if not).
#
# The sdists carry static PEP 643 metadata (so a resolver needs no build);
# one more run gives them dynamic metadata, so both installers must build
# them to learn their dependencies.
#
# Env: LATENCY (default 100ms), BUILD (default 1s), RUNS (default 2),
# DYNAMIC_RUNS (default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
LATENCY=${LATENCY:-100ms}
BUILD=${BUILD:-1s}
RUNS=${RUNS:-2}
DYNAMIC_RUNS=${DYNAMIC_RUNS:-1}
for tool in /usr/bin/python3; do
  [[ -x $tool ]] || { echo "missing $tool (apt-get install python3-venv python3-pip)" >&2; exit 1; }
done
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/installbench" ./internal/pyindex/cmd/installbench
for run in $(seq 1 "$RUNS"); do
  echo "-- run $run of $RUNS" >&2
  "$bin/installbench" -latency "$LATENCY" -build "$BUILD" | sed "s/\t\([^\t]*\)$/\t\1, run $run/"
done
for run in $(seq 1 "$DYNAMIC_RUNS"); do
  echo "-- dynamic-metadata run $run of $DYNAMIC_RUNS" >&2
  "$bin/installbench" -dynamic -latency "$LATENCY" -build "$BUILD" | sed "s/\t\([^\t]*\)$/\t\1, run $run/"
done
