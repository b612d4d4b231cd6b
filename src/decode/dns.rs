//! Just enough DNS to judge a query name: length, labels, entropy, type,
//! and hashes of the name and of its parent domain. No allocation; every
//! read is bounds-checked; compression pointers end the name.

use std::hash::{BuildHasher, Hasher};

/// `DnsInfo::flags` bit: the message parsed as DNS.
pub const DNS_VALID: u8 = 0x1;
/// `DnsInfo::flags` bit: it is a response (QR set).
pub const DNS_RESPONSE: u8 = 0x2;

/// What the first question of a DNS message says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsInfo {
    /// Bits: [`DNS_VALID`], [`DNS_RESPONSE`].
    pub flags: u8,
    /// Response code (low 4 bits of the flags word).
    pub rcode: u8,
    /// Question type (1 A, 10 NULL, 16 TXT, 28 AAAA…).
    pub qtype: u16,
    /// Name length in presentation form, without the final dot (capped at 255).
    pub name_len: u8,
    /// Number of labels.
    pub labels: u8,
    /// Longest label.
    pub longest_label: u8,
    /// Shannon entropy of the name's characters, in tenths of a bit per
    /// character; measured only when the longest label is long enough to
    /// be judged (see [`DnsInfo::looks_encoded`]), 0 otherwise.
    pub entropy_x10: u8,
    /// Hash of the whole name, case-folded.
    pub name_hash: u32,
    /// Hash of the parent domain (the last two labels), case-folded.
    pub parent_hash: u32,
    /// Responses: a digest of what the answer says (response code and each
    /// answer record's type and data, TTLs left out, record order ignored),
    /// so two answers to one query can be told apart; 0 when the answer
    /// section could not be read whole.
    pub answer_hash: u32,
    /// Responses: the first IPv4 address answered (A record), or zeros.
    pub answer_v4: [u8; 4],
}

/// A label this long and this random is encoded data, not a hostname.
const ENCODED_LABEL: u8 = 24;
/// 3.3 bits per character: above English-like names (2.5–3.2), at or below
/// hex (4.0) and base32 (≈4.5–5) encodings.
const ENCODED_ENTROPY_X10: u8 = 33;

impl DnsInfo {
    /// True when the payload parsed as a DNS message.
    pub fn is_valid(&self) -> bool {
        self.flags & DNS_VALID != 0
    }

    /// True when the query name's longest label looks like encoded data.
    pub fn looks_encoded(&self) -> bool {
        self.longest_label >= ENCODED_LABEL && self.entropy_x10 >= ENCODED_ENTROPY_X10
    }
}

/// Parses a DNS message's header and first question; `None` if it is not DNS.
pub fn parse(msg: &[u8]) -> Option<DnsInfo> {
    let h = msg.get(..12)?;
    let flags = u16::from_be_bytes([h[2], h[3]]);
    let opcode = (flags >> 11) & 0xf;
    let qdcount = u16::from_be_bytes([h[4], h[5]]);
    // Real resolvers send exactly one question; opcodes above 6 are unassigned.
    if opcode > 6 || qdcount != 1 {
        return None;
    }
    let mut pos = 12;
    let mut name_len: usize = 0;
    let mut labels: u8 = 0;
    let mut longest: u8 = 0;
    // Rolling hashes: of the whole name, and of the name from each label on
    // (kept for the last two labels to form the parent).
    let mut starts = [0usize; 2];
    loop {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            pos += 1;
            break;
        }
        if len & 0xc0 != 0 || len > 63 {
            return None; // compression or extended label types in a question: not ours
        }
        msg.get(pos + 1..pos + 1 + len)?;
        starts = [starts[1], pos];
        labels = labels.saturating_add(1);
        longest = longest.max(len as u8);
        name_len += len + usize::from(name_len > 0);
        if name_len > 255 {
            return None;
        }
        pos += 1 + len;
    }
    let q = msg.get(pos..pos + 4)?;
    let qtype = u16::from_be_bytes([q[0], q[1]]);
    let qclass = u16::from_be_bytes([q[2], q[3]]) & 0x7fff;
    if !matches!(qclass, 1 | 3 | 4 | 254 | 255) {
        return None;
    }
    let name_end = pos;
    // Only a name with a long label can look encoded: the others (nearly
    // every query) skip the histogram and its logarithms.
    let entropy = if longest >= ENCODED_LABEL { entropy(msg.get(12..name_end).unwrap_or(&[])) } else { 0.0 };
    let is_response = flags & 0x8000 != 0;
    let (answer_hash, answer_v4) = if is_response {
        let ancount = u16::from_be_bytes([h[6], h[7]]);
        answers(msg, pos + 4, ancount, (flags & 0xf) as u8).unwrap_or((0, [0; 4]))
    } else {
        (0, [0; 4])
    };
    let parent_from = if labels >= 2 { starts[0] } else { 12 };
    Some(DnsInfo {
        flags: DNS_VALID | if flags & 0x8000 != 0 { DNS_RESPONSE } else { 0 },
        rcode: (flags & 0xf) as u8,
        qtype,
        name_len: name_len.min(255) as u8,
        labels,
        longest_label: longest,
        entropy_x10: (entropy * 10.0).round().clamp(0.0, 255.0) as u8,
        name_hash: hash_labels(msg.get(12..name_end).unwrap_or(&[])),
        parent_hash: hash_labels(msg.get(parent_from..name_end).unwrap_or(&[])),
        answer_hash,
        answer_v4,
    })
}

