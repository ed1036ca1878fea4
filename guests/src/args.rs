//! The guest command line: space-separated words, `key=value` or bare flags. Numbers are
//! decimal or `0x` hexadecimal, with an optional binary suffix `k`, `m`, `g` or `t`
//! (`16m` = 16 MiB). Nothing here panics on any input.

/// The value of the first `key=value` word with this key.
pub fn get<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_ascii_whitespace().find_map(|w| match w.split_once('=') {
        Some((k, v)) if k == key => Some(v),
        _ => None,
    })
}

/// Whether the bare word `flag` is present.
pub fn has(cmdline: &str, flag: &str) -> bool {
    cmdline.split_ascii_whitespace().any(|w| w == flag)
}

/// Parses an unsigned number (see the module doc); `None` when malformed or too large.
pub fn parse_u64(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        b't' | b'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let value = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse::<u64>().ok()?,
    };
    let scaled = value.checked_shl(shift)?;
    (scaled >> shift == value).then_some(scaled)
}

/// Parses a signed number: an optional `-` then [`parse_u64`].
pub fn parse_i64(s: &str) -> Option<i64> {
    match s.strip_prefix('-') {
        Some(rest) => {
            let v = parse_u64(rest)?;
            if v == 1 << 63 {
                Some(i64::MIN)
            } else {
                i64::try_from(v).ok().map(|v| -v)
            }
        }
        None => i64::try_from(parse_u64(s)?).ok(),
    }
}

/// `key=N` as a number, `default` when absent, `None` when present but malformed.
pub fn number(cmdline: &str, key: &str, default: u64) -> Option<u64> {
    match get(cmdline, key) {
        None => Some(default),
        Some(v) => parse_u64(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_and_flags() {
        let c = "code=42  steps=rdmsr,out far x=";
        assert_eq!(get(c, "code"), Some("42"));
        assert_eq!(get(c, "steps"), Some("rdmsr,out"));
        assert_eq!(get(c, "x"), Some(""));
        assert_eq!(get(c, "cod"), None);
        assert!(has(c, "far"));
        assert!(!has(c, "code"));
        assert_eq!(get("", "code"), None);
    }

    #[test]
    fn parses_numbers() {
        assert_eq!(parse_u64("0"), Some(0));
        assert_eq!(parse_u64("123"), Some(123));
        assert_eq!(parse_u64("0x10"), Some(16));
        assert_eq!(parse_u64("16m"), Some(16 << 20));
        assert_eq!(parse_u64("1t"), Some(1 << 40));
        assert_eq!(parse_u64("0x1K"), Some(1024));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64("18446744073709551616"), None);
        assert_eq!(parse_u64("0xffffffffffffffffk"), None);
        assert_eq!(parse_u64(""), None);
        assert_eq!(parse_u64("m"), None);
        assert_eq!(parse_u64("12x"), None);
        assert_eq!(parse_u64("-1"), None);
    }

    #[test]
    fn parses_signed_numbers() {
        assert_eq!(parse_i64("-3"), Some(-3));
        assert_eq!(parse_i64("7"), Some(7));
        assert_eq!(parse_i64("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64("9223372036854775808"), None);
        assert_eq!(parse_i64("--1"), None);
    }

    #[test]
    fn numbers_with_defaults() {
        assert_eq!(number("lines=3", "lines", 5), Some(3));
        assert_eq!(number("", "lines", 5), Some(5));
        assert_eq!(number("lines=three", "lines", 5), None);
    }
}
