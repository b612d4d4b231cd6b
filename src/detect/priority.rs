//! Episode priority for triage: one number (0-100) per `start` and `update`
//! event, and the reasons for it in words, so an analyst reads the
//! highest first.
//!
//! Priority is a pure function of the event and of whether this actor has
//! done this kind of thing before in this run, so it is the same for any
//! number of workers. It starts from the severity (each detector's own
//! judgement of urgency), adds up to 15 for how far past its line the
//! episode is (5 per doubling: 2x over is +5, 8x is +15), adds 5 for the
//! kinds that mean someone is already inside or in the middle (behaviour
//! families, DNS and ARP spoofing, rogue router adverts) and 5 the first
//! time an actor shows a kind, and takes 10 off the behaviour model's
//! outliers, which rank but do not alert on their own.

use hashbrown::HashSet;

use super::anomaly::{Anomaly, AnomalyKind, Category, Phase, Severity};
use crate::base::Addr;

/// (kind, actor) pairs remembered for novelty; past it novelty is not
/// claimed for new pairs (never wrongly claimed for old ones).
const MAX_SEEN: usize = 1 << 20;

/// An event's priority and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Priority {
    /// 0 (ignore) to 100 (read first).
    pub value: u8,
    /// The parts it is made of, in words.
    pub reasons: Vec<String>,
}

/// Novelty memory across the run.
#[derive(Default)]
pub struct Triage {
    seen: HashSet<(AnomalyKind, Addr, Addr), foldhash::fast::FixedState>,
}

impl Triage {
    /// Sets `priority` on every start and update in `evs` (in event order).
    pub fn assign(&mut self, evs: &mut [Anomaly]) {
        for a in evs {
            if a.phase == Phase::End {
                continue;
            }
            let key = (a.kind, a.src.unwrap_or(Addr::UNSPECIFIED), a.dst.unwrap_or(Addr::UNSPECIFIED));
            let novel = a.phase == Phase::Start && !self.seen.contains(&key) && self.seen.len() < MAX_SEEN;
            if a.phase == Phase::Start && self.seen.len() < MAX_SEEN {
                self.seen.insert(key);
            }
            a.priority = Some(priority(a, novel));
        }
    }
}

/// The priority of one event; `novel` when its actor never showed this kind
/// before in this run.
pub fn priority(a: &Anomaly, novel: bool) -> Priority {
    let mut reasons = Vec::new();
    let base: i32 = match a.severity {
        Severity::Low => 15,
        Severity::Medium => 35,
        Severity::High => 55,
        Severity::Critical => 75,
    };
    reasons.push(format!("severity {} (+{base})", a.severity.as_str()));
    let mut v = base;
    let ratio = if a.threshold > 0.0 { a.observed / a.threshold } else { 1.0 };
    if ratio.is_finite() && ratio >= 2.0 {
        let bonus = ((ratio.log2() * 5.0).floor() as i32).min(15);
        v += bonus;
        reasons.push(format!("{ratio:.1}x its line (+{bonus})"));
    }
    let inside = a.category() == Category::Behaviour
        || matches!(
            a.kind,
            AnomalyKind::DnsSpoofing | AnomalyKind::ArpSpoof | AnomalyKind::RogueRouterAdvert
        );
    if inside {
        v += 5;
        reasons.push("someone inside or in the middle (+5)".into());
    }
    if a.kind == AnomalyKind::BehaviourOutlier {
        v -= 10;
        reasons.push("behaviour model alone, for ranking (-10)".into());
    }
    if novel {
        v += 5;
        reasons.push("first time this actor shows this (+5)".into());
    }
    Priority { value: v.clamp(0, 100) as u8, reasons }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::time::Timestamp;

    fn event(kind: AnomalyKind, severity: Severity, observed: f64, threshold: f64) -> Anomaly {
        Anomaly {
            ts: Timestamp(1),
            phase: Phase::Start,
            episode_id: "x".into(),
            kind,
            severity,
            src: None,
            dst: Some(Addr::v4([10, 0, 0, 1])),
            flow: None,
            observed,
            unit: "packets",
            baseline: None,
            threshold,
            score: observed / threshold,
            evidence: serde_json::Map::new(),
            message: String::new(),
            priority: None,
        }
    }

    #[test]
    fn a_critical_flood_ranks_above_one_invalid_flags_packet() {
        let flood = priority(&event(AnomalyKind::SynFlood, Severity::Critical, 3000.0, 100.0), true);
        let flags = priority(&event(AnomalyKind::TcpInvalidFlags, Severity::Medium, 1.0, 1.0), true);
        assert!(flood.value > flags.value + 40, "{flood:?} {flags:?}");
        assert_eq!(flood.value, 95);
        assert_eq!(flags.value, 40);
    }

    #[test]
    fn novelty_once_per_actor_and_kind() {
        let mut t = Triage::default();
        let mut evs = vec![
            event(AnomalyKind::PortScan, Severity::Medium, 20.0, 15.0),
            event(AnomalyKind::PortScan, Severity::Medium, 20.0, 15.0),
        ];
        t.assign(&mut evs);
        let (a, b) = (evs[0].priority.clone().unwrap(), evs[1].priority.clone().unwrap());
        assert_eq!(a.value, b.value + 5);
        assert!(a.reasons.iter().any(|r| r.starts_with("first time")));
    }
}
