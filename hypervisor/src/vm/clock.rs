//! Calendar time to Unix time, for the wall clock the guests get.
#![deny(unsafe_code)]

/// Seconds since 1970-01-01T00:00:00Z of a UTC calendar time, or `None` when a field is
/// out of range (a glitched RTC read).
pub fn unix_seconds(year: u32, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<u64> {
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), March-based years.
    let y = i64::from(if month <= 2 { year - 1 } else { year });
    let m = i64::from(month);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec);
    u64::try_from(secs).ok()
}

/// A BCD byte as binary.
pub fn from_bcd(b: u8) -> u32 {
    u32::from(b >> 4) * 10 + u32::from(b & 0xf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(unix_seconds(1970, 1, 1, 0, 0, 0), Some(0));
        assert_eq!(unix_seconds(2000, 3, 1, 0, 0, 0), Some(951_868_800));
        assert_eq!(unix_seconds(2024, 2, 29, 12, 34, 56), Some(1_709_210_096));
        assert_eq!(unix_seconds(2026, 11, 24, 23, 59, 59), Some(1_795_564_799));
        assert_eq!(unix_seconds(2026, 13, 1, 0, 0, 0), None);
        assert_eq!(unix_seconds(1969, 12, 31, 0, 0, 0), None);
        assert_eq!(unix_seconds(2026, 1, 1, 24, 0, 0), None);
        assert_eq!(from_bcd(0x59), 59);
    }
}
