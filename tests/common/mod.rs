//! Helpers shared by the integration tests: reading and writing savefiles.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// The seven benign captures of the corpus (no episode of any kind expected).
pub const BENIGN: [&str; 7] = [
    "benign/chrissanders_http_espn.pcapng",
    "benign/ndpi_1kxun.pcap",
    "benign/nfpuzzle_evidence03.pcap",
    "benign/suricata_pgsql-5000-query-results.pcap",
    "benign/suricata_smb2-async-read.pcap",
    "benign/zeek_smb3_multichannel.pcap",
    "benign/zeek_ssh.pcap",
];

/// A bundled capture by its path under `captures/`.
pub fn cap(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures").join(rel)
}

/// Every frame of a savefile as (timestamp in µs, bytes, wire length).
pub fn read_pcap(path: &Path) -> Vec<(i64, Vec<u8>, u32)> {
    let mut c = pcap::Capture::from_file(path).unwrap();
    let mut v = Vec::new();
    while let Ok(p) = c.next_packet() {
        v.push((p.header.ts.tv_sec * 1_000_000 + p.header.ts.tv_usec, p.data.to_vec(), p.header.len));
    }
    v
}

/// Writes frames (timestamp in µs, bytes, wire length) as an Ethernet pcap.
pub fn write_pcap(path: &Path, frames: &[(i64, Vec<u8>, u32)]) {
    let dead = pcap::Capture::dead_with_precision(pcap::Linktype::ETHERNET, pcap::Precision::Micro).unwrap();
    let mut sf = dead.savefile(path).unwrap();
    for (us, data, len) in frames {
        let h = pcap::PacketHeader {
            ts: libc::timeval { tv_sec: us / 1_000_000, tv_usec: us % 1_000_000 },
            caplen: data.len() as u32,
            len: *len,
        };
        sf.write(&pcap::Packet::new(&h, data));
    }
    sf.flush().unwrap();
}

/// Every file under `dir` (recursively) whose name ends in one of `exts`, sorted.
pub fn files_under(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().and_then(|x| x.to_str()).is_some_and(|x| exts.contains(&x)) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
