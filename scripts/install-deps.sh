#!/usr/bin/env bash
# install-deps.sh installs the Debian packages paaskit's tests, demo and
# benchmarks need. It is idempotent and quiet: apt-get update runs only when
# a package is missing, and nothing is printed when all are present.
#
# Usage: scripts/install-deps.sh [--bench]
set -euo pipefail

pkgs=(
  libzmq3-dev pkg-config gcc
  postgresql redis-server
  git openssh-client openssh-server rsync
  squashfs-tools
  python3 python3-venv python3-pip python3-wheel python3-setuptools python3-zmq gunicorn
  mercurial iproute2 procps util-linux
)
if [[ "${1:-}" == "--bench" ]]; then
  pkgs+=(nginx haproxy wrk curl)
fi

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
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packaged services must not hold the default ports or run in the
# background: tests start their own servers on free loopback ports.
for svc in nginx haproxy redis-server postgresql; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $sudo systemctl stop "$svc" >/dev/null 2>&1 || true
  fi
done
