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

EVD="$OUT/evidence"
once() { # name command... — one timed run, appended to $RAW as "name wall-s rss-KB"
  local name=$1; shift
  rm -rf "$EVD"; sync
  /usr/bin/time -f "$name %e %M" -a -o "$RAW" "$@" > /dev/null 2> "$OUT/$name.err" || true
  rm -rf "$EVD"
}

best() { # the best (lowest wall) run of each name in $RAW, first-seen order
  awk '!($1 in w) { order[++k] = $1 } !($1 in w) || $2 < w[$1] { w[$1] = $2; m[$1] = $3 }
       END { for (i = 1; i <= k; i++) print order[i], w[order[i]], m[order[i]] }' "$RAW"
}

# Rounds, not runs in a row: on a shared VM the machine's speed drifts over
# minutes, and best-of-N runs of one tool taken together would compare one
# tool's fast minute with another's slow one. Each round runs every tool
# once; a tool's figure is its best round.
run_all() { # file
  local f=$1 r
  RAW=$(mktemp); : > "$RAW"
  for r in $(seq "${RUNS:-2}"); do
    once tcpdump tcpdump -r "$f" -w /dev/null
    once minimal_loop target/release/examples/minimal_loop "$f"
    once minimal_loop_buffered target/release/examples/minimal_loop "$f" buffered
    once netvigil_w1 target/release/netvigil replay -q --workers 1 "$f"
    once netvigil_w1_evidence target/release/netvigil replay -q --workers 1 --evidence-dir "$EVD" "$f"
    once netvigil_w2 target/release/netvigil replay -q --workers 2 "$f"
    command -v softflowd >/dev/null && once softflowd softflowd -r "$f" -n 127.0.0.1:9995 -d
    if [ "$r" = 1 ]; then
      command -v argus >/dev/null && once argus argus -r "$f" -w /dev/null
      command -v tshark >/dev/null && once tshark timeout "$TSHARK_TIMEOUT" tshark -r "$f" -q -z conv,ip
    fi
  done
  best; rm -f "$RAW"
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
run_all "$CAP" > "$OUT/mix.results"
report "$OUT/mix.results" "$PACKETS" "Mixed traffic"
RAW=$(mktemp); : > "$RAW"
for _ in $(seq "${RUNS:-2}"); do
  once netvigil_w1 target/release/netvigil replay -q --workers 1 "$SYN"
  once netvigil_w1_evidence target/release/netvigil replay -q --workers 1 --evidence-dir "$EVD" "$SYN"
  once netvigil_w2 target/release/netvigil replay -q --workers 2 "$SYN"
  once minimal_loop target/release/examples/minimal_loop "$SYN"
  once minimal_loop_buffered target/release/examples/minimal_loop "$SYN" buffered
done
best > "$OUT/syn.results"; rm -f "$RAW"
report "$OUT/syn.results" "$FLOOD" "Spoofed random-source SYN flood (memory bound)"
# The target: netvigil within 1.5x of the minimal loop, with evidence pcaps off and on.
echo "### netvigil ÷ minimal loop, best rounds"
echo
for res in mix syn; do
  awk -v res="$res" '{ w[$1] = $2 } END {
      printf "- %s: one worker %.2fx, with evidence pcaps %.2fx\n", res,
        w["netvigil_w1"] / w["minimal_loop"], w["netvigil_w1_evidence"] / w["minimal_loop"] }' "$OUT/$res.results"
done
echo

# The best rounds above still pick each tool's luckiest run. The ratio is
# also measured round by round: minimal loop, buffered loop, netvigil with
# one worker, and with evidence pcaps, each command run twice and the second
# run timed, so all four find the same page cache and the same freshly
# released memory; the median of the per-round ratios is the steadier figure.
TRIPLES=${TRIPLES:-6}
: > "$OUT/ratio.results"
for _ in $(seq "$TRIPLES"); do
  for name in minimal_loop minimal_loop_buffered netvigil_w1 netvigil_w1_evidence; do
    case $name in
      minimal_loop) cmd=(target/release/examples/minimal_loop "$CAP") ;;
      minimal_loop_buffered) cmd=(target/release/examples/minimal_loop "$CAP" buffered) ;;
      netvigil_w1) cmd=(target/release/netvigil replay -q --workers 1 "$CAP") ;;
      netvigil_w1_evidence) cmd=(target/release/netvigil replay -q --workers 1 --evidence-dir "$EVD" "$CAP") ;;
    esac
    rm -rf "$EVD"; "${cmd[@]}" > /dev/null 2>&1 || true
    # Evidence files go to disk: their write-back must not land in the next run.
    rm -rf "$EVD"; sync
    /usr/bin/time -f "$name %e" -a -o "$OUT/ratio.results" "${cmd[@]}" > /dev/null 2>&1 || true
    rm -rf "$EVD"; sync
  done
done
echo "### netvigil (1 worker) ÷ minimal loop, $TRIPLES alternated rounds"
echo
awk '
  { t[$1, ++n[$1]] = $2 }
  function median(a, k,   i, j, x) { for (i = 2; i <= k; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x } return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
  END {
    k = n["netvigil_w1"]
    for (v = 1; v <= 2; v++) {
      nv = (v == 1) ? "netvigil_w1" : "netvigil_w1_evidence"
      for (b = 1; b <= 2; b++) {
        base = (b == 1) ? "minimal_loop" : "minimal_loop_buffered"
        lo = 1e9; hi = 0
        for (i = 1; i <= k; i++) { r[i] = t[nv, i] / t[base, i]; if (r[i] < lo) lo = r[i]; if (r[i] > hi) hi = r[i] }
        printf "- %s against %s: median %.2fx (range %.2f-%.2fx)\n", nv, base, median(r, k), lo, hi
      }
    }
  }' "$OUT/ratio.results"
echo
