//! Packet time: the only clock the pipeline's logic may read.
//!
//! Everything after capture (windows, baselines, timeouts, episodes) runs on
//! timestamps taken from packets, so a replay gives the same answer at any
//! speed and with any number of workers.

use std::fmt;

/// Nanoseconds since the Unix epoch, taken from a packet header.
///
/// ```
/// use netvigil::base::time::Timestamp;
/// let t = Timestamp::from_parts(1_566_400_000, 123_456_789);
/// assert_eq!(t.to_string(), "2019-08-21T15:06:40.123456Z");
/// assert_eq!(t.floor_to(1_000_000_000), Timestamp::from_secs(1_566_400_000));
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

/// The packet times a piece of evidence covers: its first and last packet.
///
/// Merges by widening; the empty span (no packet yet) is the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    /// The first packet.
    pub first: Timestamp,
    /// The last packet.
    pub last: Timestamp,
}

impl Default for Span {
    fn default() -> Self {
        Span { first: Timestamp(u64::MAX), last: Timestamp::ZERO }
    }
}

impl Span {
    /// The span of one packet.
    pub fn at(t: Timestamp) -> Span {
        Span { first: t, last: t }
    }

    /// Widens the span to include `t`.
    #[inline]
    pub fn add(&mut self, t: Timestamp) {
        self.first = self.first.min(t);
        self.last = self.last.max(t);
    }

    /// Widens the span to include `o`.
    pub fn merge(&mut self, o: &Span) {
        self.first = self.first.min(o.first);
        self.last = self.last.max(o.last);
    }

    /// This span, or the instant `t` when it holds no packet (evidence
    /// that does not track packet times falls back to its interval).
    pub fn or_at(self, t: Timestamp) -> Span {
        if self.is_empty() { Span::at(t) } else { self }
    }

    /// True before any packet was added.
    pub fn is_empty(&self) -> bool {
        self.first > self.last
    }

    /// Seconds from the first packet to the last.
    pub fn secs(&self) -> f64 {
        if self.is_empty() { 0.0 } else { self.last.since(self.first) as f64 / NANOS_PER_SEC as f64 }
    }
}

/// One second in nanoseconds.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

impl Timestamp {
    /// The epoch itself; also what times before 1970 are clamped to.
    pub const ZERO: Timestamp = Timestamp(0);

    /// Builds a timestamp from a seconds/nanoseconds pair as libpcap reports it.
    ///
    /// Negative seconds (before 1970) clamp to zero, and a sub-second field of
    /// a second or more (seen in real micro-second savefiles) simply carries
    /// into the seconds instead of being rejected.
    pub fn from_parts(secs: i64, nanos: i64) -> Timestamp {
        let total = i128::from(secs) * i128::from(NANOS_PER_SEC) + i128::from(nanos);
        Timestamp(total.clamp(0, i128::from(u64::MAX)) as u64)
    }

    /// Builds a timestamp from whole seconds.
    pub fn from_secs(secs: u64) -> Timestamp {
        Timestamp(secs.saturating_mul(NANOS_PER_SEC))
    }

    /// Nanoseconds since the epoch.
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// Seconds since the epoch, as a float (for rates).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / NANOS_PER_SEC as f64
    }

    /// `self + d`, saturating at the far future instead of wrapping.
    pub fn saturating_add(self, d: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(d))
    }

    /// `self - d`, clamped at the epoch.
    pub fn saturating_sub(self, d: u64) -> Timestamp {
        Timestamp(self.0.saturating_sub(d))
    }

    /// A timestamp from nanoseconds since the epoch.
    pub fn from_nanos(ns: u64) -> Timestamp {
        Timestamp(ns)
    }

    /// `self` moved by `d` nanoseconds either way, saturating at the ends.
    pub fn offset(self, d: i64) -> Timestamp {
        Timestamp(self.0.saturating_add_signed(d))
    }

    /// Nanoseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The start of the interval of length `interval` that holds `self`.
    pub fn floor_to(self, interval: u64) -> Timestamp {
        if interval == 0 {
            return self;
        }
        Timestamp(self.0 - self.0 % interval)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with microseconds, as the event contract requires.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / NANOS_PER_SEC;
        let micros = (self.0 % NANOS_PER_SEC) / 1_000;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days as i64);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Howard Hinnant's algorithm: exact for every date we can represent, and no
/// dependency on a calendar crate for one conversion.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_micros() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000000Z");
        let t = Timestamp::from_parts(1_566_400_000, 123_456_789);
        assert_eq!(t.to_string(), "2019-08-21T15:06:40.123456Z");
        let leap = Timestamp::from_secs(951_782_400); // 2000-02-29
        assert_eq!(leap.to_string(), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn clamps_and_carries() {
        assert_eq!(Timestamp::from_parts(-5, 0), Timestamp::ZERO);
        assert_eq!(Timestamp::from_parts(1, 1_000_000_000), Timestamp::from_secs(2));
        assert_eq!(Timestamp::from_parts(i64::MAX, i64::MAX).0, u64::MAX);
        assert_eq!(Timestamp(5).since(Timestamp(9)), 0);
        assert_eq!(Timestamp(2_500).floor_to(1_000), Timestamp(2_000));
        assert_eq!(Timestamp(7).floor_to(0), Timestamp(7));
    }
}
