//! Percent-decoding (RFC 3986 `%XX` escapes), on top of the `percent-encoding` crate.
//!
//! Two forms are served: plain (`+` is itself) and form-style (`application/x-www-form-urlencoded`
//! and the kernel command line, where `+` is a space and a literal `+` is `%2B`). The lenient
//! decoders keep a `%` that does not start a valid escape as it is; [`is_well_formed`] tells
//! whether every `%` starts one, for callers that reject bad escapes. [`encode`] goes the other
//! way, for a path segment or a query value built from text a client sent.

#[cfg(feature = "alloc")]
use alloc::{string::String, vec::Vec};

/// The bytes `s` decodes to; with `plus`, each `+` is a space. Bad escapes stay as they are.
pub fn decode_bytes(s: &[u8], plus: bool) -> impl Iterator<Item = u8> + '_ {
    s.split(move |b| plus && *b == b'+').enumerate().flat_map(|(i, part)| {
        (i > 0).then_some(b' ').into_iter().chain(percent_encoding::percent_decode(part))
    })
}

/// Whether every `%` in `s` is followed by two hex digits.
pub fn is_well_formed(s: &[u8]) -> bool {
    s.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'%')
        .all(|(i, _)| s.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)))
}

/// Decodes `s` into `out` with no allocation, rejecting bad escapes: returns the decoded length,
/// or `None` when an escape is malformed or `out` is too small.
pub fn decode_strict_into(s: &[u8], plus: bool, out: &mut [u8]) -> Option<usize> {
    if !is_well_formed(s) {
        return None;
    }
    let mut n = 0;
    for b in decode_bytes(s, plus) {
        *out.get_mut(n)? = b;
        n += 1;
    }
    Some(n)
}

/// Decodes `s` to text (invalid UTF-8 replaced by U+FFFD); with `plus`, `+` is a space. Bad
/// escapes stay as they are.
#[cfg(feature = "alloc")]
pub fn decode(s: &str, plus: bool) -> String {
    if !plus {
        return percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    }
    let bytes: Vec<u8> = decode_bytes(s.as_bytes(), plus).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// What [`encode`] escapes: everything but RFC 3986's unreserved characters.
#[cfg(feature = "alloc")]
const COMPONENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `s` with every byte other than RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`)
/// escaped as `%XX`: safe as one path segment or one query value, whatever `s` holds (CR, LF,
/// `/`, `?`, `&`, `#`, spaces).
#[cfg(feature = "alloc")]
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COMPONENT).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(s: &[u8], plus: bool, cap: usize) -> Option<([u8; 64], usize)> {
        let mut out = [0u8; 64];
        let n = decode_strict_into(s, plus, &mut out[..cap])?;
        Some((out, n))
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn lenient_keeps_bad_escapes() {
        assert_eq!(decode("a%2Cb%zz%", false), "a,b%zz%");
        assert_eq!(decode("a+b", true), "a b");
        assert_eq!(decode("a+b", false), "a+b");
        assert_eq!(decode("a%2Bb+c", true), "a+b c");
        assert_eq!(decode("%4", true), "%4");
        assert_eq!(decode("%41%42", false), "AB");
        assert_eq!(decode("caf%C3%A9", false), "café");
        assert_eq!(decode("%FF", false), "\u{FFFD}");
        assert_eq!(decode("", true), "");
        assert_eq!(decode("++", true), "  ");
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn encode_leaves_only_unreserved_characters() {
        assert_eq!(encode("app"), "app");
        assert_eq!(encode("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(encode("x\r\nHost: evil"), "x%0D%0AHost%3A%20evil");
        assert_eq!(encode("../a/b?c=d&e#f"), "..%2Fa%2Fb%3Fc%3Dd%26e%23f");
        assert_eq!(encode("caf\u{e9}"), "caf%C3%A9");
        assert_eq!(decode(&encode("a b+c%/\u{e9}"), false), "a b+c%/\u{e9}");
    }

    #[test]
    fn strict_rejects_bad_escapes_and_short_buffers() {
        let (out, n) = strict(b"code=3+step=rdmsr%2B%25", true, 64).expect("valid");
        assert_eq!(&out[..n], b"code=3 step=rdmsr+%");
        assert_eq!(strict(b"%4", true, 64), None);
        assert_eq!(strict(b"%zz", true, 64), None);
        assert_eq!(strict(b"abcd", true, 3), None);
        let (out, n) = strict(b"abc", true, 3).expect("fits");
        assert_eq!(&out[..n], b"abc");
        assert!(is_well_formed(b"%aF%00x"));
        assert!(!is_well_formed(b"%+1"));
    }
}
