//! Rule-based detection: one test per kind, on real captures (the public
//! corpus copied into captures/, or lab captures made by real tools, see
//! captures/lab/README.md), plus the controls that must stay quiet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn cap(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures").join(rel)
}

/// Episode starts of a replay as (kind, src, dst) strings, plus the events.
fn starts(rel: &str) -> (BTreeSet<(String, String, String)>, Vec<Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_netvigil"))
        .args(["replay", "-q", "--workers", "2"])
        .arg(cap(rel))
        .output()
        .unwrap();
    let events: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let s = events
        .iter()
        .filter(|e| e["phase"] == "start")
        .map(|e| {
            let f = |k: &str| e[k].as_str().unwrap_or("*").to_string();
            (f("kind"), f("src_ip"), f("dst_ip"))
        })
        .collect();
    (s, events)
}

fn set(v: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    v.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect()
}

fn expect(rel: &str, want: &[(&str, &str, &str)]) -> Vec<Value> {
    let (got, events) = starts(rel);
    assert_eq!(got, set(want), "{rel}");
    for e in &events {
        assert!(!e["message"].as_str().unwrap_or("").is_empty(), "{rel}: event without a message: {e}");
        // Starts and updates are ranked for triage; ends are not.
        let ranked = e["priority"].as_u64().is_some_and(|p| p <= 100) && e["priority_reasons"].is_array();
        assert_eq!(ranked, e["phase"] != "end", "{rel}: {e}");
    }
    events
}

#[test]
fn land_and_port_zero() {
    expect("lab/land.pcap", &[("land", "10.77.0.2", "10.77.0.2")]);
    // The target's RSTs from port 0 are reactions, not misuse.
    expect("lab/port_zero.pcap", &[("port_zero", "10.77.0.1", "10.77.0.2")]);
}

#[test]
fn ip_header_anomalies() {
    let ev = expect("lab/ipv4_header_anomalies.pcap", &[("ip_header_anomaly", "10.77.0.1", "10.77.0.2")]);
    let reasons = ev.last().unwrap()["evidence"]["reasons"].to_string();
    for r in ["ipv4_reserved_flag", "ttl_zero", "ipv4_bad_options"] {
        assert!(reasons.contains(r), "{reasons}");
    }
    expect(
        "malformed/tcpdump_ipv4_invalid_hdr_length.pcap",
        &[("ip_header_anomaly", "140.211.9.206", "45.33.127.156")],
    );
    expect("malformed/suricata_ip_secopt.pcap", &[("ip_header_anomaly", "30.30.30.30", "20.20.20.20")]);
}

#[test]
fn invalid_sources_but_not_dhcp() {
    expect(
        "lab/invalid_source.pcap",
        &[
            ("invalid_source", "224.0.0.5", "10.77.0.2"),
            ("invalid_source", "127.0.0.1", "10.77.0.2"),
            ("invalid_source", "255.255.255.255", "10.77.0.2"),
        ],
    );
    let (got, _) = starts("floods/suricata_rsmurf6.pcap");
    assert!(got.contains(&("invalid_source".into(), "ff02::1".into(), "ff02::1".into())), "{got:?}");
    let (got, _) = starts("floods/suricata_dhcp-request-flood.pcap");
    assert!(
        got.iter().all(|(k, _, _)| k != "invalid_source"),
        "DHCP DISCOVER from 0.0.0.0 is legal: {got:?}"
    );
}

