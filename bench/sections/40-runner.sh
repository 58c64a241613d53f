#!/usr/bin/env bash
# Section: runner. Figures of issue 6, each against its peer measured in the
# same run:
#   - on-demand start (a request to a stopped app, through the front, until
#     the answer) with full isolation and with isolation off, against the
#     test app started directly (exec, bind, one request); and what the
#     network namespace adds (from the pool, and made at each start);
#   - 100 concurrent first requests to a stopped app (one start, 100
#     answers, 0 errors) against a single cold request;
#   - warm keep-alive GETs through the front against the same Go client
#     hitting the app's unix socket directly (rounds interleaved), for two
#     apps: the tiny Go test app (the worst case for the front: it costs
#     about what the front does per request) and a Python WSGI app under
#     Debian's gunicorn (internal/testapp/wsgi: the workload the platform
#     runs), each also against nginx in front of the same socket;
#   - runnerd's front against nginx proxying to the same instance's socket
#     (upstream keepalive), both under wrk, rounds interleaved; nginx twice:
#     with as many workers as the front has event loops (the matched row)
#     and with 2 workers (nginx's usual one per core);
#   - 1,000 configured idle apps (heap, processes) and 100 active at once.
# Needs root (sandboxes, cgroups), wrk, nginx and gunicorn (make bench-deps).
#
# Throughput rounds are interleaved and each ratio is the median of the
# per-round ratios, so a burst of load from elsewhere skews one round only.
#
# runnerd runs twice: with its default front (warm requests on one event
# loop, internal/evproxy; the "target 0.8x" rows), then with
# -event-loops ALT_EVENT_LOOPS (default: one loop per core, to compare loop
# counts; -1 measures the goroutine-per-connection front).
#
# Env: WRK_ARGS (default "-t2 -c64 -d3s"), ROUNDS (default 5),
# ALT_EVENT_LOOPS (default $(nproc)), WARM_ONLY (1: only the warm rows of
# the default front, part 4 without the second runnerd).
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh
WRK_ARGS=${WRK_ARGS:-"-t2 -c64 -d3s"}
ROUNDS=${ROUNDS:-5}
ALT_EVENT_LOOPS=${ALT_EVENT_LOOPS:-$(nproc)}
WARM_ONLY=${WARM_ONLY:-0}
# runner.test runs its tests once, on the default front (its TestMain
# would otherwise run them again on the goroutine front).
export PAASKIT_RUNNER_TEST_FRONT=default
[[ $(id -u) == 0 ]] || { echo "runner benchmarks need root (sandboxes and cgroups)" >&2; exit 1; }
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || { echo "missing $tool: run make bench-deps" >&2; exit 1; }
done
[[ -x /usr/bin/gunicorn ]] || { echo "missing /usr/bin/gunicorn: run scripts/install-deps.sh (apt-get install gunicorn)" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

tmp=$(mktemp -d /tmp/pkr.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

go test -c -o "$tmp/runner.test" ./runner
go build -o "$tmp/runnerd" ./examples/runnerd
mkdir -p "$tmp/image" "$tmp/wimage" "$tmp/specs"
cp internal/testapp/wsgi/app.py "$tmp/wimage/"
CGO_ENABLED=0 go build -o "$tmp/image/testapp" ./internal/testapp
go build -o "$tmp/load" ./internal/testapp/load

bench() { # regexp benchtime
  local out
  out=$("$tmp/runner.test" -test.run '^$' -test.bench "$1" -test.benchtime "$2" 2>>"$tmp/bench.stderr")
  echo "$out" >&2
  echo "$out"
}
field() { # line unit
  grep -oP "[0-9.]+(?= $2)" <<<"$1" | head -1
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
median() { # numbers...
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# mratio A B: the median over rounds of A[i]/B[i] (arrays named A and B).
mratio() {
  local -n a=$1 b=$2
  local rs=() i
  for i in "${!a[@]}"; do rs+=("$(awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN { print x / y }')"); done
  awk -v r="$(median "${rs[@]}")" 'BEGIN { printf "%.2fx", r }'
}
ms() { awk -v n="$1" 'BEGIN { printf "%.2f", n / 1e6 }'; }

if [[ $WARM_ONLY != 1 ]]; then
# 1. Cold starts, then the baseline, then the cold starts again: the
#    machine is shared, so both sides get the same noise.
out1=$(bench 'ColdStart$|DirectStart' 100x)
out2=$(bench 'DirectStart|ColdStart$' 100x)
avg() { # name
  awk -v n="$1" '$1 ~ "^"n"(-[0-9]+)?$" { s += $3; c++ } END { printf "%.0f", s / c }' <<<"$out1
$out2"
}
iso=$(avg 'BenchmarkColdStart/isolated')
rested=$(avg 'BenchmarkColdStart/isolated-rested')
plain=$(avg 'BenchmarkColdStart/plain')
direct=$(avg 'BenchmarkDirectStart')
cond="go test -bench, 200 starts each, tiny Go app binding at once, $(nproc) shared cores"
printf 'row\t%s\t%s\t%s\t%s\n' "runner on-demand start, full isolation: $(ms "$iso") ms vs $(ms "$direct") ms (overhead $(ms $((iso - direct))) ms, target < 20)" \
  "direct exec + bind + 1 request" "$(ratio "$direct" "$iso")" "$cond; namespaces (network included), pivot_root, cgroup v1/v2, own UID, no capabilities, seccomp"
# What the network namespace adds: three runners' cold starts alternating.
outn=$(bench 'ColdStartNetns' 100x)
pool=$(field "$outn" 'pool-ms')
nopool=$(field "$outn" 'nopool-ms')
nonet=$(field "$outn" 'nonet-ms')
noinit=$(field "$outn" 'noinitpool-ms')
ncond="go test -bench, 100 cold requests to each of 4 runners, alternating, tiny Go app, $(nproc) shared cores"
printf 'row\t%s\t%s\t%s\t%s\n' "runner on-demand start, network namespace from the pool: $pool ms vs $nonet ms without one (extra $(awk -v a="$pool" -v b="$nonet" 'BEGIN { printf "%.2f", a - b }') ms)" \
  "full isolation but the network namespace" "$(ratio "$nonet" "$pool")" "$ncond; a pool of 4 namespaces made ahead"
printf 'row\t%s\t%s\t%s\t%s\n' "runner on-demand start, network namespace made at the start: $nopool ms vs $pool ms from the pool (the pool saves $(awk -v a="$nopool" -v b="$pool" 'BEGIN { printf "%.2f", a - b }') ms)" \
  "network namespace from the pool" "$(ratio "$pool" "$nopool")" "$ncond; Config.NetnsPool -1"
printf 'row\t%s\t%s\t%s\t%s\n' "runner on-demand start, init helper parked ahead: $pool ms vs $noinit ms exec'd at the start (the pool saves $(awk -v a="$noinit" -v b="$pool" 'BEGIN { printf "%.2f", a - b }') ms)" \
  "init helper exec'd at each start" "$(ratio "$noinit" "$pool")" "$ncond; Config.InitPool -1"
printf 'row\t%s\t%s\t%s\t%s\n' "runner on-demand start, isolation off: $(ms "$plain") ms vs $(ms "$direct") ms (overhead $(ms $((plain - direct))) ms)" \
  "direct exec + bind + 1 request" "$(ratio "$direct" "$plain")" "$cond"
printf 'row\t%s\t%s\t%s\t%s\n' "runner on-demand start, full isolation, node at rest: $(ms "$rested") ms vs $(ms "$direct") ms (overhead $(ms $((rested - direct))) ms, target < 20)" \
  "direct exec + bind + 1 request" "$(ratio "$direct" "$rested")" "$cond; 150 ms off the clock between starts (the parked init helpers refilled)"
printf 'bar\t%s\t%s\t%s\t%s\n' "runner on-demand start overhead over a direct start, full isolation, node at rest" \
  "$(ms $((rested - direct))) ms" "< 20 ms (issue 6)" "$cond; 150 ms off the clock between starts"
printf 'bar\t%s\t%s\t%s\t%s\n' "runner on-demand start overhead over a direct start, full isolation, back to back" \
  "$(ms $((iso - direct))) ms" "< 20 ms (issue 6)" "$cond; the next start as soon as the last instance stopped"

# 2. A burst of 100 first requests.
out=$(bench 'BurstOf100FirstRequests' 20x)
burst=$(awk '$1 ~ /^BenchmarkBurstOf100FirstRequests/ { print $3 }' <<<"$out")
printf 'bar\t%s\t%s\t%s\t%s\n' "runner 100 concurrent first requests to a stopped app (1 cold request alone: $(ms "$iso") ms)" \
  "$(ms "$burst") ms, 1 start, 100 answers, 0 errors" "exactly 1 start, 0 errors (issue 6)" "go test -bench, 20 bursts, each checked for exactly one start and no error"

# 3. Warm: front against the app's socket, same client (in-process).
out=$(bench 'WarmRatio/goapp$' 8x)
wr=$(awk -v r="$(field "$out" 'front/direct')" 'BEGIN { printf "%.2f", r }')
fr=$(field "$out" 'front-req/s')
dr=$(field "$out" 'direct-req/s')
printf 'row\t%s\t%s\t%s\t%s\n' "runner front, warm keep-alive GETs, tiny Go app: $fr vs $dr req/s (target 0.8x)" \
  "same Go client straight to the unix socket" "${wr}x" "8 interleaved pairs of 500 ms rounds, 32 client goroutines, all 3 processes on $(nproc) shared cores"
fi

# 4. runnerd against nginx in front of the same instance.
cat >"$tmp/specs/warm.json" <<JSON
{"name": "warm", "hosts": ["warm.example"], "image": "$tmp/image", "command": ["/app/testapp"], "idle_timeout": "1h"}
JSON
WSGI_CMD='exec /usr/bin/gunicorn --workers 2 --worker-class gthread --threads 4 --bind unix:$PAASKIT_SOCKET app:app'
cat >"$tmp/specs/wsgi.json" <<JSON
{"name": "wsgi", "hosts": ["wsgi.example"], "image": "$tmp/wimage", "command": ["/bin/sh", "-c", "$WSGI_CMD"], "idle_timeout": "1h"}
JSON
PORT_RUNNERD=19401
PORT_ADMIN=19402
PORT_NGINX=19403
PORT_NGINX_WSGI=19404
PORT_NGINX1=19407
PORT_NGINX1_WSGI=19408
"$tmp/runnerd" -listen 127.0.0.1:$PORT_RUNNERD -admin 127.0.0.1:$PORT_ADMIN -specs "$tmp/specs" -state "$tmp/state" \
  -cgroup-root paaskit-bench -log-level warn 2>>"$tmp/runnerd.log" & rpid=$!
pids+=($rpid)
for _ in $(seq 1 100); do
  curl -fsS -H 'Host: warm.example' "http://127.0.0.1:$PORT_RUNNERD/" >/dev/null 2>&1 && break
  sleep 0.1
done
for _ in $(seq 1 300); do
  curl -fsS -H 'Host: wsgi.example' "http://127.0.0.1:$PORT_RUNNERD/" >/dev/null 2>&1 && break
  sleep 0.1
done
# Each instance's socket, from runnerd's status.
sock_of() { # app [admin-port state-dir]
  local id
  id=$(curl -fsS "http://127.0.0.1:${2:-$PORT_ADMIN}/status" | python3 -c 'import json,sys; print([a for a in json.load(sys.stdin)["apps"] if a["name"]==sys.argv[1]][0]["instance"]["id"])' "$1")
  echo "${3:-$tmp/state}/run/$id/app.sock"
}
sock=$(sock_of warm)
wsock=$(sock_of wsgi)
[[ -S $sock && -S $wsock ]] || { echo "instance sockets not found: $sock $wsock" >&2; exit 1; }
write_nginx_conf "$tmp/nginx" "$PORT_NGINX" "unix:$sock"
"$NGINX" -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" 2>>"$tmp/nginx/stderr" & npid=$!
pids+=($npid)
write_nginx_conf "$tmp/nginxw" "$PORT_NGINX_WSGI" "unix:$wsock"
"$NGINX" -c "$tmp/nginxw/nginx.conf" -p "$tmp/nginxw" 2>>"$tmp/nginxw/stderr" & nwpid=$!
pids+=($nwpid)
# nginx with one worker: matched with the default front's one event loop.
write_nginx_conf "$tmp/nginx1" "$PORT_NGINX1" "unix:$sock" 1
"$NGINX" -c "$tmp/nginx1/nginx.conf" -p "$tmp/nginx1" 2>>"$tmp/nginx1/stderr" & n1pid=$!
pids+=($n1pid)
write_nginx_conf "$tmp/nginx1w" "$PORT_NGINX1_WSGI" "unix:$wsock" 1
"$NGINX" -c "$tmp/nginx1w/nginx.conf" -p "$tmp/nginx1w" 2>>"$tmp/nginx1w/stderr" & n1wpid=$!
pids+=($n1wpid)
for port in $PORT_NGINX $PORT_NGINX_WSGI $PORT_NGINX1 $PORT_NGINX1_WSGI; do
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
    sleep 0.1
  done
done
wrk_rps() { # url
  local out
  out=$(wrk $WRK_ARGS -H 'Host: warm.example' "$1")
  echo "--- $1" >&2; echo "$out" >&2
  if grep -q -E "Non-2xx|Socket errors" <<<"$out"; then echo "wrk reported errors on $1" >&2; return 1; fi
  awk '/^Requests\/sec:/ {print $2}' <<<"$out"
}
wrk -t2 -c64 -d2s -H 'Host: warm.example' "http://127.0.0.1:$PORT_RUNNERD/" >/dev/null
wrk -t2 -c64 -d2s "http://127.0.0.1:$PORT_NGINX/" >/dev/null
wrk -t2 -c64 -d2s "http://127.0.0.1:$PORT_NGINX1/" >/dev/null
WR=(); WN=(); WN1=()
for _ in $(seq 1 "$ROUNDS"); do
  WR+=("$(wrk_rps "http://127.0.0.1:$PORT_RUNNERD/")")
  WN+=("$(wrk_rps "http://127.0.0.1:$PORT_NGINX/")")
  WN1+=("$(wrk_rps "http://127.0.0.1:$PORT_NGINX1/")")
done
# The same Go client (internal/testapp/load) against runnerd, nginx and the
# socket itself, interleaved.
go_rps() { # args...
  local out
  out=$("$tmp/load" -c 32 -d 2s "$@")
  echo "--- load $*: $out" >&2
  awk '{print $1}' <<<"$out"
}
GR=(); GN=(); GN1=(); GD=()
for _ in $(seq 1 "$ROUNDS"); do
  GR+=("$(go_rps -url "http://127.0.0.1:$PORT_RUNNERD/" -host warm.example)")
  GN+=("$(go_rps -url "http://127.0.0.1:$PORT_NGINX/")")
  GN1+=("$(go_rps -url "http://127.0.0.1:$PORT_NGINX1/")")
  GD+=("$(go_rps -unix "$sock")")
done
# The same for the WSGI app under gunicorn.
SR=(); SN=(); SN1=(); SD=()
go_rps -url "http://127.0.0.1:$PORT_RUNNERD/" -host wsgi.example >/dev/null
go_rps -url "http://127.0.0.1:$PORT_NGINX_WSGI/" >/dev/null
go_rps -url "http://127.0.0.1:$PORT_NGINX1_WSGI/" >/dev/null
go_rps -unix "$wsock" >/dev/null
for _ in $(seq 1 "$ROUNDS"); do
  SR+=("$(go_rps -url "http://127.0.0.1:$PORT_RUNNERD/" -host wsgi.example)")
  SN+=("$(go_rps -url "http://127.0.0.1:$PORT_NGINX_WSGI/")")
  SN1+=("$(go_rps -url "http://127.0.0.1:$PORT_NGINX1_WSGI/")")
  SD+=("$(go_rps -unix "$wsock")")
done
for p in "$npid" "$nwpid" "$n1pid" "$n1wpid" "$rpid"; do kill "$p"; wait "$p" 2>/dev/null || true; done
if [[ $WARM_ONLY != 1 ]]; then
# runnerd again with -event-loops $ALT_EVENT_LOOPS, each app against its own
# instance's socket.
PORT_LOOPS=19405
PORT_LOOPS_ADMIN=19406
"$tmp/runnerd" -listen 127.0.0.1:$PORT_LOOPS -admin 127.0.0.1:$PORT_LOOPS_ADMIN -event-loops "$ALT_EVENT_LOOPS" -specs "$tmp/specs" -state "$tmp/state2" \
  -cgroup-root paaskit-bench2 -log-level warn 2>>"$tmp/runnerd2.log" & lpid=$!
pids+=($lpid)
for host in warm.example wsgi.example; do
  for _ in $(seq 1 300); do
    curl -fsS -H "Host: $host" "http://127.0.0.1:$PORT_LOOPS/" >/dev/null 2>&1 && break
    sleep 0.1
  done
done
lsock=$(sock_of warm $PORT_LOOPS_ADMIN "$tmp/state2")
lwsock=$(sock_of wsgi $PORT_LOOPS_ADMIN "$tmp/state2")
# nginx with as many workers as this runnerd has loops, on the same sockets.
PORT_NGINXL=19409
PORT_NGINXL_WSGI=19410
NL_WORKERS=$ALT_EVENT_LOOPS
((NL_WORKERS >= 1)) || NL_WORKERS=$(nproc)
write_nginx_conf "$tmp/nginxl" "$PORT_NGINXL" "unix:$lsock" "$NL_WORKERS"
"$NGINX" -c "$tmp/nginxl/nginx.conf" -p "$tmp/nginxl" 2>>"$tmp/nginxl/stderr" & nlpid=$!
pids+=($nlpid)
write_nginx_conf "$tmp/nginxlw" "$PORT_NGINXL_WSGI" "unix:$lwsock" "$NL_WORKERS"
"$NGINX" -c "$tmp/nginxlw/nginx.conf" -p "$tmp/nginxlw" 2>>"$tmp/nginxlw/stderr" & nlwpid=$!
pids+=($nlwpid)
for port in $PORT_NGINXL $PORT_NGINXL_WSGI; do
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
    sleep 0.1
  done
done
go_rps -url "http://127.0.0.1:$PORT_LOOPS/" -host warm.example >/dev/null
go_rps -url "http://127.0.0.1:$PORT_LOOPS/" -host wsgi.example >/dev/null
LR=(); LN=(); LD=(); LSR=(); LSN=(); LSD=()
for _ in $(seq 1 "$ROUNDS"); do
  LR+=("$(go_rps -url "http://127.0.0.1:$PORT_LOOPS/" -host warm.example)")
  LN+=("$(go_rps -url "http://127.0.0.1:$PORT_NGINXL/")")
  LD+=("$(go_rps -unix "$lsock")")
  LSR+=("$(go_rps -url "http://127.0.0.1:$PORT_LOOPS/" -host wsgi.example)")
  LSN+=("$(go_rps -url "http://127.0.0.1:$PORT_NGINXL_WSGI/")")
  LSD+=("$(go_rps -unix "$lwsock")")
done
for p in "$nlpid" "$nlwpid" "$lpid"; do kill "$p"; wait "$p" 2>/dev/null || true; done
fi

wcondw="wrk $WRK_ARGS, $ROUNDS interleaved rounds after warm-up, median of per-round ratios, tiny Go app, $(nproc) shared cores"
printf 'row\t%s\t%s\t%s\t%s\n' "runnerd default front (1 event loop) to an app's unix socket: $(median "${WR[@]}") vs $(median "${WN1[@]}") req/s (medians; matched)" \
  "nginx 1.22 (1 worker, upstream keepalive 256) to the same socket" "$(mratio WR WN1)" "$wcondw"
printf 'row\t%s\t%s\t%s\t%s\n' "runnerd default front (1 event loop) to an app's unix socket: $(median "${WR[@]}") vs $(median "${WN[@]}") req/s (medians)" \
  "nginx 1.22 (2 workers, upstream keepalive 256) to the same socket" "$(mratio WR WN)" "$wcondw"

gcond="Go net/http client (separate process), 32 keep-alive goroutines, $ROUNDS interleaved rounds of 2 s, median of per-round ratios, tiny Go app, $(nproc) shared cores"
printf 'row\t%s\t%s\t%s\t%s\n' "runnerd default front (1 event loop), tiny Go app: $(median "${GR[@]}") vs $(median "${GD[@]}") req/s (target 0.8x; nginx gets $(mratio GN GD) of direct)" \
  "same Go client straight to the unix socket" "$(mratio GR GD)" "$gcond"
printf 'row\t%s\t%s\t%s\t%s\n' "runnerd default front (1 event loop), tiny Go app: $(median "${GR[@]}") vs $(median "${GN1[@]}") req/s (matched)" \
  "nginx 1.22 (1 worker, upstream keepalive 256) to the same socket" "$(mratio GR GN1)" "$gcond"
printf 'row\t%s\t%s\t%s\t%s\n' "runnerd default front (1 event loop), tiny Go app: $(median "${GR[@]}") vs $(median "${GN[@]}") req/s" \
  "nginx 1.22 (2 workers, upstream keepalive 256) to the same socket" "$(mratio GR GN)" "$gcond"
wcond="Go net/http client (separate process), 32 keep-alive goroutines, $ROUNDS interleaved rounds of 2 s, median of per-round ratios, WSGI app under Debian's gunicorn (2 gthread workers x 4 threads), $(nproc) shared cores"
printf 'row\t%s\t%s\t%s\t%s\n' "runnerd default front (1 event loop), gunicorn WSGI app: $(median "${SR[@]}") vs $(median "${SD[@]}") req/s (target 0.8x; nginx gets $(mratio SN SD) of direct)" \
  "same Go client straight to gunicorn's unix socket" "$(mratio SR SD)" "$wcond"
printf 'row\t%s\t%s\t%s\t%s\n' "runnerd default front (1 event loop), gunicorn WSGI app: $(median "${SR[@]}") vs $(median "${SN1[@]}") req/s (matched)" \
  "nginx 1.22 (1 worker, upstream keepalive 256) to the same socket" "$(mratio SR SN1)" "$wcond"
printf 'row\t%s\t%s\t%s\t%s\n' "runnerd default front (1 event loop), gunicorn WSGI app: $(median "${SR[@]}") vs $(median "${SN[@]}") req/s" \
  "nginx 1.22 (2 workers, upstream keepalive 256) to the same socket" "$(mratio SR SN)" "$wcond"
if [[ $WARM_ONLY != 1 ]]; then
printf 'row\t%s\t%s\t%s\t%s\n' "runnerd -event-loops $ALT_EVENT_LOOPS, tiny Go app: $(median "${LR[@]}") vs $(median "${LD[@]}") req/s" \
  "same Go client straight to the unix socket" "$(mratio LR LD)" "${gcond/interleaved rounds/interleaved rounds (Go app and WSGI alternating)}"
printf 'row\t%s\t%s\t%s\t%s\n' "runnerd -event-loops $ALT_EVENT_LOOPS, gunicorn WSGI app: $(median "${LSR[@]}") vs $(median "${LSD[@]}") req/s" \
  "same Go client straight to gunicorn's unix socket" "$(mratio LSR LSD)" "$wcond"
printf 'row\t%s\t%s\t%s\t%s\n' "runnerd -event-loops $ALT_EVENT_LOOPS, tiny Go app: $(median "${LR[@]}") vs $(median "${LN[@]}") req/s (matched)" \
  "nginx 1.22 ($NL_WORKERS workers, upstream keepalive 256) to the same socket" "$(mratio LR LN)" "$gcond"
printf 'row\t%s\t%s\t%s\t%s\n' "runnerd -event-loops $ALT_EVENT_LOOPS, gunicorn WSGI app: $(median "${LSR[@]}") vs $(median "${LSN[@]}") req/s (matched)" \
  "nginx 1.22 ($NL_WORKERS workers, upstream keepalive 256) to the same socket" "$(mratio LSR LSN)" "$wcond"
fi

# 5. 1,000 idle apps; 100 active at once.
[[ $WARM_ONLY != 1 ]] || exit 0
out=$("$tmp/runner.test" -test.run 'TestThousandConfiguredApps|TestHundredAppsActiveAtOnce' -test.v 2>&1 | grep -E '^(---|ok|PASS|FAIL)|live heap' || true)
echo "$out" >&2
delta=$(grep -oP '[0-9-]+(?= KiB, )' <<<"$out")
perapp=$(grep -oP '[0-9-]+(?= bytes per app)' <<<"$out")
((delta < 1)) && delta=1
grep -q -- '--- PASS: TestThousandConfiguredApps' <<<"$out" && ok1=ok || ok1=FAILED
grep -q -- '--- PASS: TestHundredAppsActiveAtOnce' <<<"$out" && ok2=ok || ok2=FAILED
hundred=$(grep -oP '(?<=--- PASS: TestHundredAppsActiveAtOnce \()[0-9.]+s' <<<"$out" || echo "?")
printf 'bar\t%s\t%s\t%s\t%s\n' "runner 1,000 configured apps, none running ($ok1)" \
  "+${delta} KiB live heap (${perapp} B/app), 0 processes" "< 50 MB, 0 processes (issue 6)" "live heap after GC, before and after 1,000 Put"
printf 'bar\t%s\t%s\t%s\t%s\n' "runner 100 apps active at once, full isolation" "$ok2, all started in $hundred" "all 100 answered (issue 6)" \
  "100 concurrent first requests to 100 different apps, each answered"
[[ $ok1 == ok && $ok2 == ok ]]
