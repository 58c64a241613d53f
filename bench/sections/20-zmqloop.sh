#!/usr/bin/env bash
# zmqloop: signed messaging against two raw peers, same machine, same run:
# a C program using libzmq directly (zmqraw, below, compiled here with gcc
# against the system libzmq), and the same traffic through pebbe/zmq4's
# Go API, which zmqloop is built on.
#
# The go test benchmarks in ./zmqloop come in sibling pairs (raw pebbe/zmq4
# baseline, signed zmqloop equivalent); zmqraw measures the C side. The 2
# cores are shared and noisy, so this section compiles both once and runs
# each group alternately ROUNDS times (C, pebbe, signed, C, pebbe, signed,
# ...), taking each side's median ns/op. Rows (larger is better for
# paaskit; each names its peer exactly):
#   round trip:  peer RTT / signed RTT, against the C peer (REQ and REP
#     threads in one process) and the pebbe peer (REQ and REP goroutines)
#     (bar: signed <= 1.5x pebbe, i.e. >= 0.67x)
#   the same with the server in a process of its own: C REQ client and C
#     REP server processes; pebbe REQ in the bench process, REP in the
#     test binary re-executed; signed Client in the bench process,
#     ReplyLoop in the test binary re-executed.
#   the pebbe pair pinned to one CPU (taskset -c 0): on this 2-vCPU VM the
#     unpinned figure is dominated by cross-CPU wake-ups (inter-processor
#     interrupts through the hypervisor); pinned, both sides pay only their
#     own work, which is what the library adds. Pinned, GOMAXPROCS is 1, so
#     zmqloop's sides wait in the netpoller only (no SyscallWait phase).
#   push/pull:   peer ns/msg / signed ns/msg, C and pebbe (bar vs pebbe:
#     >= 0.50x)
# and one budget line (no peer): 64 callers, signed req/s against 50,000.
#
# Fairness: every pair has the same 100-byte body, TCP loopback, one
# libzmq context (one I/O thread) per process, default high-water marks,
# one frame per raw message. The signed side sends three frames per
# message (key id, payload, MAC) where raw sends one, as the wire format
# requires. The C peer makes blocking zmq_send/zmq_recv calls, one per
# frame; the pebbe peer makes pebbe/zmq4's SendBytes/RecvBytes calls
# (several cgo calls per frame) on blocking sockets; zmqloop uses
# non-blocking sockets, waits in ppoll or Go's netpoller, and reads or
# writes a whole message (or a batch) per cgo call.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-7}
BENCHTIME=${BENCHTIME:-1s}
work=$(mktemp -d)
bin=$work/zmqloop.test
craw=$work/zmqraw
trap 'rm -rf "$work"' EXIT
go test -c -o "$bin" ./zmqloop >&2
command -v gcc >/dev/null || { echo "20-zmqloop: gcc is missing: apt-get install gcc" >&2; exit 1; }
pkg-config --exists libzmq || { echo "20-zmqloop: libzmq's headers are missing: apt-get install libzmq3-dev" >&2; exit 1; }
cat >"$work/zmqraw.c" <<'C'
/* zmqraw: the raw libzmq peer of bench/sections/20-zmqloop.sh. Plain
 * blocking zmq_send/zmq_recv of one-frame messages, one context (one I/O
 * thread), TCP loopback: what a C program using libzmq directly does.
 *
 *   zmqraw reqrep SECONDS SIZE     REP thread and REQ thread, one process:
 *                                  prints ns per round trip
 *   zmqraw rep ENDPOINT            REP server until killed; prints the
 *                                  bound endpoint on stdout first
 *   zmqraw req ENDPOINT SECONDS SIZE
 *                                  REQ client: prints ns per round trip
 *   zmqraw pushpull SECONDS SIZE   PUSH thread and PULL thread, one
 *                                  process: prints ns per message received
 *
 * Each timed run is preceded by 1,000 untimed messages, so the connection
 * is up, and lasts about SECONDS. A client or receiver that waits 10 s for
 * a message fails instead of hanging. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define MAXMSG 65536

static double now_s(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
	fprintf(stderr, "zmqraw: %s: %s\n", what, zmq_strerror(zmq_errno()));
	exit(1);
}

static void *socket_or_die(void *ctx, int type) {
	void *s = zmq_socket(ctx, type);
	int linger = 0;
	if (s == NULL) die("zmq_socket");
	if (zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) < 0) die("ZMQ_LINGER");
	return s;
}

/* bounded makes s fail with EAGAIN after 10 s without progress. */
static void bounded(void *s) {
	int ms = 10000;
	if (zmq_setsockopt(s, ZMQ_RCVTIMEO, &ms, sizeof ms) < 0) die("ZMQ_RCVTIMEO");
	if (zmq_setsockopt(s, ZMQ_SNDTIMEO, &ms, sizeof ms) < 0) die("ZMQ_SNDTIMEO");
}

