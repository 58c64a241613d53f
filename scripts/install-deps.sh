#!/usr/bin/env bash
# install-deps.sh installs the Debian packages paaskit needs. It is
# idempotent and quiet: apt-get update runs only when a package is missing,
# and nothing is printed when all are present.
#
# Usage: scripts/install-deps.sh [--demo | --test | --bench]
#
#   --demo   what `make demo` needs: libzmq for cgo, Python and gunicorn for
#            the sample apps. No database, no SSH server.
#   --test   (the default) what `make test` needs: the demo's packages plus
#            PostgreSQL, Redis, etcd, git, hg, OpenSSH, rsync, squashfs-tools,
#            nftables (the runner's egress rules), libcap2-bin (capsh).
#   --bench  the test packages plus the peers `make bench` measures against.
#
# It never stops, restarts or reconfigures a service that is already
# running: an operator's own PostgreSQL or nginx stays as it was. Packaged
# services are kept from starting at install time instead, by a
# policy-rc.d that exists only while apt-get runs (and only when none was
# there before), so a fresh install leaves nothing new listening on the
# default ports. Tests start their own servers on free loopback ports.
set -euo pipefail

mode="${1:---test}"
demo_pkgs=(
  libzmq3-dev pkg-config gcc
  python3 python3-venv gunicorn
  iproute2 procps util-linux
)
test_pkgs=(
  "${demo_pkgs[@]}"
  postgresql redis-server etcd-server
  git openssh-client openssh-server rsync
  squashfs-tools
  nftables libcap2-bin
  python3-pip python3-wheel python3-setuptools python3-zmq
  mercurial
)
case "$mode" in
  --demo) pkgs=("${demo_pkgs[@]}") ;;
  --test) pkgs=("${test_pkgs[@]}") ;;
  --bench) pkgs=("${test_pkgs[@]}" nginx haproxy wrk curl) ;;
  *) echo "usage: $0 [--demo | --test | --bench]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}" >&2

# invoke-rc.d asks /usr/sbin/policy-rc.d before starting a service; exit
# code 101 means "action forbidden". Only a policy we put there is removed.
policy=/usr/sbin/policy-rc.d
ours=""
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\n# written by paaskit install-deps.sh for one apt-get run\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  ours=1
fi
# An if, not `[[ ]] &&`: an EXIT trap whose last command fails makes the
# whole script exit 1, which it did on hosts that already had a policy.
cleanup() { if [[ -n "$ours" ]]; then $sudo rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
