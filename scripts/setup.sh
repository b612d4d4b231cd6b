#!/usr/bin/env bash
# Installs what netvigil needs on Debian/Ubuntu, only when it is missing.
#   scripts/setup.sh build   libpcap headers (to build)
#   scripts/setup.sh test    + the tools the tests drive (iproute2, ping, curl, python3, nmap,
#                            prometheus + promtool, systemd-analyze, nats-server, dpkg-shlibdeps, cargo-deb,
#                            capinfos for the evidence-pcap test)
set -euo pipefail

want=(libpcap-dev pkg-config)
if [ "${1:-build}" = test ]; then
  want+=(iproute2 iputils-ping curl python3 procps nmap prometheus systemd nats-server dpkg-dev wireshark-common)
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust first (https://rustup.rs), then rerun" >&2
  exit 1
fi

# tests/package.rs builds the .deb with it; dpkg-dev above gives it dpkg-shlibdeps
# for the package's Depends. Compiling it takes a few minutes, once.
if [ "${1:-build}" = test ] && ! cargo deb --version >/dev/null 2>&1; then
  echo "setup: installing cargo-deb" >&2
  cargo install cargo-deb --version "^3.8" --locked --quiet
fi
