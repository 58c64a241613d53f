#!/usr/bin/env bash
# stats: points into PostgreSQL end to end against a one-row-per-INSERT
# loop on the same server, log lines into chunked files, and the emitter's
# cost per call, all in one run.
#
# The go test benchmarks in ./stats:
#   EndToEndPostgres   an Emitter pushes counter points over signed
#                      PUSH/PULL (TCP loopback) to a Collector, which
#                      journals them and COPYs them into PostgreSQL in
#                      transactions of up to 16,384 rows (synchronous
#                      commit); points/s from the first record to the last
#                      row committed, all three in one process
#   InsertLoopPostgres the peer: one INSERT per point, autocommit, one pgx
#                      connection, the same table and server
#   FileSinkLines      120-byte log lines into chunked files (64 MiB chunks
#                      gzipped in the background, fsync per batch); MB/s of
#                      log text, the sink alone (records as the journal
#                      hands them over)
#   EndToEndLogs       the same lines from an Emitter through the Collector
#                      into the files, all in one process: 1,000,000 lines
#                      (120 MB, about a second, through one chunk rotation
#                      and its gzip), the sustained rate the bar is about;
#                      and 300,000 lines (about 0.3 s), where the warm-up of
#                      a new emitter, journal and chunk (fresh memory and
#                      files) weighs, shown beside it
#   EmitterHotPath*    one recording call (Count, Log) with nothing else
#                      running; ns/op and allocs/op
#   EmitterCount       the same call with the shipper and the collector
#                      running in the process on the same 2 cores
# PostgreSQL is the one make test starts (PAASKIT_TEST_POSTGRES) or one
# the test binary starts for itself. The 2 cores are shared and noisy: the
# pairs run alternately ROUNDS times and each side's median is taken.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
POINTS=${POINTS:-400000}
bin=$(mktemp -d)/stats.test
errlog=$(dirname "$bin")/stderr.log
trap 'cat "$errlog" >&2 2>/dev/null; rm -rf "$(dirname "$bin")"' EXIT
go test -c -o "$bin" ./stats >&2

