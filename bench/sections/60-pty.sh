#!/usr/bin/env bash
# Section: pty. Figures of issue 21:
#   - output throughput of a local session (a child writing 100 MiB of
#     zeros, read to EOF), against Python's pty module reading the same
#     child with blocking os.read (Debian's /usr/bin/python3), rounds
#     interleaved: the kernel's pty layer is the ceiling of both;
#   - output throughput of a remote session on loopback (server and client
#     in one process: base64, HMAC, PUSH/PULL, acks) against the local
#     session in the same rounds;
#   - the same figures against the issue's budgets (local >= 200 MB/s,
#     remote >= 100 MB/s), and the keystroke-to-echo round trip through a
#     remote session (one byte typed into cat until its echo is read),
#     median against < 1 ms.
# Env: ROUNDS (default 5), ECHOES (default 5000).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
ECHOES=${ECHOES:-5000}
[[ -x /usr/bin/python3 ]] || { echo "missing /usr/bin/python3: apt-get install python3" >&2; exit 1; }
tmp=$(mktemp -d /tmp/pkpty.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/pty.test" ./pty >&2
cat >"$tmp/peer.py" <<'PY'
import os, pty, sys, time
t = time.perf_counter()
pid, fd = pty.fork()
if pid == 0:
    os.execvp("head", ["head", "-c", "104857600", "/dev/zero"])
n = 0
while True:
    try:
        b = os.read(fd, 65536)
    except OSError:
        break
    if not b:
        break
    n += len(b)
os.waitpid(pid, 0)
assert n == 104857600, n
print("%.2f" % (n / (time.perf_counter() - t) / 1e6))
PY

gobench() { # name -> MB/s
  "$tmp/pty.test" -test.run '^$' -test.bench "^Benchmark$1\$" -test.benchtime 1x 2>&1 |
    awk -v n="Benchmark$1" '$1 ~ "^"n"(-[0-9]+)?$" {print $(NF-1); found=1} END {if (!found) exit 1}'
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

loc="" rem="" py="" rl="" lp=""
for ((i = 1; i <= ROUNDS; i++)); do
  l=$(gobench LocalOutput); r=$(gobench RemoteOutput); p=$(/usr/bin/python3 "$tmp/peer.py")
  echo "round $i: local $l MB/s, remote $r MB/s, python pty $p MB/s" >&2
  loc+="$l"$'\n'; rem+="$r"$'\n'; py+="$p"$'\n'
  lp+=$(awk -v a="$l" -v b="$p" 'BEGIN{print a/b}')$'\n'
  rl+=$(awk -v a="$r" -v b="$l" 'BEGIN{print a/b}')$'\n'
done
ml=$(printf '%s' "$loc" | median); mr=$(printf '%s' "$rem" | median); mp=$(printf '%s' "$py" | median)
rlp=$(printf '%s' "$lp" | median); rrl=$(printf '%s' "$rl" | median)
echo=$("$tmp/pty.test" -test.run '^$' -test.bench '^BenchmarkRemoteEcho$' -test.benchtime "${ECHOES}x" 2>&1 |
  awk '$1 ~ /^BenchmarkRemoteEcho/ {for (i = 1; i < NF; i++) if ($(i+1) == "ns/echo-p50") print $i}')
echo "medians: local $ml MB/s, remote $mr MB/s, python pty $mp MB/s; echo p50 $echo ns" >&2

printf 'row\tlocal session output, 100 MiB child\tPython %s pty module, blocking os.read(64 KiB)\t%.2fx\tmedian of %d interleaved rounds of per-round ratios; %s vs %s MB/s; %s cores\n' \
  "$(/usr/bin/python3 -c 'import sys; print(sys.version.split()[0])')" "$rlp" "$ROUNDS" "$ml" "$mp" "$(nproc)"
printf 'row\tremote session output on loopback, 100 MiB child\tlocal session (same child, same rounds)\t%.2fx\tmedian of %d per-round ratios; %s vs %s MB/s; server and client in one process; bar 0.5x (100 of 200 MB/s)\n' \
  "$rrl" "$ROUNDS" "$mr" "$ml"
printf 'bar\tlocal session output throughput\t%s MB/s\t>= 200 MB/s\tmedian of %d; the kernel pty ceiling here is the Python peer, %s MB/s\n' "$ml" "$ROUNDS" "$mp"
printf 'bar\tremote session output throughput, loopback\t%s MB/s\t>= 100 MB/s\tmedian of %d\n' "$mr" "$ROUNDS"
printf 'bar\tkeystroke-to-echo round trip, remote session, loopback\t%s us median\t< 1000 us\t%s keystrokes into cat\n' \
  "$(awk -v n="$echo" 'BEGIN{printf "%.0f", n/1000}')" "$ECHOES"
