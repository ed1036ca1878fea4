//! RFC 3339 timestamps as the Kubernetes API carries them: `metav1.Time`
//! (`2024-12-11T10:00:00Z`, whole seconds, UTC), `metav1.MicroTime`
//! (`2024-12-11T10:00:00.123456Z`, always six fractional digits, UTC) and the nine-digit form of
//! container log lines (`2024-12-11T10:00:00.123456789Z`).
//!
//! Times are Unix seconds (negative before 1970) plus nanoseconds. Parsing takes client text and
//! never panics; it accepts any fraction and a `Z` or `±hh:mm` offset.

use alloc::format;
use alloc::string::String;

const SECONDS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (era arithmetic over 400-year cycles).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// How many fractional digits a formatted time carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// None: `metav1.Time`.
    Seconds,
    /// Six: `metav1.MicroTime`.
    Micros,
    /// Nine: container log timestamps.
    Nanos,
}

/// RFC 3339 text (UTC, `Z`) of Unix second `unix_s` plus `nanos` (below 10^9), with the
/// fraction `precision` asks for (truncated, never rounded).
pub fn format(unix_s: i64, nanos: u32, precision: Precision) -> String {
    let days = unix_s.div_euclid(SECONDS_PER_DAY);
    let secs = unix_s.rem_euclid(SECONDS_PER_DAY);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let date = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    match precision {
        Precision::Seconds => format!("{date}Z"),
        Precision::Micros => format!("{date}.{:06}Z", nanos / 1000),
        Precision::Nanos => format!("{date}.{nanos:09}Z"),
    }
}

/// `metav1.Time` text of a Unix time in seconds.
pub fn format_time(unix_s: i64) -> String {
    format(unix_s, 0, Precision::Seconds)
}

/// `metav1.MicroTime` text of a Unix time in microseconds.
pub fn format_micro_time(unix_us: i64) -> String {
    let nanos = unix_us.rem_euclid(1_000_000) as u32 * 1000;
    format(unix_us.div_euclid(1_000_000), nanos, Precision::Micros)
}

fn digits(s: &str, at: usize, n: usize) -> Option<u32> {
    let part = s.get(at..at + n)?;
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

/// Parses an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, `T` also `t` or a
/// space) into Unix `(seconds, nanoseconds)`; `None` when malformed or not a calendar date.
/// Fraction digits past the ninth are ignored.
pub fn parse(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || b.get(13) != Some(&b':') {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(16) != Some(&b':') {
        return None;
    }
    let year = i64::from(digits(s, 0, 4)?);
    let month = digits(s, 5, 2)?;
    let day = digits(s, 8, 2)?;
    let hour = i64::from(digits(s, 11, 2)?);
    let minute = i64::from(digits(s, 14, 2)?);
    let second = i64::from(digits(s, 17, 2)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let max_day = *month_days.get(usize::try_from(month).ok()?.checked_sub(1)?)?;
    if day == 0 || day > max_day || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(c - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset_s = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b.get(i + 3) == Some(&b':') => {
            let oh = i64::from(digits(s, i + 1, 2)?);
            let om = i64::from(digits(s, i + 4, 2)?);
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some((days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset_s, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_733_911_200), "2024-12-11T10:00:00Z");
        assert_eq!(format_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_time(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_micro_time(1_733_911_200_123_456), "2024-12-11T10:00:00.123456Z");
        assert_eq!(format_micro_time(1_733_911_200_000_007), "2024-12-11T10:00:00.000007Z");
        assert_eq!(format(1_733_911_200, 123_000_000, Precision::Nanos), "2024-12-11T10:00:00.123000000Z");
        assert_eq!(format(1_733_911_200, 123_456_789, Precision::Micros), "2024-12-11T10:00:00.123456Z");
    }

    #[test]
    fn parses_and_round_trips() {
        for t in [0, 1, 59, 86_399, 951_782_400, 1_733_911_200, 4_102_444_800, -86_401] {
            assert_eq!(parse(&format_time(t)), Some((t, 0)), "{t}");
        }
        assert_eq!(parse("2024-12-11T10:00:00.123456Z"), Some((1_733_911_200, 123_456_000)));
        assert_eq!(parse("2024-12-11T11:30:00+01:30"), Some((1_733_911_200, 0)));
        assert_eq!(parse("2024-12-11T08:00:00.5-02:00"), Some((1_733_911_200, 500_000_000)));
        assert_eq!(parse("2024-12-11T10:00:00.1234567891Z"), Some((1_733_911_200, 123_456_789)));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2024-12-11",
            "2024-12-11T10:00:00",
            "2024-13-11T10:00:00Z",
            "2023-02-29T10:00:00Z",
            "2024-12-11T24:00:00Z",
            "2024-12-11T10:00:00.Z",
            "2024-12-11T10:00:00+0100",
            "2024-12-11T10:00:00Zjunk",
            "2024-1a-11T10:00:00Z",
            "２０２４-12-11T10:00:00Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