/* bind_any binds s to a free loopback port and writes the endpoint. */
static void bind_any(void *s, char *ep, size_t cap) {
	if (zmq_bind(s, "tcp://127.0.0.1:*") < 0) die("zmq_bind");
	if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &cap) < 0) die("ZMQ_LAST_ENDPOINT");
}

/* echo answers every request on a REP socket until the context ends. */
static void *echo(void *sock) {
	static char buf[MAXMSG];
	for (;;) {
		int n = zmq_recv(sock, buf, sizeof buf, 0);
		if (n < 0) {
			if (zmq_errno() == ETERM || zmq_errno() == EINTR) break;
			die("rep zmq_recv");
		}
		if (n > MAXMSG) n = MAXMSG;
		if (zmq_send(sock, buf, (size_t)n, 0) < 0) {
			if (zmq_errno() == ETERM) break;
			die("rep zmq_send");
		}
	}
	zmq_close(sock);
	return NULL;
}

static void roundtrip(void *req, const char *msg, size_t size, char *buf) {
	if (zmq_send(req, msg, size, 0) < 0) die("req zmq_send");
	if (zmq_recv(req, buf, MAXMSG, 0) < 0) die("req zmq_recv");
}

/* calls times round trips on a connected REQ socket for about secs. */
static double calls(void *req, double secs, size_t size) {
	char *msg = calloc(size ? size : 1, 1), *buf = malloc(MAXMSG);
	long n = 0;
	double t0, t;
	memset(msg, 'x', size);
	for (int i = 0; i < 1000; i++) roundtrip(req, msg, size, buf);
	t0 = now_s();
	do {
		for (int i = 0; i < 256; i++) roundtrip(req, msg, size, buf);
		n += 256;
		t = now_s();
	} while (t - t0 < secs);
	free(msg);
	free(buf);
	return (t - t0) * 1e9 / (double)n;
}

struct pull_arg {
	void *sock;
	long got;   /* timed messages received */
	double end; /* when the end marker arrived */
};

/* drain receives until the empty end marker; the first 1,000 messages
 * are the untimed warm-up. */
static void *drain(void *p) {
	struct pull_arg *a = p;
	static char buf[MAXMSG];
	long n = 0;
	for (;;) {
		int r = zmq_recv(a->sock, buf, sizeof buf, 0);
		if (r < 0) die("pull zmq_recv");
		if (r == 0) break;
		n++;
	}
	a->end = now_s();
	a->got = n - 1000;
	return NULL;
}