#[test]
fn fragment_abuse() {
    expect("lab/frag_tiny.pcap", &[("ip_fragment_abuse", "10.77.0.1", "10.77.0.2")]);
    let ev = expect("lab/frag_overlap.pcap", &[("ip_fragment_abuse", "10.77.0.1", "10.77.0.2")]);
    let reasons = ev.last().unwrap()["evidence"]["reasons"].to_string();
    assert!(reasons.contains("overlap") && reasons.contains("oversized"), "{reasons}");
    expect("misuse/lwerdna_teardrop.pcap", &[("ip_fragment_abuse", "10.1.1.1", "129.111.30.27")]);
    expect("misuse/suricata_frag-1.pcap", &[("ip_fragment_abuse", "2001:db8:1::2", "2001:db8:1::1")]);
    let (got, _) = starts("misuse/suricata_frag-16.pcap");
    assert!(got.contains(&("ip_fragment_abuse".into(), "2001:db8:1::2".into(), "2001:db8:1::1".into())));
    let (got, _) = starts("misuse/zeek_fragmented-4.pcap");
    assert!(got.contains(&("ip_fragment_abuse".into(), "128.32.46.142".into(), "10.0.0.1".into())));
    // Three datagrams of five fragments each, none with its final fragment;
    // the benign fragmented ping before them completes.
    let ev = expect("lab/frag_train_incomplete.pcap", &[("ip_fragment_abuse", "10.77.0.1", "10.77.0.2")]);
    let ev = &ev.last().unwrap()["evidence"];
    assert_eq!(ev["reasons"], serde_json::json!(["never_completed"]), "{ev}");
    assert_eq!(ev["packets"], 15, "{ev}");
    // Control: legitimately fragmented big pings.
    expect("misuse/ppa_ipfragments.pcap", &[]);
    expect("lab/icmp_big_echo.pcap", &[]);
}

