#!/usr/bin/env bash
# compare.sh runs paaskit's side-by-side benchmarks and prints one table.
#
# Each file bench/sections/NN-name.sh is one section (one per package). A
# section measures paaskit and its peer in the same run, on the same machine,
# and prints one line per comparison on stdout, tab-separated:
#
#   row <TAB> what was compared <TAB> peer <TAB> ratio <TAB> conditions
#
# where ratio is paaskit's figure divided by the peer's, oriented so that
# larger is better for paaskit ("1.23x" or a plain number), and conditions
# say how it was measured (load, sizes, cores). Anything else a section
# prints goes to the log under bench/results/, not to the table.
#
# Usage: bench/compare.sh [section-name-substring ...]
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
table=bench/results/table-$stamp.tsv
: >"$table"
status=0
for section in bench/sections/*.sh; do
  [[ -e "$section" ]] || continue
  name=$(basename "$section" .sh)
  if [[ $# -gt 0 ]]; then
    keep=0
    for want in "$@"; do [[ "$name" == *"$want"* ]] && keep=1; done
    [[ $keep -eq 1 ]] || continue
  fi
  log=bench/results/$name-$stamp.log
  echo "== $name (log: $log)" >&2
  if ! bash "$section" >"$log.rows" 2>"$log"; then
    echo "   section $name failed; see $log" >&2
    printf '%s\t%s\t%s\t%s\n' "$name: FAILED" "-" "-" "see $log" >>"$table"
    status=1
  fi
  grep -P '^row\t' "$log.rows" | cut -f2- >>"$table" || true
  grep -vP '^row\t' "$log.rows" >>"$log" || true
  rm -f "$log.rows"
done
echo
{
  printf 'WHAT\tPEER\tRATIO\tCONDITIONS\n'
  cat "$table"
} | column -t -s $'\t'
echo
echo "table saved as $table" >&2
exit $status