int main(int argc, char **argv) {
	void *ctx = zmq_ctx_new();
	char ep[256];
	if (ctx == NULL) die("zmq_ctx_new");
	if (argc == 4 && strcmp(argv[1], "reqrep") == 0) {
		pthread_t th;
		void *rep = socket_or_die(ctx, ZMQ_REP), *req;
		bind_any(rep, ep, sizeof ep);
		if (pthread_create(&th, NULL, echo, rep) != 0) die("pthread_create");
		req = socket_or_die(ctx, ZMQ_REQ);
		bounded(req);
		if (zmq_connect(req, ep) < 0) die("zmq_connect");
		printf("%.1f\n", calls(req, atof(argv[2]), (size_t)atol(argv[3])));
		zmq_close(req);
		zmq_ctx_shutdown(ctx); /* ends the echo thread's zmq_recv */
		pthread_join(th, NULL);
	} else if (argc == 3 && strcmp(argv[1], "rep") == 0) {
		void *rep = socket_or_die(ctx, ZMQ_REP);
		if (zmq_bind(rep, argv[2]) < 0) die("zmq_bind");
		size_t cap = sizeof ep;
		if (zmq_getsockopt(rep, ZMQ_LAST_ENDPOINT, ep, &cap) < 0) die("ZMQ_LAST_ENDPOINT");
		printf("%s\n", ep);
		fflush(stdout);
		echo(rep);
	} else if (argc == 5 && strcmp(argv[1], "req") == 0) {
		void *req = socket_or_die(ctx, ZMQ_REQ);
		bounded(req);
		if (zmq_connect(req, argv[2]) < 0) die("zmq_connect");
		printf("%.1f\n", calls(req, atof(argv[3]), (size_t)atol(argv[4])));
		zmq_close(req);
	} else if (argc == 4 && strcmp(argv[1], "pushpull") == 0) {
		pthread_t th;
		struct pull_arg a = {0};
		double secs = atof(argv[2]), t0;
		size_t size = (size_t)atol(argv[3]);
		char *msg = calloc(size ? size : 1, 1);
		long sent = 0;
		void *push;
		memset(msg, 'x', size);
		a.sock = socket_or_die(ctx, ZMQ_PULL);
		bounded(a.sock);
		bind_any(a.sock, ep, sizeof ep);
		if (pthread_create(&th, NULL, drain, &a) != 0) die("pthread_create");
		push = socket_or_die(ctx, ZMQ_PUSH);
		bounded(push);
		if (zmq_connect(push, ep) < 0) die("zmq_connect");
		for (int i = 0; i < 1000; i++)
			if (zmq_send(push, msg, size ? size : 1, 0) < 0) die("push zmq_send");
		t0 = now_s();
		do {
			for (int i = 0; i < 4096; i++)
				if (zmq_send(push, msg, size ? size : 1, 0) < 0) die("push zmq_send");
			sent += 4096;
		} while (now_s() - t0 < secs);
		if (zmq_send(push, "", 0, 0) < 0) die("push zmq_send");
		pthread_join(th, NULL);
		if (a.got != sent) {
			fprintf(stderr, "zmqraw: pushpull: sent %ld, received %ld\n", sent, a.got);
			return 1;
		}
		printf("%.1f\n", (a.end - t0) * 1e9 / (double)a.got);
		zmq_close(push);
		zmq_close(a.sock);
		free(msg);
	} else {
		fprintf(stderr, "usage: zmqraw reqrep SECONDS SIZE | rep ENDPOINT | req ENDPOINT SECONDS SIZE | pushpull SECONDS SIZE\n");
		return 2;
	}
	zmq_ctx_term(ctx);
	return 0;
}
C
gcc -O2 -Wall -Wextra -o "$craw" "$work/zmqraw.c" $(pkg-config --cflags --libs libzmq) -lpthread >&2
libzmq_version=$(pkg-config --modversion libzmq)
pebbe_version=$(awk '$1 == "github.com/pebbe/zmq4" {print $2}' go.mod)
# BENCHTIME in seconds for zmqraw ("1s" -> 1; "500ms" -> 0.5).
secs=$(awk -v t="$BENCHTIME" 'BEGIN {if (t ~ /ms$/) {sub(/ms$/, "", t); print t/1000} else if (t ~ /s$/) {sub(/s$/, "", t); print t+0} else exit 1}') ||
  { echo "20-zmqloop: BENCHTIME $BENCHTIME: want a duration such as 1s or 500ms" >&2; exit 1; }

# crun NAME -> prints zmqraw's ns/op for C peer NAME (CReqRep, CReqRepProc,
# CPushPull).
crun() {
  case $1 in
  CReqRep) "$craw" reqrep "$secs" 100 ;;
  CPushPull) "$craw" pushpull "$secs" 100 ;;
  CReqRepProc)
    # A fresh file per run: a reused one could still hold the endpoint of
    # the previous run's server when it is read, before the redirection
    # below empties it.
    local epf
    epf=$(mktemp "$work/rep.XXXXXX")
    "$craw" rep 'tcp://127.0.0.1:*' >"$epf" &
    local pid=$!
    local ep=""
    for _ in $(seq 100); do
      # the whole line, newline included, or nothing yet
      if [[ -s $epf && -z $(tail -c1 "$epf") ]]; then
        ep=$(head -1 "$epf")
        break
      fi
      sleep 0.05
    done
    [[ -n $ep ]] || { kill "$pid"; echo "20-zmqloop: zmqraw rep did not start" >&2; return 1; }
    "$craw" req "$ep" "$secs" 100 || { kill "$pid"; return 1; }
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    ;;
  *) return 1 ;;
  esac
}