#[test]
fn non_final_fragments_must_be_multiples_of_eight() {
    // IPv6 fragments with More Fragments set and 13 bytes of data (not a
    // multiple of 8), built by hand: no public capture has one.
    let frame = |id: u32, offset: u16, more: bool, data: usize| {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd];
        let plen = (8 + data) as u16;
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&plen.to_be_bytes());
        f.extend_from_slice(&[44, 64]);
        f.extend_from_slice(&"2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&"2001:db8::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&[17, 0]);
        f.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend(std::iter::repeat_n(0xab, data));
        f
    };
    let frames: Vec<(i64, Vec<u8>, u32)> = (0..4u32)
        .flat_map(|i| {
            let t = 1_700_000_000_000_000 + i64::from(i) * 100_000;
            let (a, b) = (frame(i, 0, true, 13), frame(i, 2, false, 8));
            let (la, lb) = (a.len() as u32, b.len() as u32);
            [(t, a, la), (t + 10, b, lb)]
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6frag.pcap");
    common::write_pcap(&path, &frames);
    let out =
        Command::new(env!("CARGO_BIN_EXE_netvigil")).args(["replay", "-q"]).arg(&path).output().unwrap();
    let evs: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ev =
        evs.iter().find(|e| e["kind"] == "ip_fragment_abuse" && e["phase"] == "start").expect("an episode");
    assert_eq!(ev["src_ip"], "2001:db8::1");
    assert!(ev["evidence"]["reasons"].to_string().contains("non_final_not_multiple_of_8"), "{ev}");
}

#[test]
fn icmp_misuse_and_ipv6_extension_abuse() {
    expect("lab/icmp_redirect.pcap", &[("icmp_misuse", "10.77.0.1", "10.77.0.2")]);
    expect("misuse/suricata_toobig.pcap", &[("icmp_misuse", "2001:db8:2::2", "fe80::6600:6aff:fe5b:8f4a")]);
    expect("lab/ipv6_rh0.pcap", &[("ipv6_ext_header_abuse", "fd77::1", "fd77::2")]);
    expect(
        "misuse/suricata_covert_send6.pcap",
        &[("ipv6_ext_header_abuse", "2001:db8:2:0:8e16:45ff:fee5:5ba2", "2001:db8:1::1")],
    );
}

#[test]
fn arp_spoofing_and_rogue_router_adverts() {
    expect("lab/arp_spoof.pcap", &[("arp_spoof", "10.77.0.1", "10.77.0.2")]);
    // Both ends of the conversation poisoned: each victim named.
    expect(
        "misuse/softvulnsec_arp_short.pcap",
        &[("arp_spoof", "192.168.1.1", "192.168.1.254"), ("arp_spoof", "192.168.1.254", "192.168.1.1")],
    );
    expect("misuse/chrissanders_arppoison.pcapng", &[("arp_spoof", "172.16.0.1", "172.16.0.107")]);
    expect(
        "misuse/suricata_kill_router6.pcap",
        &[("rogue_router_advert", "fe80::6600:6aff:fe5b:8eb3", "ff02::1")],
    );
}

#[test]
fn tunnels_and_wrong_port_protocols() {
    expect("misuse/elastic_dns-tunnel-iodine.pcap", &[("dns_tunnel", "10.0.2.30", "10.0.2.20")]);
    let ev = expect("misuse/dmachard_dnscat2.pcap", &[("dns_tunnel", "192.168.1.17", "192.168.1.210")]);
    assert_eq!(ev[0]["evidence"]["domain"], "biillpi.com");
    expect("misuse/ndpi_icmp-tunnel.pcap", &[("icmp_tunnel", "192.168.154.131", "192.168.154.132")]);
    expect("lab/dns_wrong_port.pcap", &[("protocol_port_mismatch", "10.77.0.1", "10.77.0.2")]);
    // Hex names sent straight to the tunnel server: no registered domain,
    // every name its own "parent"; judged per (client, server).
    let ev = expect("lab/dns_hex_direct.pcap", &[("dns_tunnel", "10.77.0.1", "10.77.0.2")]);
    assert_eq!(ev[0]["evidence"]["reasons"][0], "encoded_names_without_a_shared_domain");
    // A raw-mode tunnel on UDP 53 is a tunnel, not only a wrong protocol.
    let ev = expect(
        "lab/dns_raw_udp53.pcap",
        &[
            ("dns_tunnel", "10.77.0.1", "10.77.0.2"),
            ("protocol_port_mismatch", "10.77.0.1", "10.77.0.2"),
            ("protocol_port_mismatch", "10.77.0.2", "10.77.0.1"),
        ],
    );
    let tunnel = ev.iter().find(|e| e["kind"] == "dns_tunnel").unwrap();
    assert_eq!(tunnel["evidence"]["share_not_dns"], 1.0);
}

#[test]
fn port_scans() {
    for (f, scanner, target) in [
        ("scans/evilfingers_TCP_SYN_SCAN.pcap", "192.168.1.10", "192.168.1.25"),
        ("scans/evilfingers_UDP_SCAN.pcap", "192.168.1.10", "192.168.1.25"),
        ("scans/chrissanders_synscan.pcapng", "172.16.0.8", "64.13.134.52"),
        ("scans/ppa_portscan.pcap", "10.100.25.14", "10.100.18.12"),
        ("lab/nmap_syn_scan.pcap", "10.77.0.1", "10.77.0.2"),
    ] {
        expect(f, &[("port_scan", scanner, target)]);
    }
    // Stealth scans are both a scan and invalid flags.
    for f in ["scans/evilfingers_FIN_SCAN.pcap", "scans/evilfingers_XMAS_TREE_SCAN.pcap"] {
        expect(
            f,
            &[
                ("port_scan", "192.168.1.10", "192.168.1.25"),
                ("tcp_invalid_flags", "192.168.1.10", "192.168.1.25"),
            ],
        );
    }
    expect(
        "lab/nmap_xmas_scan.pcap",
        &[("port_scan", "10.77.0.1", "10.77.0.2"), ("tcp_invalid_flags", "10.77.0.1", "10.77.0.2")],
    );
    expect(
        "scans/esnet_masscan_tcp_0_1000_20190821.pcap",
        &[("port_scan", "172.31.15.102", "198.124.152.15"), ("port_zero", "172.31.15.102", "198.124.152.15")],
    );
    expect(
        "scans/pcaphunt_ps-tcp_syn.pcap",
        &[
            ("port_scan", "10.0.0.140", "10.0.0.1"),
            ("port_scan", "10.0.0.140", "10.0.0.2"),
            ("port_scan", "10.0.0.140", "10.0.0.254"),
        ],
    );
    // A single-port nmap -A is not a port scan.
    expect("scans/esnet_nmap_80_all.pcap", &[]);
    // ACK (and window) and Maimon scans: bare ACK or FIN+ACK probes answered
    // by RST are probes, not connections.
    for f in ["lab/nmap_ack_scan.pcap", "lab/nmap_maimon_scan.pcap"] {
        let evs = expect(f, &[("port_scan", "10.77.0.1", "10.77.0.2")]);
        let ev = &evs[0]["evidence"];
        assert_eq!(ev["probe_types"]["ack"], 100, "{f}: {ev}");
        assert_eq!(ev["probes"], 100, "{f}");
    }
    // nmap -sO: one packet per IP protocol number.
    let evs = expect("lab/nmap_ipproto_scan.pcap", &[("protocol_scan", "10.77.0.1", "10.77.0.2")]);
    assert!(evs[0]["evidence"]["distinct_protocols"].as_u64().unwrap() >= 90, "{}", evs[0]);
}

#[test]
fn forged_dns_answers_racing_the_server() {
    // Five queries answered first by a forger (10.77.0.66), then by the
    // server; a retransmitted query answered twice alike is not spoofing.
    let evs = expect("lab/dns_spoof.pcap", &[("dns_spoofing", "10.77.0.2", "10.77.0.1")]);
    let start = &evs.iter().find(|e| e["phase"] == "start").unwrap()["evidence"];
    assert_eq!(start["first_answer"]["first_ipv4"], "10.77.0.66", "{start}");
    assert_eq!(start["second_answer"]["first_ipv4"], "10.77.0.80", "{start}");
    assert_eq!(start["query_id"], 0x34a7);
    assert_eq!(start["domain"], "example.lab");
    let end = &evs.iter().find(|e| e["phase"] == "end").unwrap()["evidence"];
    assert_eq!(end["episode_totals"]["conflicting_answers"], 5, "{end}");
}

#[test]
fn one_mac_rotating_its_source_address() {
    // 20 s of pings from one address, then 400 UDP datagrams from 400
    // addresses in 4 s, all from MAC 02:77:00:00:00:01.
    let evs = expect("lab/mac_many_ips.pcap", &[("one_mac_many_ips", "*", "*")]);
    let end = &evs.iter().find(|e| e["phase"] == "end").unwrap()["evidence"];
    assert_eq!(end["mac"], "02:77:00:00:00:01", "{end}");
    let n = end["distinct_sources"].as_u64().unwrap();
    assert!((390..=410).contains(&n), "{end}");
    assert_eq!(end["usual_peak"], 1.0, "{end}");
}

#[test]
fn password_guessing() {
    let ev = expect("misuse/ppa_ftp-crack.pcap", &[("brute_force", "10.234.125.254", "10.121.70.151")]);
    assert_eq!(ev[0]["evidence"]["service"], 21);
    assert!(ev[0]["evidence"]["attempts"].as_u64().unwrap() >= 20);
    // Password spraying against a stand-in KDC: 60 AS-REQs for 60 accounts
    // in 30 s after a user's ordinary logon (2 AS-REQs, TGS-REQs every 3 s).
    let ev = expect("lab/kerberos_spray.pcap", &[("brute_force", "10.77.0.1", "10.77.0.2")]);
    let end = &ev.iter().find(|e| e["phase"] == "end").unwrap()["evidence"];
    assert_eq!(end["service"], 88, "{end}");
    assert_eq!(end["episode_totals"]["attempts"], 62, "{end}");
}

#[test]
fn host_scans_and_sweeps() {
    let ev = expect("scans/pcaphunt_hs-arpScan.pcap", &[("host_scan", "10.0.0.128", "*")]);
    assert_eq!(ev[0]["evidence"]["method"], "ARP who-has");
    let ev = expect("scans/pcaphunt_hs-icmpScan.pcap", &[("host_scan", "10.0.0.128", "*")]);
    assert_eq!(ev[0]["evidence"]["method"], "ICMP echo");
    let ev = expect("scans/pcaphunt_hs-udpScan.pcap", &[("host_scan", "246.237.45.150", "*")]);
    assert_eq!(ev[0]["evidence"]["method"], "UDP port 40125");
    expect("lab/arp_sweep.pcap", &[("host_scan", "10.77.0.1", "*")]);
}

#[test]
fn benign_traffic_raises_no_rule_episode() {
    for f in std::iter::once("lab/benign_curl.pcap").chain(common::BENIGN) {
        expect(f, &[]);
    }
}
