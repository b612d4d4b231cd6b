//! Address-binding family: ARP spoofing and rogue IPv6 router advertisements.
//!
//! The shard half ([`L2Shard`]) passes ARP packets and router
//! advertisements through as compact observations; the host half
//! ([`L2Watch`]) keeps the IP→MAC bindings (bounded) and flags replies that
//! rebind a live address, or one MAC claiming several addresses without
//! being asked.

use hashbrown::HashMap;
use serde_json::{Map, json};

use super::DetectConfig;
use super::anomaly::{Anomaly, AnomalyKind, Severity};
use super::episode::{EpisodeKey, EpisodePolicy, Episodes};
use super::family::{Context, Family};
use super::rules::{RuleEpisode, RuleObs};
use crate::base::Addr;
use crate::base::time::{NANOS_PER_SEC, Timestamp};
use crate::decode::{L3, PacketMeta, ip_proto};
use crate::track::{FlowView, Observer, ShardConfig};

/// A binding is trusted for this long after it was last seen.
const BINDING_TTL: u64 = 600 * NANOS_PER_SEC;
/// A reply within this long of a matching request was asked for.
const SOLICIT_WINDOW: u64 = 5 * NANOS_PER_SEC;
/// Most bindings and pending requests remembered.
const MAX_ENTRIES: usize = 65_536;

/// What an ARP packet or a router advertisement said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct L2Obs {
    /// When.
    pub ts: Timestamp,
    /// 1 ARP request, 2 ARP reply, 134 router advertisement.
    pub op: u16,
    /// Claimed address (ARP sender IP, or the router's link-local address).
    pub ip: Addr,
    /// Claimed MAC (ARP sender hardware address, or the frame's source MAC).
    pub mac: [u8; 6],
    /// ARP target IP (whom the reply is for).
    pub target: Addr,
    /// RA router lifetime in seconds (0 withdraws the default route).
    pub lifetime: u16,
}

impl L2Obs {
    /// The observation in `m`, if it is ARP or an ICMPv6 router advertisement.
    pub fn of(m: &PacketMeta) -> Option<L2Obs> {
        if m.l3 == L3::Arp && matches!(m.arp_op, 1 | 2) {
            return Some(L2Obs {
                ts: m.ts,
                op: m.arp_op,
                ip: m.src,
                mac: m.arp_sha,
                target: m.dst,
                lifetime: 0,
            });
        }
        if m.proto == ip_proto::ICMPV6 && m.has_icmp() && m.icmp_type == 134 {
            let lifetime = (m.icmp_rest & 0xffff) as u16;
            return Some(L2Obs { ts: m.ts, op: 134, ip: m.src, mac: m.src_mac, target: m.dst, lifetime });
        }
        None
    }
}

/// Most ARP/RA observations a shard keeps per interval.
const MAX_OBS: usize = 4096;

/// The shard half: this interval's ARP packets and router advertisements.
#[derive(Debug, Default)]
pub struct L2Shard {
    obs: Vec<L2Obs>,
    spare: Vec<L2Obs>,
    overflow: u64,
}

impl Observer for L2Shard {
    type Report = Vec<L2Obs>;

    #[inline]
    fn packet(&mut self, m: &PacketMeta) {
        if let Some(o) = L2Obs::of(m) {
            if self.obs.len() < MAX_OBS {
                self.obs.push(o);
            } else {
                self.overflow += 1;
            }
        }
    }

