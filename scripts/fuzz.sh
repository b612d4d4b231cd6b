#!/usr/bin/env bash
# Bounded fuzzing of the decode and savefile paths with cargo-fuzz (libFuzzer).
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
# Seeds come from captures/ (whole files for `savefile`, frames for `decode`).
# Crashes land in fuzz/artifacts/<target>/; keep them as regression tests.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
scripts/setup.sh build
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz needs unstable sanitizer flags; this toolchain is stable.
export RUSTC_BOOTSTRAP=1
mkdir -p fuzz/corpus/savefile fuzz/corpus/decode
find captures -name '*.pcap*' -size -200k -exec cp -n {} fuzz/corpus/savefile/ \;
# Frames for the decoder: first bytes of each record of a few captures, prefixed by a link selector.
python3 - <<'PY'
import os, struct, glob
out = "fuzz/corpus/decode"
for f in sorted(glob.glob("captures/**/*.pcap", recursive=True))[:40]:
    b = open(f, "rb").read()
    if len(b) < 24 or b[:4] not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        continue
    link = struct.unpack("<I", b[20:24])[0]
    sel = {0:0, 1:1, 9:2, 12:3, 14:4, 50:5, 101:6, 108:7, 113:8, 228:9, 229:10, 276:11}.get(link)
    if sel is None:
        continue
    off, n = 24, 0
    while off + 16 <= len(b) and n < 20:
        caplen = struct.unpack("<I", b[off+8:off+12])[0]
        frame = b[off+16:off+16+caplen]
        open(f"{out}/{os.path.basename(f)}-{n}", "wb").write(bytes([sel]) + frame)
        off += 16 + caplen
        n += 1
PY
status=0
for t in decode savefile; do
  echo "fuzzing $t for ${secs}s"
  (cd fuzz && cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20) \
    || status=1
done
exit $status
