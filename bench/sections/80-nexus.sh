#!/usr/bin/env bash
# nexus: figures against the issue's budgets (no peer runs the same
# protocol, so these are bar lines). From go test -bench in ./nexus:
#   lookup p99 with 10,000 registered instances (100 kinds of 100): a
#     lookup of one kind, and a Get of one instance; one caller, one
#     resolver on TCP loopback. Budget: p99 < 1 ms.
#   one resolver (a process of its own) while 10,000 instances heartbeat
#     once a second for KEEPUP_SECONDS: its CPU share of one core, the
#     longest round of 10,000 heartbeats, and instances suspected (must
#     be 0). Budget: keeps up (every round within the 1 s interval, none
#     suspected).
#   heartbeat throughput at saturation (64 callers): budget >= 10,000/s.
set -euo pipefail
cd "$(dirname "$0")/../.."
KEEPUP_SECONDS=${KEEPUP_SECONDS:-5}
LOOKUPS=${LOOKUPS:-20000}
out=$(NEXUS_KEEPUP_SECONDS=$KEEPUP_SECONDS go test -run '^$' -bench 'Lookup10000|Beats|KeepUp10000' \
  -benchtime "${LOOKUPS}x" -count 1 ./nexus 2>&1)
echo "$out" >&2
metric() { echo "$out" | grep "^$1" | grep -oP "[0-9.]+(?= $2)" | head -1; }
lp99=$(metric 'BenchmarkLookup10000/lookup-kind' p99-us)
lp50=$(metric 'BenchmarkLookup10000/lookup-kind' p50-us)
gp99=$(metric 'BenchmarkLookup10000/get-one' p99-us)
gp50=$(metric 'BenchmarkLookup10000/get-one' p50-us)
bps=$(metric 'BenchmarkBeats' beats/s)
cpu=$(metric 'BenchmarkKeepUp10000' resolver-cpu-%)
worst=$(metric 'BenchmarkKeepUp10000' worst-round-ms)
susp=$(metric 'BenchmarkKeepUp10000' suspected)
ms() { awk -v u="$1" 'BEGIN{printf "%.2f ms", u/1000}'; }
printf 'bar\t%s\t%s\t%s\t%s\n' "nexus lookup of a kind (100 of 10,000 instances), p99" "$(ms "$lp99")" "< 1 ms" \
  "one caller, one resolver, TCP loopback, $LOOKUPS lookups; p50 $(ms "$lp50"); the client's held answer is current (unchanged kind)"
printf 'bar\t%s\t%s\t%s\t%s\n' "nexus get of one instance among 10,000, p99" "$(ms "$gp99")" "< 1 ms" \
  "one caller, one resolver, TCP loopback, $LOOKUPS gets; p50 $(ms "$gp50")"
printf 'bar\t%s\t%s\t%s\t%s\n' "nexus: one resolver, 10,000 instances beating once a second" \
  "${cpu}% of a core; worst round ${worst} ms; ${susp} suspected" "rounds < 1000 ms, 0 suspected" \
  "resolver in its own process, $KEEPUP_SECONDS s, heartbeats from 8 sockets x 64 callers in the bench process, $(nproc) cores shared"
printf 'bar\t%s\t%s\t%s\t%s\n' "nexus heartbeat throughput, one resolver" "${bps} beats/s" ">= 10,000 beats/s" \
  "64 concurrent callers over 8 sockets, 10,000 distinct instances, $LOOKUPS heartbeats"
