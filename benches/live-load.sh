#!/usr/bin/env bash
# Live capture under load: tcpreplay pushes a capture into one end of a veth
# pair inside a network namespace of ours while `netvigil live` captures the
# other end, at increasing rates. Reports sent vs received and where the
# rest went (kernel ring, interface, netvigil's own shard queues).
#
#   sudo benches/live-load.sh                          # 400k packets at 50k, 100k, 200k pps and top speed
#   sudo PACKETS=1000000 RATES="100000 top" WORKERS=2 benches/live-load.sh
#   sudo THREADS=2 benches/live-load.sh                 # two capture threads in one fanout group
#
# Needs root (namespaces, capture). Everything is created under names
# unique to this run and removed on exit, even on error or Ctrl-C; the only
# processes ended are the ones this script started, by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "live-load.sh: needs root (network namespaces and capture)" >&2; exit 1; }
PACKETS=${PACKETS:-400000}
RATES=${RATES:-"50000 100000 200000 top"}
WORKERS=${WORKERS:-1}
THREADS=${THREADS:-1}   # capture threads (more than one: AF_PACKET fanout)
OUT=target/bench/live
mkdir -p "$OUT"
for pkg in tcpreplay iproute2; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1 \
    || { echo "live-load.sh: cannot install $pkg" >&2; exit 1; }
done
scripts/setup.sh build >/dev/null
cargo build --release --locked --quiet --examples
cargo build --release --locked --quiet
CAP="target/bench/mix-$PACKETS.pcap"
[ -s "$CAP" ] || target/release/examples/gencap "$CAP" "$PACKETS" 1000000 mix

TAG="nvl$$"
TX="${TAG}tx"; RX="${TAG}rx"
SENSOR=""
cleanup() {
  if [ -n "$SENSOR" ]; then kill -INT "$SENSOR" 2>/dev/null || true; wait "$SENSOR" 2>/dev/null || true; fi
  ip netns del "$TX" 2>/dev/null || true
  ip netns del "$RX" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
ip netns add "$TX"; ip netns add "$RX"
ip link add "${TAG}a" type veth peer name "${TAG}b"
ip link set "${TAG}a" netns "$TX"; ip link set "${TAG}b" netns "$RX"
ip -n "$TX" link set "${TAG}a" up; ip -n "$RX" link set "${TAG}b" up

echo "## netvigil live capture under load — $(date -u +%Y-%m-%d)"
echo
echo "Machine: $(nproc) vCPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -r); tcpreplay $(tcpreplay -V 2>&1 | grep -o 'version: [0-9.]*' | cut -d' ' -f2) on one end of a veth pair, \`netvigil live --workers $WORKERS --capture-threads $THREADS\` on the other, same machine."
echo "Capture: $PACKETS packets (benches/gencap.rs mix); every detector on."
echo
echo "| offered rate | achieved send pps | sent | received by netvigil | kernel drops | interface drops | queue drops | loss |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for rate in $RATES; do
  json="$OUT/summary-$rate.json"; rm -f "$json"
  ip netns exec "$RX" target/release/netvigil live -q --interface "${TAG}b" --workers "$WORKERS" --capture-threads "$THREADS" \
    --events /dev/null --summary-json "$json" 2> "$OUT/netvigil-$rate.log" &
  SENSOR=$!
  # Wait (bounded) until the capture is open before sending anything.
  for _ in $(seq 50); do grep -q "capturing on" "$OUT/netvigil-$rate.log" 2>/dev/null && break; sleep 0.1; done
  if [ "$rate" = top ]; then speed=(--topspeed); else speed=(--pps="$rate"); fi
  ip netns exec "$TX" timeout 300 tcpreplay -i "${TAG}a" "${speed[@]}" "$CAP" > "$OUT/tcpreplay-$rate.log" 2>&1 || true
  sleep 2 # let the last packets drain through the ring and the shards
  kill -INT "$SENSOR"; wait "$SENSOR" || true; SENSOR=""
  sent=$(grep -o 'Successful packets: *[0-9]*' "$OUT/tcpreplay-$rate.log" | grep -o '[0-9]*$' || echo 0)
  actual=$(grep -o 'Rated: [0-9.]* Bps, [0-9.]* Mbps, [0-9.]* pps' "$OUT/tcpreplay-$rate.log" | awk '{print $6}' || echo 0)
  python3 - "$json" "$rate" "$sent" "$actual" <<'EOF'
import json, sys
path, rate, sent, actual = sys.argv[1], sys.argv[2], int(sys.argv[3] or 0), float(sys.argv[4] or 0)
try:
    d = json.load(open(path))
except (OSError, ValueError) as e:
    print(f"| {rate} | {actual:,.0f} | {sent:,} | no summary ({e}) | | | | |")
    sys.exit(0)
got, dr = d["packets"], d["drops"]
# The kernel's own packets on a fresh link (IPv6 router and multicast
# listener solicitations) can make "received" a few above "sent".
loss = max(sent - got, 0) / sent * 100 if sent else 0.0
print(f"| {rate} | {actual:,.0f} | {sent:,} | {got:,} | {dr['kernel']:,} | {dr['interface']:,} | {dr['queue_full']:,} | {loss:.2f}% |")
EOF
done
