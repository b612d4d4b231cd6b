#!/usr/bin/env bash
# End-to-end replay benchmark: netvigil against the tools a user would
# otherwise reach for, on the same large capture, in one run.
#
#   benches/replay.sh            # 5.4 M-packet mixed capture + 10 M-packet spoofed SYN flood
#   PACKETS=1000000 benches/replay.sh
#
# The captures are generated reproducibly (fixed seed) by benches/gencap.rs
# into target/bench/. Results: a Markdown table on stdout (packets/s, ratio
# to netvigil with one worker, peak RSS). Tools that are missing are
# installed with apt-get when possible, otherwise reported as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKETS=${PACKETS:-5400000}
FLOOD=${FLOOD:-10000000}
TSHARK_TIMEOUT=${TSHARK_TIMEOUT:-900}
OUT=target/bench
mkdir -p "$OUT"
scripts/setup.sh build
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
for pkg in tcpdump tshark argus-server softflowd time; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null 2>&1 \
    || echo "note: could not install $pkg" >&2
done
cargo build --release --locked --quiet --examples
cargo build --release --locked --quiet
CAP="$OUT/mix-$PACKETS.pcap"
SYN="$OUT/synflood-$FLOOD.pcap"
[ -s "$CAP" ] || target/release/examples/gencap "$CAP" "$PACKETS" 1000000 mix
[ -s "$SYN" ] || target/release/examples/gencap "$SYN" "$FLOOD" 1000000 synflood
# Warm the page cache so every tool reads from memory.
cat "$CAP" > /dev/null; cat "$SYN" > /dev/null

measure() { # name, file, command... — best of $RUNS runs (wall s, peak RSS KB)
  local name=$1 file=$2; shift 2
  local best="" i
  for i in $(seq "${RUNS:-2}"); do
    /usr/bin/time -f "%e %M" -o "$OUT/$name.time" "$@" > /dev/null 2> "$OUT/$name.err" || true
    local t; t=$(tail -1 "$OUT/$name.time")
    if [ -z "$best" ] || awk -v a="${t%% *}" -v b="${best%% *}" 'BEGIN{exit !(a < b)}'; then best=$t; fi
  done
  echo "$name $best"
}

run_all() { # file packets
  local f=$1 n=$2
  measure tcpdump "$f" tcpdump -r "$f" -w /dev/null
  measure minimal_loop "$f" target/release/examples/minimal_loop "$f"
  measure minimal_loop_buffered "$f" target/release/examples/minimal_loop "$f" buffered
  measure netvigil_w1 "$f" target/release/netvigil replay -q --workers 1 "$f"
  measure netvigil_w2 "$f" target/release/netvigil replay -q --workers 2 "$f"
  command -v softflowd >/dev/null && measure softflowd "$f" softflowd -r "$f" -n 127.0.0.1:9995 -d
  command -v argus >/dev/null && RUNS=1 measure argus "$f" argus -r "$f" -w /dev/null
  command -v tshark >/dev/null && RUNS=1 measure tshark "$f" timeout "$TSHARK_TIMEOUT" tshark -r "$f" -q -z conv,ip
}

report() { # results-file packets title
  local res=$1 n=$2 title=$3
  echo "### $title"
  echo
  echo "| tool | wall s | packets/s | netvigil speed-up | peak RSS MB |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  local base
  base=$(awk '$1=="netvigil_w1"{print $2}' "$res")
  awk -v n="$n" -v base="$base" '{
      pps = ($2 > 0) ? n / $2 : 0;
      ratio = (base > 0) ? $2 / base : 0;
      printf "| %s | %.2f | %.2f M | %.2fx | %.0f |\n", $1, $2, pps / 1e6, ratio, $3 / 1024 }' "$res"
  echo
}

echo "## netvigil replay benchmark — $(date -u +%Y-%m-%d)"
echo
echo "Machine: $(nproc) vCPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -r); libpcap $(tcpdump --version 2>&1 | grep -o 'libpcap version [0-9.]*' | cut -d' ' -f3)."
echo "Capture: $PACKETS packets (benches/gencap.rs mix), $(du -m "$CAP" | cut -f1) MB; flood: $FLOOD spoofed SYNs."
echo "(\"netvigil speed-up\" = the tool's wall time ÷ netvigil's with one worker: above 1, netvigil is faster.)"
echo
run_all "$CAP" "$PACKETS" > "$OUT/mix.results"
report "$OUT/mix.results" "$PACKETS" "Mixed traffic"
measure netvigil_w1 "$SYN" target/release/netvigil replay -q --workers 1 "$SYN" > "$OUT/syn.results"
measure netvigil_w2 "$SYN" target/release/netvigil replay -q --workers 2 "$SYN" >> "$OUT/syn.results"
measure minimal_loop "$SYN" target/release/examples/minimal_loop "$SYN" >> "$OUT/syn.results"
measure minimal_loop_buffered "$SYN" target/release/examples/minimal_loop "$SYN" buffered >> "$OUT/syn.results"
report "$OUT/syn.results" "$FLOOD" "Spoofed random-source SYN flood (memory bound)"

# The 1.5x target is a ratio, and on a shared VM the machine's speed drifts
# during a run: the best-of-N figures above are taken minutes apart, so they
# can disagree by a third. The ratio is therefore measured in alternated
# triples (minimal loop, buffered loop, netvigil one worker), each command
# run twice and the second run timed, so all three find the same page cache
# and the same freshly released memory.
TRIPLES=${TRIPLES:-6}
: > "$OUT/ratio.results"
for _ in $(seq "$TRIPLES"); do
  for name in minimal_loop minimal_loop_buffered netvigil_w1; do
    case $name in
      minimal_loop) cmd=(target/release/examples/minimal_loop "$CAP") ;;
      minimal_loop_buffered) cmd=(target/release/examples/minimal_loop "$CAP" buffered) ;;
      netvigil_w1) cmd=(target/release/netvigil replay -q --workers 1 "$CAP") ;;
    esac
    "${cmd[@]}" > /dev/null 2>&1 || true
    /usr/bin/time -f "$name %e" -a -o "$OUT/ratio.results" "${cmd[@]}" > /dev/null 2>&1 || true
  done
done
echo "### netvigil (1 worker) ÷ minimal loop, $TRIPLES alternated triples"
echo
awk '
  { t[$1, ++n[$1]] = $2 }
  function median(a, k,   i, j, x) { for (i = 2; i <= k; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x } return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
  END {
    k = n["netvigil_w1"]
    for (b = 1; b <= 2; b++) {
      base = (b == 1) ? "minimal_loop" : "minimal_loop_buffered"
      lo = 1e9; hi = 0
      for (i = 1; i <= k; i++) { r[i] = t["netvigil_w1", i] / t[base, i]; if (r[i] < lo) lo = r[i]; if (r[i] > hi) hi = r[i] }
      printf "- against %s: median %.2fx (range %.2f-%.2fx)\n", base, median(r, k), lo, hi
    }
  }' "$OUT/ratio.results"
echo
