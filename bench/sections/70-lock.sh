#!/usr/bin/env bash
# lock: uncontended acquire+release per backend, side by side in one run,
# and the time from killing the active locker member to the next grant.
#
# BenchmarkAcquireRelease/{zmq,zmq-proc,redis,postgres,etcd}: one TryAcquire
# plus one Release per op, one client, loopback, servers started by the
# test binary (testserver). The ZeroMQ locker is a pair with a synced
# standby: each grant is replicated and acknowledged before it is answered
# (a release is replicated without waiting); "zmq-proc" has each member in
# a process of its own, as deployed (the figure held to the bar), "zmq" has
# both in the benchmark's process. Also measured in the same run: zmqloop's
# own signed round trip (BenchmarkSignedReqRep), the floor under every
# locker request (an acquire+release is three of them).
# Rounds alternate the backends; medians of ROUNDS. Bars: ZeroMQ and Redis
# < 1 ms, PostgreSQL < 2 ms (etcd has no bar; shown as a bar line of its
# own figure). A row gives the locker pair against Redis measured in the
# same rounds (ratio > 1: the pair is faster).
# BenchmarkFailover: stop the active member (sockets closed, state gone),
# time to the next successful grant through a client of both, production
# defaults (heartbeat 100ms, failover after 1s). Bar: < 3 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
BENCHTIME=${BENCHTIME:-1s}
bin=$(mktemp -d)/lock.test
trap 'rm -rf "$(dirname "$bin")"' EXIT
go test -c -o "$bin" ./lock >&2
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
declare -A res
for ((i = 1; i <= ROUNDS; i++)); do
  out=$("$bin" -test.run '^$' -test.bench '^BenchmarkAcquireRelease$' -test.benchtime "$BENCHTIME" 2>&1)
  echo "$out" >&2
  for be in zmq zmq-proc redis postgres etcd; do
    v=$(echo "$out" | awk -v n="BenchmarkAcquireRelease/$be" '$1 ~ "^"n"(-[0-9]+)?$" {print $3}')
    res[$be]+="$v"$'\n'
  done
done
zbin=$(dirname "$bin")/zmqloop.test
go test -c -o "$zbin" ./zmqloop >&2
for ((i = 1; i <= ROUNDS; i++)); do
  v=$("$zbin" -test.run '^$' -test.bench '^BenchmarkSignedReqRep$' -test.benchtime "$BENCHTIME" 2>&1 | awk '$1 ~ /^BenchmarkSignedReqRep(-[0-9]+)?$/ {print $3}')
  echo "round $i SignedReqRep $v ns/op" >&2
  res[rtt]+="$v"$'\n'
done
fo=$("$bin" -test.run '^$' -test.bench '^BenchmarkFailover$' -test.benchtime 3x 2>&1)
echo "$fo" >&2
fms=$(echo "$fo" | awk '/^BenchmarkFailover/ {for (i=1;i<=NF;i++) if ($i=="ms-to-grant") print $(i-1)}')
med() { printf '%s' "${res[$1]}" | median; }
z=$(med zmq-proc); zi=$(med zmq); rtt=$(med rtt); r=$(med redis); p=$(med postgres); e=$(med etcd)
ms() { awk -v s="$1" 'BEGIN{printf "%.3f ms", s/1e6}'; }
cond="1 client, loopback, uncontended TryAcquire+Release, median of $ROUNDS ${BENCHTIME} runs on 2 shared cores"
printf 'bar\t%s\t%s\t%s\t%s\n' "lock: ZeroMQ locker pair acquire+release" "$(ms "$z")" "< 1 ms" "$cond; members in their own processes, synced standby; both in one process: $(ms "$zi"); zmqloop signed round trip in the same run: $(ms "$rtt")"
printf 'bar\t%s\t%s\t%s\t%s\n' "lock: Redis acquire+release" "$(ms "$r")" "< 1 ms" "$cond; redis-server $(redis-server --version | awk '{print $3}')"
printf 'bar\t%s\t%s\t%s\t%s\n' "lock: PostgreSQL acquire+release" "$(ms "$p")" "< 2 ms" "$cond; fsync off"
printf 'bar\t%s\t%s\t%s\t%s\n' "lock: etcd acquire+release (grant+txn+delete+revoke)" "$(ms "$e")" "none" "$cond; etcd $(etcd --version | awk '/etcd Version/ {print $3}'), --unsafe-no-fsync"
printf 'bar\t%s\t%s\t%s\t%s\n' "lock: kill the active locker, time to the next grant" "${fms} ms" "< 3 s" "heartbeat 100ms, failover after 1s, 3 kills"
printf 'row\t%s\t%s\t%s\t%s\n' "lock: ZeroMQ locker pair acquire+release (members in own processes)" "Redis SET NX PX script, same rounds" \
  "$(awk -v a="$r" -v b="$z" 'BEGIN{printf "%.2fx", a/b}')" "$cond"
