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
  dns_raw_udp53"
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
if want land port_zero; then need+=(hping3:hping3); fi
if want nmap_syn_scan nmap_xmas_scan arp_sweep nmap_ack_scan nmap_maimon_scan \
        nmap_ipproto_scan; then need+=(nmap:nmap); fi
if want icmp_big_echo; then need+=(ping:iputils-ping); fi
if want dns_wrong_port; then need+=(nc:netcat-openbsd); fi
if want benign_curl; then need+=(curl:curl); fi
missing=()
for pair in "${need[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if want ipv4_header_anomalies invalid_source frag_tiny frag_overlap \
        icmp_redirect ipv6_rh0 dns_wrong_port arp_spoof; then
  "$PY" -c 'import scapy.all' >/dev/null 2>&1 || missing+=(python3-scapy)
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
import os, sys, time
import logging
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import (ARP, BOOTP, DHCP, DNS, DNSQR, ICMP, IP, IPv6, Raw, TCP,
                       UDP, Ether, ICMPv6EchoRequest, IPv6ExtHdrDestOpt,
                       IPv6ExtHdrRouting, checksum, conf, mac2str, sendp)
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
export IFA MAC_A MAC_B IP_A IP_B IP6_A IP6_B
scapy() { timeout 60 ip netns exec "$NSA" "$PY" "$TMP/labsend.py" "$1"; }

# ---------------------------------------------------------------- capture
mkdir -p "$OUT"
CAP_PID=
cap_start() { # name
  local f="$OUT/$1.pcap" log="$TMP/$1.tcpdump.log"
  rm -f "$f"
  # -c bounds the file; the pid is tcpdump itself (ip netns exec execs it)
  ip netns exec "$NSB" tcpdump -i "$IFB" -s 0 -n -U -Z root -c 2000 -w "$f" 2>"$log" &
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
recipe() { CUR=$1; echo "make-lab-captures: $1" >&2; cap_start "$1"; }

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
