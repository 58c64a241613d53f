#!/usr/bin/env bash
# compare.sh runs paaskit's side-by-side benchmarks and prints one table.
#
# Each file bench/sections/NN-name.sh is one section (one per package). A
# section measures paaskit and its peer in the same run, on the same machine,
# and prints its results on stdout, one tab-separated line each, of two
# kinds:
#
#   row <TAB> what was compared <TAB> peer <TAB> ratio <TAB> conditions
#   bar <TAB> what was measured <TAB> figure <TAB> bar <TAB> conditions
#
# A row is a comparison with a peer measured in the same run: ratio is
# paaskit's figure divided by the peer's, oriented so that larger is better
# for paaskit ("1.23x"), and the peer is named exactly (program, version,
# settings). A bar line is a figure with no peer, printed against the
# budget it must meet ("812 ms" against "< 1 s"); the two kinds go in
# separate tables, so a budget is never read as a ratio. Conditions say how
# it was measured (load, sizes, cores). Anything else a section prints goes
# to the log under bench/results/, not to the tables.
#
# Runs are serialised on one lock (/tmp/paaskit-bench.lock), so two
# compare.sh runs on one machine never measure each other.
#
# Usage: bench/compare.sh [section-name-substring ...]
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
exec 9>/tmp/paaskit-bench.lock
if ! flock -n 9; then
  echo "compare.sh: waiting for another benchmark run (/tmp/paaskit-bench.lock)" >&2
  flock 9
fi
stamp=$(date -u +%Y%m%dT%H%M%SZ)
table=bench/results/table-$stamp.tsv
bars=bench/results/bars-$stamp.tsv
: >"$table"
: >"$bars"
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
  grep -P '^bar\t' "$log.rows" | cut -f2- >>"$bars" || true
  grep -vP '^(row|bar)\t' "$log.rows" >>"$log" || true
  rm -f "$log.rows"
done
echo "Against peers, measured in the same run (ratio > 1 favours paaskit):"
echo
{
  printf 'WHAT\tPEER\tRATIO\tCONDITIONS\n'
  cat "$table"
} | column -t -s $'\t'
if [[ -s "$bars" ]]; then
  echo
  echo "Against budgets (no peer; a figure and the bar it must meet):"
  echo
  {
    printf 'WHAT\tFIGURE\tBAR\tCONDITIONS\n'
    cat "$bars"
  } | column -t -s $'\t'
fi
echo
echo "tables saved as $table and $bars" >&2
exit $status
