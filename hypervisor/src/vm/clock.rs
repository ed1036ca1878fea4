//! Calendar time to Unix time, for the wall clock the guests get, and the decoding of the
//! CMOS clock's registers (read by `crate::arch::rtc`).
#![forbid(unsafe_code)]

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

/// The CMOS clock's registers as read (MC146818 layout: values in BCD unless status B
/// bit 2 says binary; a 12-hour clock unless status B bit 1, with PM in bit 7 of the hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcRegs {
    /// Register 0.
    pub second: u8,
    /// Register 2.
    pub minute: u8,
    /// Register 4.
    pub hour: u8,
    /// Register 7.
    pub day: u8,
    /// Register 8.
    pub month: u8,
    /// Register 9: years since 2000.
    pub year: u8,
    /// Register 0x0b, status B.
    pub status_b: u8,
}

/// The clock's time (UTC assumed) in ns since the Unix epoch, or `None` when the
/// registers hold no valid date.
pub fn rtc_ns(r: RtcRegs) -> Option<u64> {
    let bin = |v: u8| if r.status_b & 0x04 != 0 { u32::from(v) } else { from_bcd(v) };
    let twelve_hour = r.status_b & 0x02 == 0;
    let mut hour = bin(r.hour & 0x7f);
    if twelve_hour && r.hour & 0x80 != 0 {
        hour = (hour % 12) + 12; // PM
    } else if twelve_hour && hour == 12 {
        hour = 0; // 12 AM
    }
    let secs =
        unix_seconds(2000 + bin(r.year), bin(r.month), bin(r.day), hour, bin(r.minute), bin(r.second))?;
    secs.checked_mul(1_000_000_000)
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

    #[test]
    fn rtc_registers_in_bcd_binary_and_12_hour_forms() {
        let bcd24 = RtcRegs {
            second: 0x56,
            minute: 0x34,
            hour: 0x12,
            day: 0x29,
            month: 0x02,
            year: 0x24,
            status_b: 0x02,
        };
        assert_eq!(rtc_ns(bcd24), Some(1_709_210_096 * 1_000_000_000));
        let bin24 = RtcRegs { second: 56, minute: 34, hour: 12, day: 29, month: 2, year: 24, status_b: 0x06 };
        assert_eq!(rtc_ns(bin24), rtc_ns(bcd24));
        // 12-hour BCD: 12:34:56 PM is 0x12 with bit 7; 12 AM is hour 0.
        let pm = RtcRegs { hour: 0x92, status_b: 0x00, ..bcd24 };
        assert_eq!(rtc_ns(pm), rtc_ns(bcd24));
        let midnight = RtcRegs { hour: 0x12, status_b: 0x00, ..bcd24 };
        assert_eq!(rtc_ns(midnight), Some((1_709_210_096 - 12 * 3600) * 1_000_000_000));
        // A glitched read is no date, never a panic.
        for b in [0u8, 0x7f, 0x99, 0xff] {
            let junk = RtcRegs { second: b, minute: b, hour: b, day: b, month: b, year: b, status_b: b };
            let _ = rtc_ns(junk);
        }
        assert_eq!(rtc_ns(RtcRegs { month: 0x13, ..bcd24 }), None);
    }
}