# run NAME -> prints ns/op of one run of benchmark NAME (a C peer for a
# name starting with C). A name ending in @1cpu runs pinned to one CPU
# (taskset -c 0), both sides of its pair alike.
run() {
  if [[ $1 == C* ]]; then
    crun "$1"
    return
  fi
  local pin=()
  if [[ $1 == *@1cpu ]]; then
    pin=(taskset -c 0)
    set -- "${1%@1cpu}"
  fi
  "${pin[@]}" "$bin" -test.run '^$' -test.bench "^Benchmark$1\$" -test.benchtime "$BENCHTIME" 2>&1 |
    awk -v n="Benchmark$1" '$1 ~ "^"n"(-[0-9]+)?$" {print $3; found=1} END {if (!found) exit 1}'
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

declare -A res
for pair in "CReqRep RawReqRep SignedReqRep" "CReqRepProc RawReqRepProc SignedReqRepProc" "RawReqRep@1cpu SignedReqRep@1cpu" "CPushPull RawPushPull SignedPushPull" "ReplyLoop64"; do
  for name in $pair; do res[$name]=""; done
  for ((i = 1; i <= ROUNDS; i++)); do
    for name in $pair; do
      v=$(run "$name")
      echo "round $i $name $v ns/op" >&2
      res[$name]+="$v"$'\n'
    done
  done
done

med() { printf '%s' "${res[$1]}" | median; }
cr=$(med CReqRep); rr=$(med RawReqRep); sr=$(med SignedReqRep)
crp=$(med CReqRepProc); rrp=$(med RawReqRepProc); srp=$(med SignedReqRepProc)
rr1=$(med RawReqRep@1cpu); sr1=$(med SignedReqRep@1cpu)
cp=$(med CPushPull); rp=$(med RawPushPull); sp=$(med SignedPushPull)
l64=$(med ReplyLoop64)
echo "medians (ns/op): CReqRep=$cr RawReqRep=$rr SignedReqRep=$sr CReqRepProc=$crp RawReqRepProc=$rrp SignedReqRepProc=$srp RawReqRep@1cpu=$rr1 SignedReqRep@1cpu=$sr1 CPushPull=$cp RawPushPull=$rp SignedPushPull=$sp ReplyLoop64=$l64" >&2

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a/b}'; }
us() { awk -v s="$1" 'BEGIN {printf "%.1fus", s/1000}'; }
rate() { awk -v s="$1" 'BEGIN {printf "%.0f msg/s", 1e9/s}'; }
C="raw libzmq $libzmq_version from C (zmqraw: gcc -O2, blocking zmq_send/zmq_recv)"
P="raw pebbe/zmq4 $pebbe_version on libzmq $libzmq_version (Go, blocking SendBytes/RecvBytes)"
S="median of $ROUNDS alternating ${BENCHTIME} runs"
what="zmqloop signed request/reply round trip (Client.Call -> ReplyLoop, 100-byte body)"
printf 'row\t%s\t%s\t%s\t%s\n' "$what" "$C: REQ and REP threads, one process" "$(ratio "$cr" "$sr")" \
  "TCP loopback, 1 caller, one process, $S; signed $(us "$sr") vs C $(us "$cr")"
printf 'row\t%s\t%s\t%s\t%s\n' "$what" "$P: REQ and REP goroutines, one process" "$(ratio "$rr" "$sr")" \
  "TCP loopback, 1 caller, one process, $S; signed $(us "$sr") vs pebbe $(us "$rr"); bar >=0.67x (signed <=1.5x pebbe)"
what="zmqloop signed request/reply round trip, server in its own process"
printf 'row\t%s\t%s\t%s\t%s\n' "$what" "$C: REQ client and REP server processes" "$(ratio "$crp" "$srp")" \
  "TCP loopback, 1 caller, two processes, $S; signed $(us "$srp") vs C $(us "$crp")"
printf 'row\t%s\t%s\t%s\t%s\n' "$what" "$P: REQ in the bench process, REP in another" "$(ratio "$rrp" "$srp")" \
  "TCP loopback, 1 caller, two processes, $S; signed $(us "$srp") vs pebbe $(us "$rrp"); bar >=0.67x"
printf 'row\t%s\t%s\t%s\t%s\n' "zmqloop signed request/reply round trip, both sides pinned to one CPU" \
  "$P: REQ and REP goroutines, pinned alike" "$(ratio "$rr1" "$sr1")" \
  "as the one-process pebbe row, each run under taskset -c 0 (no cross-CPU wake-ups), $S; signed $(us "$sr1") vs pebbe $(us "$rr1"); bar >=0.67x"
what="zmqloop signed PUSH/PULL throughput (Pusher -> PullLoop, 100-byte body)"
printf 'row\t%s\t%s\t%s\t%s\n' "$what" "$C: PUSH and PULL threads, one process" "$(ratio "$cp" "$sp")" \
  "TCP loopback, one process, $S; signed $(rate "$sp") vs C $(rate "$cp")"
printf 'row\t%s\t%s\t%s\t%s\n' "$what" "$P: PUSH and PULL goroutines, one process" "$(ratio "$rp" "$sp")" \
  "TCP loopback, one process, $S; signed $(rate "$sp") vs pebbe $(rate "$rp"); bar >=0.50x"
printf 'bar\t%s\t%s\t%s\t%s\n' "zmqloop ReplyLoop, 64 concurrent callers (one Client), signed req/s" \
  "$(awk -v s="$l64" 'BEGIN{printf "%.0f req/s", 1e9/s}')" ">= 50,000 req/s" \
  "TCP loopback, 100-byte body, client and loop in one process on 2 cores, median of $ROUNDS ${BENCHTIME} runs"
