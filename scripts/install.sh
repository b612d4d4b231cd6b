#!/usr/bin/env bash
# Installs netvigil as a systemd service (run as root, or with DESTDIR=dir to stage).
#   scripts/install.sh            build, install, reload systemd
#   DESTDIR=/tmp/stage scripts/install.sh   install into a staging tree only
# Files: /usr/local/bin/netvigil, /etc/systemd/system/netvigil.service,
# /etc/netvigil/netvigil.toml and /etc/default/netvigil (kept if present),
# /etc/logrotate.d/netvigil, /usr/local/share/netvigil/{grafana,prometheus}/,
# /usr/local/share/doc/netvigil/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
D="${DESTDIR:-}"
scripts/setup.sh build
cargo build --release --locked --quiet
install -Dm0755 target/release/netvigil "$D/usr/local/bin/netvigil"
install -Dm0644 systemd/netvigil.service "$D/etc/systemd/system/netvigil.service"
[ -e "$D/etc/netvigil/netvigil.toml" ] || install -Dm0644 systemd/netvigil.toml "$D/etc/netvigil/netvigil.toml"
if [ ! -e "$D/etc/default/netvigil" ]; then
  iface=$(ip -o link show 2>/dev/null | awk -F': ' '$2 != "lo" {print $2; exit}' | cut -d@ -f1)
  install -d "$D/etc/default"
  printf '# Interface netvigil captures on (a span port or tap).\nNETVIGIL_INTERFACE=%s\n' "${iface:-eth0}" > "$D/etc/default/netvigil"
fi
install -Dm0644 systemd/logrotate.netvigil "$D/etc/logrotate.d/netvigil"
install -Dm0644 systemd/grafana/netvigil-dashboard.json "$D/usr/local/share/netvigil/grafana/netvigil-dashboard.json"
install -Dm0644 systemd/prometheus/netvigil-rules.yml "$D/usr/local/share/netvigil/prometheus/netvigil-rules.yml"
install -Dm0644 README.md "$D/usr/local/share/doc/netvigil/README.md"
if [ -z "$D" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "installed; edit /etc/default/netvigil, then: systemctl enable --now netvigil"
else
  echo "installed under ${D:-/} (systemd not running here: start netvigil by hand or on a systemd host)"
fi
