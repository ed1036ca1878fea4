//! RFC 3339 timestamps as the API carries them: `metav1.Time` (`2024-12-11T10:00:00Z`, seconds, UTC)
//! and `metav1.MicroTime` (`2024-12-11T10:00:00.123456Z`, always six fractional digits, UTC).
//!
//! The text forms are `wire::time`'s; this module adds the conversions from and to `SystemTime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use wire::time::{format_micro_time, format_time, parse};

/// Unix seconds of a `SystemTime` (negative before 1970).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() > 0 {
                -whole - 1
            } else {
                -whole
            }
        }
    }
}

/// Unix microseconds of a `SystemTime`.
pub fn unix_micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// The `SystemTime` of a Unix time in seconds.
pub fn system_time(unix_s: i64) -> SystemTime {
    if unix_s >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix_s.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix_s.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_time_conversions() {
        let t = system_time(1_733_911_200);
        assert_eq!(unix_seconds(t), 1_733_911_200);
        assert_eq!(unix_micros(t + Duration::from_micros(5)), 1_733_911_200_000_005);
        assert_eq!(unix_seconds(system_time(-5)), -5);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_millis(1)), -1);
    }
}