# run NAME BENCHTIME UNIT -> prints the figure of UNIT (ns/op, points/s,
# MB/s, allocs/op) of one run of benchmark NAME.
# A run whose figure is missing prints the benchmark's whole output to
# the log before the section fails, so the failure can be read.
# Only stdout is parsed: go test prints a benchmark's name before it runs
# and its figures after, so anything on stderr in between (a component's
# warning) would split the result line; stderr goes to the log.
# Each run starts once the disk has settled (sync): the run before it
# deleted its 100-300 MB of journal and chunks at its end, and their
# write-back and discards (the root file system here is mounted with
# "discard") otherwise fall into the next run's fsyncs. Every row, the
# peers' too, gets the same.
run() {
  local out
  sync
  out=$("$bin" -test.run '^$' -test.bench "^Benchmark$1\$" -test.benchtime "$2" -test.benchmem 2>>"$errlog") || true
  awk -v n="Benchmark$1" -v u="$3" '$1 ~ "^"n"(-[0-9]+)?$" {for (i = 2; i < NF; i++) if ($(i+1) == u) {print $i; found=1}} END {if (!found) exit 1}' <<<"$out" ||
    { echo "Benchmark$1: no $3 figure; its output:" >&2; echo "$out" >&2; return 1; }
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# span prints the lowest and highest of its input lines as "lo-hi".
span() { sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%.0f-%.0f", lo, hi}'; }

e2e="" loop="" files="" logs="" logs_short="" hotc="" hotl="" allocs="" shipc=""
for ((i = 1; i <= ROUNDS; i++)); do
  v=$(run EndToEndPostgres "${POINTS}x" points/s); echo "round $i EndToEndPostgres $v points/s" >&2; e2e+="$v"$'\n'
  v=$(run InsertLoopPostgres 3s points/s); echo "round $i InsertLoopPostgres $v points/s" >&2; loop+="$v"$'\n'
  v=$(run FileSinkLines 1000000x MB/s); echo "round $i FileSinkLines $v MB/s" >&2; files+="$v"$'\n'
  v=$(run EndToEndLogs 1000000x MB/s); echo "round $i EndToEndLogs $v MB/s" >&2; logs+="$v"$'\n'
  v=$(run EndToEndLogs 300000x MB/s); echo "round $i EndToEndLogs (300,000 lines) $v MB/s" >&2; logs_short+="$v"$'\n'
  v=$(run EmitterHotPathCount 1s ns/op); echo "round $i EmitterHotPathCount $v ns/op" >&2; hotc+="$v"$'\n'
  v=$(run EmitterHotPathLog 1s ns/op); echo "round $i EmitterHotPathLog $v ns/op" >&2; hotl+="$v"$'\n'
  v=$(run EmitterHotPathLog 1s allocs/op); allocs+="$v"$'\n'
  v=$(run EmitterCount 1s ns/op); echo "round $i EmitterCount (shipping) $v ns/op" >&2; shipc+="$v"$'\n'
done
med() { printf '%s' "$1" | median; }
rng() { printf '%s' "$1" | span; }
E=$(med "$e2e"); L=$(med "$loop"); F=$(med "$files"); G=$(med "$logs"); GS=$(med "$logs_short"); HC=$(med "$hotc"); HL=$(med "$hotl"); A=$(printf '%s' "$allocs" | sort -g | tail -1); SC=$(med "$shipc")
echo "medians: EndToEndPostgres=$E points/s InsertLoopPostgres=$L points/s FileSinkLines=$F MB/s EndToEndLogs=$G MB/s (300,000 lines: $GS) HotPathCount=$HC ns HotPathLog=$HL ns allocs(max)=$A EmitterCount(shipping)=$SC ns" >&2
pgv=$(psql --version 2>/dev/null | awk '{print $3}' || true)

printf 'row\t%s\t%s\t%s\t%s\n' "stats points into PostgreSQL end to end (Emitter -> PUSH/PULL -> Collector journal -> COPY)" \
  "one INSERT per point, autocommit, one pgx connection, same server${pgv:+ (PostgreSQL $pgv)}" \
  "$(awk -v a="$E" -v b="$L" 'BEGIN{printf "%.1fx", a/b}')" \
  "$(awk -v a="$E" -v b="$L" 'BEGIN{printf "%.0f vs %.0f points/s", a, b}'), median of $ROUNDS alternating runs of $POINTS points; bar >= 10x"
printf 'bar\t%s\t%s\t%s\t%s\n' "stats points into PostgreSQL end to end" \
  "$(awk -v a="$E" 'BEGIN{printf "%.0f points/s", a}')" ">= 200,000 points/s" \
  "emitter, collector and sink in one process on 2 shared cores, TCP loopback, batches of 16,384 rows, synchronous commit; median of $ROUNDS"
printf 'bar\t%s\t%s\t%s\t%s\n' "stats log lines into chunked files" \
  "$(awk -v a="$F" 'BEGIN{printf "%.0f MB/s", a}')" ">= 100 MB/s" \
  "120-byte lines, batches of 16,384, fsync per batch, 64 MiB chunks gzipped in the background; median of $ROUNDS (range $(rng "$files") MB/s)"
printf 'bar\t%s\t%s\t%s\t%s\n' "stats log lines end to end (Emitter -> PUSH/PULL -> Collector journal -> files)" \
  "$(awk -v a="$G" 'BEGIN{printf "%.0f MB/s", a}')" ">= 100 MB/s" \
  "120-byte lines, emitter, collector and file sink in one process on 2 shared cores (CPU-bound: format-2 frames raw in a data frame, HMAC both ways, journal write and read, line formatting and write, one 64 MiB chunk gzipped at nice 10); 1,000,000 lines, median of $ROUNDS (range $(rng "$logs") MB/s); runs of 300,000 lines, warm-up included, $(awk -v a="$GS" 'BEGIN{printf "%.0f", a}') MB/s (range $(rng "$logs_short")); the file sink alone (above) in the same rounds"
printf 'bar\t%s\t%s\t%s\t%s\n' "stats emitter cost per call (Count / Log)" \
  "$(awk -v a="$HC" -v b="$HL" -v c="$A" 'BEGIN{printf "%.0f / %.0f ns, %s allocs", a, b, c}')" "< 1 us, 0 allocs" \
  "the call alone (no shipper running); with the shipper and collector on the same 2 cores a Count costs the caller $(awk -v a="$SC" 'BEGIN{printf "%.0f", a}') ns; median of $ROUNDS"
