//! Wall-clock time as the agent sees it: passed in by the caller, never read from a global.

use alloc::string::String;
use core::fmt;

use wire::time::{self as rfc3339, Precision};

/// A point in time: microseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// Time from whole seconds since the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Time(secs.saturating_mul(1_000_000))
    }
    /// Time from milliseconds since the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Time(ms.saturating_mul(1000))
    }
    /// Whole seconds since the epoch.
    pub const fn secs(self) -> u64 {
        self.0 / 1_000_000
    }
    /// Microseconds since the epoch.
    pub const fn micros(self) -> u64 {
        self.0
    }
    /// This time plus `ms` milliseconds (saturating).
    pub const fn plus_millis(self, ms: u64) -> Self {
        Time(self.0.saturating_add(ms.saturating_mul(1000)))
    }
    /// This time plus `s` seconds (saturating).
    pub const fn plus_secs(self, s: u64) -> Self {
        Time(self.0.saturating_add(s.saturating_mul(1_000_000)))
    }
    /// Milliseconds from `earlier` to `self` (0 if `earlier` is later).
    pub const fn millis_since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0) / 1000
    }

    /// Unix seconds and the nanoseconds past them.
    fn split(self) -> (i64, u32) {
        // u64 microseconds / 10^6 is below 2^45: it fits an i64.
        ((self.0 / 1_000_000) as i64, (self.0 % 1_000_000) as u32 * 1000)
    }

    /// `metav1.Time`: RFC 3339 with whole seconds, e.g. `2024-12-11T10:00:00Z`.
    pub fn rfc3339(self) -> String {
        let (s, ns) = self.split();
        rfc3339::format(s, ns, Precision::Seconds)
    }

    /// `metav1.MicroTime`: always six fractional digits, e.g. `2024-12-11T10:00:00.123456Z`.
    pub fn rfc3339_micro(self) -> String {
        let (s, ns) = self.split();
        rfc3339::format(s, ns, Precision::Micros)
    }

    /// RFC 3339 with nine fractional digits, as container log timestamps are written.
    pub fn rfc3339_nano(self) -> String {
        let (s, ns) = self.split();
        rfc3339::format(s, ns, Precision::Nanos)
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`. Returns `None` on anything else or
    /// on a time before the epoch.
    pub fn parse_rfc3339(s: &str) -> Option<Time> {
        let (secs, nanos) = rfc3339::parse(s)?;
        let secs = u64::try_from(secs).ok()?;
        Some(Time(secs.checked_mul(1_000_000)?.checked_add(u64::from(nanos / 1000))?))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339_micro())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(Time(0).rfc3339(), "1970-01-01T00:00:00Z");
        // 2024-12-11T10:00:00Z = 1733911200
        let t = Time::from_secs(1_733_911_200).plus_millis(123);
        assert_eq!(t.rfc3339(), "2024-12-11T10:00:00Z");
        assert_eq!(t.rfc3339_micro(), "2024-12-11T10:00:00.123000Z");
        assert_eq!(t.rfc3339_nano(), "2024-12-11T10:00:00.123000000Z");
        // Leap day.
        assert_eq!(Time::from_secs(951_782_400).rfc3339(), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn parse_round_trips_and_rejects_garbage() {
        for secs in [0u64, 951_782_400, 1_733_911_200, 4_102_444_799] {
            let t = Time::from_secs(secs);
            assert_eq!(Time::parse_rfc3339(&t.rfc3339()), Some(t));
        }
        let t = Time::from_secs(1_733_911_200).plus_millis(5);
        assert_eq!(Time::parse_rfc3339(&t.rfc3339_micro()), Some(t));
        assert_eq!(Time::parse_rfc3339("2024-12-11T12:00:00+02:00"), Some(Time::from_secs(1_733_911_200)));
        for bad in [
            "",
            "2024",
            "2024-13-01T00:00:00Z",
            "2024-12-11T10:00:00",
            "2024-12-11T10:00:00.Z",
            "x024-12-11T10:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(Time::parse_rfc3339(bad), None, "{bad}");
        }
    }
}