/// Answer records read for the digest; a real answer to one question holds
/// a CNAME chain and a few addresses.
const MAX_ANSWERS: u16 = 16;

/// Digest and first IPv4 address of the answer section starting at `pos`;
/// `None` when a record runs past the message (a cut or forged message).
fn answers(msg: &[u8], mut pos: usize, ancount: u16, rcode: u8) -> Option<(u32, [u8; 4])> {
    let mut sum: u32 = u32::from(rcode).wrapping_mul(0x9e37_79b9) | 1;
    let mut v4 = [0u8; 4];
    for _ in 0..ancount.min(MAX_ANSWERS) {
        // Owner name: labels, ended by a zero byte or a compression pointer.
        loop {
            let len = *msg.get(pos)?;
            if len & 0xc0 == 0xc0 {
                pos += 2;
                break;
            }
            pos += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        let fixed = msg.get(pos..pos + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let rdata = msg.get(pos + 10..pos + 10 + rdlen)?;
        if rtype == 1 && rdlen == 4 && v4 == [0; 4] {
            v4.copy_from_slice(rdata);
        }
        let mut h = foldhash::fast::FixedState::with_seed(0x616e_7377).build_hasher();
        h.write_u16(rtype);
        h.write(rdata);
        // A sum ignores order: resolvers rotate address records between answers.
        sum = sum.wrapping_add(h.finish() as u32);
        pos += 10 + rdlen;
    }
    Some((sum, v4))
}

/// Shannon entropy, in bits per character, of the characters of
/// wire-format labels (length bytes skipped, case folded).
fn entropy(mut wire: &[u8]) -> f32 {
    let mut hist = [0u16; 64];
    let mut total: u32 = 0;
    while let Some((&len, rest)) = wire.split_first() {
        let len = usize::from(len).min(rest.len());
        for &c in &rest[..len] {
            hist[(c.to_ascii_lowercase() & 0x3f) as usize] += 1;
            total += 1;
        }
        wire = &rest[len..];
    }
    if total == 0 {
        return 0.0;
    }
    let n = total as f32;
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f32::from(c) / n;
            -p * p.log2()
        })
        .sum::<f32>()
}

/// Case-insensitive hash of wire-format labels.
fn hash_labels(wire: &[u8]) -> u32 {
    let mut h = foldhash::fast::FixedState::with_seed(0x646e_7321).build_hasher();
    for &b in wire {
        h.write_u8(b.to_ascii_lowercase());
    }
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    #[test]
    fn parses_a_query() {
        let d = parse(&query("www.example.com", 1)).unwrap();
        assert!(d.is_valid());
        assert_eq!((d.qtype, d.name_len, d.labels, d.longest_label), (1, 15, 3, 7));
        let e = parse(&query("mail.Example.COM", 1)).unwrap();
        assert_eq!(d.parent_hash, e.parent_hash, "parent is case-insensitive");
        assert_ne!(d.name_hash, e.name_hash);
        assert_eq!(d.entropy_x10, 0, "no label long enough to judge");
        assert!(entropy(&query("www.example.com", 1)[12..29]) > 2.0);
    }

    #[test]
    fn tunnel_names_look_different() {
        let t =
            parse(&query("a3f9c0e1b7d24c8e9f01ab23cd45ef67890a1b2c3d4e5f60718293a4b5c6.t.example.org", 10))
                .unwrap();
        assert_eq!(t.qtype, 10);
        assert!(t.longest_label >= 60);
        assert!(t.entropy_x10 >= 38, "{}", t.entropy_x10);
    }

    fn answer(id: u16, addrs: &[[u8; 4]], ttl: u32) -> Vec<u8> {
        let mut m = query("www.example.lab", 1);
        m[0..2].copy_from_slice(&id.to_be_bytes());
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = addrs.len() as u8;
        for a in addrs {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&[0, 4]);
            m.extend_from_slice(a);
        }
        m
    }

    #[test]
    fn answers_are_digested_without_ttl_or_order() {
        let a = parse(&answer(7, &[[10, 0, 0, 1], [10, 0, 0, 2]], 300)).unwrap();
        let b = parse(&answer(7, &[[10, 0, 0, 2], [10, 0, 0, 1]], 299)).unwrap();
        let c = parse(&answer(7, &[[10, 0, 0, 66]], 300)).unwrap();
        assert_eq!(a.answer_v4, [10, 0, 0, 1]);
        assert_eq!(a.answer_hash, b.answer_hash, "TTL and order do not matter");
        assert_ne!(a.answer_hash, c.answer_hash);
        assert_ne!(a.answer_hash, 0);
        let mut cut = answer(7, &[[10, 0, 0, 1]], 300);
        cut.truncate(cut.len() - 2);
        assert_eq!(parse(&cut).unwrap().answer_hash, 0, "a cut answer has no digest");
        assert_eq!(parse(&query("www.example.lab", 1)).unwrap().answer_hash, 0, "queries have none");
    }

    #[test]
    fn rejects_non_dns() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_none());
        assert!(parse(&[0; 5]).is_none());
        let mut q = query("example.com", 1);
        q[5] = 2; // two questions
        assert!(parse(&q).is_none());
        let mut q = query("example.com", 1);
        q[12] = 0xc0; // pointer in a question
        assert!(parse(&q).is_none());
    }
}
