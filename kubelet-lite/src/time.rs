//! Wall-clock time as the agent sees it: passed in by the caller, never read from a global.

use alloc::format;
use alloc::string::String;
use core::fmt;

/// A point in time: microseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

/// Civil date (year, month, day) for a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm, eras of 400 years.
    let z = days + 719_468;
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

/// Days since 1970-01-01 for a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

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

    fn parts(self) -> (i64, u32, u32, u64, u64, u64, u64) {
        let secs = self.secs();
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (y, mo, d) = civil_from_days(days);
        (y, mo, d, rem / 3600, rem % 3600 / 60, rem % 60, self.0 % 1_000_000)
    }

    /// `metav1.Time`: RFC 3339 with whole seconds, e.g. `2024-12-11T10:00:00Z`.
    pub fn rfc3339(self) -> String {
        let (y, mo, d, h, mi, s, _) = self.parts();
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }

    /// `metav1.MicroTime`: always six fractional digits, e.g. `2024-12-11T10:00:00.123456Z`.
    pub fn rfc3339_micro(self) -> String {
        let (y, mo, d, h, mi, s, us) = self.parts();
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
    }

    /// RFC 3339 with nine fractional digits, as container log timestamps are written.
    pub fn rfc3339_nano(self) -> String {
        let (y, mo, d, h, mi, s, us) = self.parts();
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}000Z")
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`. Returns `None` on anything else or
    /// on a time before the epoch.
    pub fn parse_rfc3339(s: &str) -> Option<Time> {
        let b = s.as_bytes();
        let num = |from: usize, len: usize| -> Option<u64> {
            let part = b.get(from..from + len)?;
            let mut v = 0u64;
            for &c in part {
                if !c.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + u64::from(c - b'0');
            }
            Some(v)
        };
        let sep = |at: usize, want: &[u8]| b.get(at).is_some_and(|c| want.contains(c));
        if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
            return None;
        }
        let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
        let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        let mut i = 19;
        let mut micros = 0u64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let mut digits = 0;
            while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
                if digits < 6 {
                    micros = micros * 10 + u64::from(c - b'0');
                }
                digits += 1;
                i += 1;
            }
            if digits == 0 {
                return None;
            }
            for _ in digits..6 {
                micros *= 10;
            }
        }
        let offset_secs: i64 = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(&c @ (b'+' | b'-')) if i + 6 == b.len() && sep(i + 3, b":") => {
                let off = (num(i + 1, 2)? * 3600 + num(i + 4, 2)? * 60) as i64;
                if c == b'+' {
                    off
                } else {
                    -off
                }
            }
            _ => return None,
        };
        let days = days_from_civil(y as i64, mo as u32, d as u32);
        let secs = days * 86_400 + (h * 3600 + mi * 60 + sec) as i64 - offset_secs;
        let secs = u64::try_from(secs).ok()?;
        Some(Time(secs.checked_mul(1_000_000)?.checked_add(micros)?))
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
