#!/usr/bin/env bash
# The main job: build netvigil, replay a bundled capture, print its events
# (JSON lines on stdout) and the run summary (stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
cargo build --release --locked --quiet
exec ./target/release/netvigil replay \
  captures/scans/chrissanders_activeosfingerprinting.pcapng \
  captures/misuse/esnet_one_way_all_flags.pcap \
  "$@"
