//! Episode priority for triage: one number (0-100) per `start` and `update`
//! event, and the reasons for it in words, so an analyst reads the
//! highest first.
//!
//! Priority is a pure function of the event, of whether this actor has
//! done this kind of thing before in this run, and of the behaviour model's
//! scores of the interval (computed on the merged interval), so it is the
//! same for any number of workers. It starts from the severity (each
//! detector's own judgement of urgency), adds up to 15 for how far past its
//! line the episode is (5 per doubling: 2x over is +5, 8x is +15), adds 5
//! for the kinds that mean someone is already inside or in the middle
//! (behaviour families, DNS and ARP spoofing, rogue router adverts), 5 the
//! first time an actor shows a kind, and 10 when the behaviour model (on and
//! calibrated) finds the episode's source or destination unusual in the same
//! interval: two independent views of one host agree. It takes 10 off the
//! behaviour model's own outliers, which rank but do not alert on their own.

use hashbrown::HashSet;

use super::anomaly::{Anomaly, AnomalyKind, Category, Phase, Severity};
use super::ml::UnusualHosts;
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
    /// Sets `priority` on every start and update in `evs` (in event order);
    /// `model` is the behaviour model's view of the same interval.
    pub fn assign(&mut self, evs: &mut [Anomaly], model: Option<UnusualHosts<'_>>) {
        for a in evs {
            if a.phase == Phase::End {
                continue;
            }
            let key = (a.kind, a.src.unwrap_or(Addr::UNSPECIFIED), a.dst.unwrap_or(Addr::UNSPECIFIED));
            let novel = a.phase == Phase::Start && !self.seen.contains(&key) && self.seen.len() < MAX_SEEN;
            if a.phase == Phase::Start && self.seen.len() < MAX_SEEN {
                self.seen.insert(key);
            }
            a.priority = Some(priority(a, novel, model.and_then(|m| model_view(a, m))));
        }
    }
}

/// The behaviour model's (score, line) for the more unusual end of `a`, when
/// it found either unusual; never for its own outliers (counted once).
fn model_view(a: &Anomaly, m: UnusualHosts<'_>) -> Option<(f64, f64)> {
    if a.kind == AnomalyKind::BehaviourOutlier {
        return None;
    }
    let score = |h: Option<Addr>| h.and_then(|h| m.score(&h));
    match (score(a.src), score(a.dst)) {
        (Some(s), Some(d)) => Some((s.max(d), m.line)),
        (Some(s), None) | (None, Some(s)) => Some((s, m.line)),
        (None, None) => None,
    }
}

/// Three significant digits: model scores are small (a line near 0.001).
fn sig3(v: f64) -> String {
    let digits = if v > 0.0 && v.is_finite() { (2 - v.log10().floor() as i32).clamp(0, 12) } else { 3 };
    format!("{v:.*}", digits as usize)
}

/// The priority of one event; `novel` when its actor never showed this kind
/// before in this run; `model` the behaviour model's (score, line) when it
/// found the event's source or destination unusual in the same interval.
pub fn priority(a: &Anomaly, novel: bool, model: Option<(f64, f64)>) -> Priority {
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
    if let Some((score, line)) = model {
        v += 10;
        reasons.push(format!(
            "behaviour model: host unusual now (score {}, line {}) (+10)",
            sig3(score),
            sig3(line)
        ));
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
        let flood = priority(&event(AnomalyKind::SynFlood, Severity::Critical, 3000.0, 100.0), true, None);
        let flags = priority(&event(AnomalyKind::TcpInvalidFlags, Severity::Medium, 1.0, 1.0), true, None);
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
        t.assign(&mut evs, None);
        let (a, b) = (evs[0].priority.clone().unwrap(), evs[1].priority.clone().unwrap());
        assert_eq!(a.value, b.value + 5);
        assert!(a.reasons.iter().any(|r| r.starts_with("first time")));
    }

    #[test]
    fn the_behaviour_models_view_of_a_host_raises_its_episodes() {
        let hot = Addr::v4([10, 0, 0, 1]);
        let hosts = [(Addr::v4([10, 0, 0, 0]), 0.5), (hot, 0.0042)];
        let model = UnusualHosts { line: 0.0011, hosts: &hosts };
        let scan = || event(AnomalyKind::PortScan, Severity::Medium, 20.0, 15.0);
        let mut outlier = event(AnomalyKind::BehaviourOutlier, Severity::Medium, 0.0042, 0.0011);
        outlier.src = Some(hot);
        let mut elsewhere = scan();
        elsewhere.dst = Some(Addr::v4([10, 0, 0, 9]));
        let mut evs = vec![scan(), elsewhere, outlier];
        let mut plain = evs.clone();
        Triage::default().assign(&mut evs, Some(model));
        Triage::default().assign(&mut plain, None);
        let p = |e: &Anomaly| e.priority.clone().unwrap();
        // The scan's target (dst) is unusual now: +10, in words.
        assert_eq!(p(&evs[0]).value, p(&plain[0]).value + 10);
        assert!(
            p(&evs[0])
                .reasons
                .iter()
                .any(|r| r == "behaviour model: host unusual now (score 0.00420, line 0.00110) (+10)"),
            "{:?}",
            p(&evs[0]).reasons
        );
        // A host the model did not flag, and the model's own outlier, gain nothing.
        assert_eq!(p(&evs[1]), p(&plain[1]));
        assert_eq!(p(&evs[2]), p(&plain[2]));
        assert_eq!((sig3(0.5), sig3(12.0)), ("0.500".to_string(), "12.0".to_string()));
    }
}