    fn flow_packet(&mut self, _: &PacketMeta, _: &FlowView<'_>) {}

    fn close(&mut self, _: Timestamp) -> Vec<L2Obs> {
        let spare = std::mem::take(&mut self.spare);
        std::mem::replace(&mut self.obs, spare)
    }

    fn recycle(&mut self, spare: Vec<L2Obs>) {
        self.spare = spare;
    }

    fn overflow(&self) -> u64 {
        self.overflow
    }
}

/// A MAC address in the usual colon notation.
pub(crate) fn mac_str(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

/// Addresses one MAC has spoken for (ARP senders), and the first one it
/// claimed in a reply nobody asked for.
#[derive(Clone, Debug, Default)]
struct Claims {
    ips: Vec<Addr>,
    /// It has claimed an address in a reply nobody asked for.
    any_unasked: bool,
    /// Unasked claims not reported yet: (claimed address, told to, when).
    pending: Vec<(Addr, Addr, Timestamp)>,
}

#[derive(Clone, Copy, Debug)]
struct Binding {
    mac: [u8; 6],
    seen: Timestamp,
    /// The MAC this binding replaced, kept while the same MAC repeats its
    /// claim: the address's owner before a spoofer took it over.
    displaced: Option<[u8; 6]>,
}

impl Binding {
    /// The binding after `mac` speaks for the address at `seen`.
    fn rebind(prev: Option<Binding>, mac: [u8; 6], seen: Timestamp) -> Binding {
        let displaced = match prev {
            Some(p) if p.mac != mac => Some(p.mac),
            Some(p) => p.displaced,
            None => None,
        };
        Binding { mac, seen, displaced }
    }

    /// The other MAC this address was at, as seen from a claim by `mac`.
    fn other_than(&self, mac: [u8; 6]) -> Option<[u8; 6]> {
        if self.mac != mac { Some(self.mac) } else { self.displaced }
    }
}

/// One MAC that advertised a router address.
#[derive(Clone, Copy, Debug)]
struct RaMac {
    mac: [u8; 6],
    first: Timestamp,
    last: Timestamp,
    adverts: u32,
    /// Adverts with router lifetime 0 (withdrawing the default route).
    withdrawals: u32,
    /// Adverts already reported in an episode.
    reported: u32,
}

/// Unasked ARP claims kept per MAC until they are reported.
const MAX_PENDING_CLAIMS: usize = 16;

/// MACs remembered per router address.
const MAX_RA_MACS: usize = 4;

/// The host-stage binding watch.
pub struct L2Watch {
    arp: HashMap<Addr, Binding, foldhash::fast::FixedState>,
    routers: HashMap<Addr, Vec<RaMac>, foldhash::fast::FixedState>,
    pending: HashMap<(Addr, Addr), Timestamp, foldhash::fast::FixedState>,
    claims: HashMap<[u8; 6], Claims, foldhash::fast::FixedState>,
    episodes: Episodes<RuleEpisode>,
}

impl L2Watch {
    /// No bindings known.
    pub fn new(policy: EpisodePolicy) -> L2Watch {
        L2Watch {
            arp: HashMap::with_hasher(Default::default()),
            routers: HashMap::with_hasher(Default::default()),
            pending: HashMap::with_hasher(Default::default()),
            claims: HashMap::with_hasher(Default::default()),
            episodes: Episodes::new(policy),
        }
    }

    /// Takes new episode timing; bindings and open episodes stay.
    pub fn reconfigure(&mut self, policy: EpisodePolicy) {
        self.episodes.set_policy(policy);
    }

    /// Processes one interval's observations in time order.
    pub fn on_interval(
        &mut self,
        obs: &mut Vec<L2Obs>,
        t: Timestamp,
        allowed: &dyn Fn(&Addr, AnomalyKind) -> bool,
        out: &mut Vec<Anomaly>,
    ) {
        obs.sort();
        for o in obs.drain(..) {
            match o.op {
                // A gratuitous request announces a binding like a reply does.
                1 if o.ip == o.target => self.arp_reply(&o, true, t, allowed, out),
                1 => self.arp_request(&o, t, allowed, out),
                2 => {
                    let asked = self
                        .pending
                        .get(&(o.target, o.ip))
                        .is_some_and(|ts| o.ts.since(*ts) <= SOLICIT_WINDOW);
                    self.arp_reply(&o, asked, t, allowed, out)
                }
                _ => self.router_advert(&o, t, allowed, out),
            }
        }
        if self.pending.len() > MAX_ENTRIES {
            self.pending.retain(|_, ts| t.since(*ts) < SOLICIT_WINDOW);
        }
        if self.arp.len() > MAX_ENTRIES {
            self.arp.retain(|_, b| t.since(b.seen) < BINDING_TTL);
        }
        if self.claims.len() > MAX_ENTRIES {
            self.claims.clear();
        }
    }

    fn arp_request(
        &mut self,
        o: &L2Obs,
        t: Timestamp,
        allowed: &dyn Fn(&Addr, AnomalyKind) -> bool,
        out: &mut Vec<Anomaly>,
    ) {
        if o.ip.ip().is_unspecified() {
            return; // ARP probe (RFC 5227): claims nothing yet
        }
        self.pending.insert((o.ip, o.target), o.ts);
        let prior = self.arp.get(&o.ip).copied();
        let previous = self.arp.insert(o.ip, Binding::rebind(prior, o.mac, o.ts));
        let mut reasons = Vec::new();
        if previous.is_some_and(|b| b.mac != o.mac && o.ts.since(b.seen) < BINDING_TTL) {
            reasons.push("rebinds_live_address");
        }
        if self.claim(o, false) {
            reasons.push("one_mac_claims_several_addresses_unasked");
        }
        self.flag(o, previous, reasons, t, allowed, out);
    }

    /// Records that `o.mac` spoke for `o.ip`; true when the MAC now claims
    /// several addresses and at least one in a reply nobody asked for.
    fn claim(&mut self, o: &L2Obs, unasked_reply: bool) -> bool {
        let c = self.claims.entry(o.mac).or_default();
        if !c.ips.contains(&o.ip) && c.ips.len() < 8 {
            c.ips.push(o.ip);
        }
        if unasked_reply {
            c.any_unasked = true;
            if c.pending.len() < MAX_PENDING_CLAIMS {
                c.pending.push((o.ip, o.target, o.ts));
            }
        }
        c.ips.len() >= 2 && c.any_unasked
    }

    fn arp_reply(
        &mut self,
        o: &L2Obs,
        solicited: bool,
        t: Timestamp,
        allowed: &dyn Fn(&Addr, AnomalyKind) -> bool,
        out: &mut Vec<Anomaly>,
    ) {
        let previous = self.arp.get(&o.ip).copied();
        let mut reasons = Vec::new();
        if let Some(b) = previous {
            if b.mac != o.mac && o.ts.since(b.seen) < BINDING_TTL {
                reasons.push("rebinds_live_address");
            } else if b.mac == o.mac
                && b.displaced.is_some()
                && !solicited
                && self.episodes.is_open(&EpisodeKey {
                    kind: AnomalyKind::ArpSpoof,
                    src: o.ip,
                    dst: o.target,
                })
            {
                // The spoofer keeps the victim's cache poisoned: each repeat counts.
                reasons.push("repeats_spoofed_binding");
            }
        }
        if self.claim(o, !solicited) {
            reasons.push("one_mac_claims_several_addresses_unasked");
        }
        self.arp.insert(o.ip, Binding::rebind(previous, o.mac, o.ts));
        self.flag(o, previous, reasons, t, allowed, out);
    }

    fn flag(
        &mut self,
        o: &L2Obs,
        previous: Option<Binding>,
        reasons: Vec<&'static str>,
        t: Timestamp,
        allowed: &dyn Fn(&Addr, AnomalyKind) -> bool,
        out: &mut Vec<Anomaly>,
    ) {
        if reasons.is_empty() {
            return;
        }
        // Each offence is an address stolen toward one victim, so poisoning
        // both ends of a conversation is two episodes, each victim named:
        // the address this packet rebinds, or every unasked claim of a MAC
        // that speaks for several addresses (the first ones included, which
        // were not suspect until the second address).
        let rebinds = reasons.iter().any(|r| *r == "rebinds_live_address" || *r == "repeats_spoofed_binding");
        let claims = self.claims.get_mut(&o.mac);
        let offences: Vec<(Addr, Addr, Timestamp)> = match claims {
            Some(c) if !rebinds => std::mem::take(&mut c.pending),
            Some(c) => {
                c.pending.retain(|p| *p != (o.ip, o.target, o.ts));
                vec![(o.ip, o.target, o.ts)]
            }
            None => vec![(o.ip, o.target, o.ts)],
        };
        let claimed: Vec<String> = self
            .claims
            .get(&o.mac)
            .map(|c| c.ips.iter().map(|a| a.to_string()).collect())
            .unwrap_or_default();
        for (ip, target, when) in offences {
            if allowed(&ip, AnomalyKind::ArpSpoof) {
                continue;
            }
            let mut ev = Map::new();
            ev.insert("claimed_ip".into(), json!(ip.to_string()));
            ev.insert("claiming_mac".into(), json!(mac_str(&o.mac)));
            let owner = previous.filter(|_| ip == o.ip).and_then(|b| b.other_than(o.mac));
            if let Some(m) = owner {
                ev.insert("previous_mac".into(), json!(mac_str(&m)));
            }
            ev.insert("addresses_claimed_by_mac".into(), json!(claimed));
            ev.insert("reasons".into(), json!(reasons));
            let was = owner.map(|m| format!(" (was {})", mac_str(&m))).unwrap_or_default();
            let obs = RuleObs {
                ts: t,
                span: crate::base::time::Span::at(when),
                window: when,
                totals: vec![("spoofed_replies", 1)],
                observed_total: Some("spoofed_replies"),
                observed: 1.0,
                threshold: 1.0,
                unit: "spoofed replies",
                severity: Severity::High,
                src: Some(ip),
                dst: Some(target),
                evidence: ev,
                message: format!(
                    "MAC {} told {target} that {ip} is at {}{was} ({}): ARP spoofing, the first step of a man-in-the-middle",
                    mac_str(&o.mac),
                    mac_str(&o.mac),
                    reasons.join(", ")
                ),
            };
            self.episodes.observe(
                EpisodeKey { kind: AnomalyKind::ArpSpoof, src: ip, dst: target },
                t,
                &obs,
                out,
            );
        }
    }

    fn router_advert(
        &mut self,
        o: &L2Obs,
        t: Timestamp,
        allowed: &dyn Fn(&Addr, AnomalyKind) -> bool,
        out: &mut Vec<Anomaly>,
    ) {
        let macs = self.routers.entry(o.ip).or_default();
        // Forget MACs silent for longer than a binding lives.
        macs.retain(|m| o.ts.since(m.last) < BINDING_TTL);
        match macs.iter().position(|m| m.mac == o.mac) {
            Some(i) => {
                let m = &mut macs[i];
                m.last = o.ts;
                m.adverts = m.adverts.saturating_add(1);
                m.withdrawals = m.withdrawals.saturating_add(u32::from(o.lifetime == 0));
            }
            None if macs.len() < MAX_RA_MACS => macs.push(RaMac {
                mac: o.mac,
                first: o.ts,
                last: o.ts,
                adverts: 1,
                withdrawals: u32::from(o.lifetime == 0),
                reported: 0,
            }),
            None => return,
        }
        if macs.len() < 2 || allowed(&o.ip, AnomalyKind::RogueRouterAdvert) {
            return;
        }
        // The router's usual MAC is the one advertising it as a router
        // (lifetime above 0) most often; ties go to the first seen. The
        // others are impostors, whichever came first: kill_router6 speaks
        // before the real router does.
        let usual = macs
            .iter()
            .enumerate()
            .max_by_key(|(_, m)| (m.adverts.saturating_sub(m.withdrawals), std::cmp::Reverse(m.first)))
            .map(|(i, _)| i)
            .unwrap_or(0);
        let known = macs[usual];
        for m in macs.iter_mut().filter(|m| m.mac != known.mac && m.adverts > m.reported) {
            let new = m.adverts.saturating_sub(m.reported);
            m.reported = m.adverts;
            let what = if m.withdrawals > 0 {
                format!("withdrawing the default route (lifetime 0) in {} of them", m.withdrawals)
            } else {
                "advertising itself as the router".to_string()
            };
            let newer = if m.first > known.first { "new" } else { "earlier" };
            let mut ev = Map::new();
            ev.insert("router".into(), json!(o.ip.to_string()));
            ev.insert("advertising_mac".into(), json!(mac_str(&m.mac)));
            ev.insert("advertising_mac_first_seen".into(), json!(m.first.to_string()));
            ev.insert("advertising_mac_is".into(), json!(newer));
            ev.insert("known_mac".into(), json!(mac_str(&known.mac)));
            ev.insert("known_mac_first_seen".into(), json!(known.first.to_string()));
            ev.insert("lifetime_zero_adverts".into(), json!(m.withdrawals));
            let obs = RuleObs {
                ts: t,
                span: crate::base::time::Span { first: m.first, last: m.last },
                window: m.last,
                totals: vec![("router_advertisements", u64::from(new))],
                observed_total: Some("router_advertisements"),
                observed: f64::from(m.adverts),
                threshold: 1.0,
                unit: "router advertisements",
                severity: Severity::High,
                src: Some(o.ip),
                dst: Some(o.target),
                evidence: ev,
                message: format!(
                    "MAC {} ({newer} for this address) sent {} router advertisements as {}, {what}, while {} advertises that router from its usual MAC {}: a rogue or spoofed IPv6 router",
                    mac_str(&m.mac),
                    m.adverts,
                    o.ip,
                    o.ip,
                    mac_str(&known.mac)
                ),
            };
            let key = EpisodeKey { kind: AnomalyKind::RogueRouterAdvert, src: o.ip, dst: Addr::UNSPECIFIED };
            self.episodes.observe(key, t, &obs, out);
        }
    }
}

impl Family for L2Watch {
    type Shard = L2Shard;

    fn new(cfg: &DetectConfig) -> L2Watch {
        L2Watch::new(cfg.episodes)
    }

    fn shard(_: &DetectConfig, _: &ShardConfig) -> L2Shard {
        L2Shard::default()
    }

    fn judge(&mut self, obs: &mut Vec<L2Obs>, cx: &mut Context<'_>, out: &mut Vec<Anomaly>) {
        let cfg = cx.cfg;
        if cfg.misuse_enabled {
            self.on_interval(obs, cx.t, &|a, k| cfg.allowed(a, k), out);
        }
        obs.clear();
    }

    crate::detect::family::episodes_tick!();

    fn reconfigure(&mut self, cfg: &DetectConfig) {
        L2Watch::reconfigure(self, cfg.episodes);
    }
}
