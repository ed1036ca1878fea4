//! Kubernetes resource quantities (`"100m"`, `"1.5"`, `"64Mi"`, `"1G"`, `"2e3"`), parsed into
//! integers in a chosen unit. Fixed point only: no floating point, overflow is an error.

use core::fmt;

/// Why a quantity string was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantityError {
    /// The string is empty or not `<number><suffix>`.
    Malformed,
    /// The suffix is not one Kubernetes knows.
    UnknownSuffix,
    /// The value does not fit in 64 bits in the unit asked for.
    Overflow,
    /// Negative quantities are not meaningful for resources.
    Negative,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuantityError::Malformed => "quantity is not a number with an optional suffix",
            QuantityError::UnknownSuffix => "quantity has an unknown suffix",
            QuantityError::Overflow => "quantity is too large",
            QuantityError::Negative => "quantity is negative",
        })
    }
}

/// Parses a quantity and returns it multiplied by `scale` (e.g. 1000 for millicores),
/// rounded up as Kubernetes rounds (`0.1m` cpu is 1m).
fn parse_scaled(s: &str, scale: u128) -> Result<u64, QuantityError> {
    let s = s.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(QuantityError::Negative);
    }
    let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return Err(QuantityError::Malformed);
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    // value = digits / 10^frac_len * multiplier (numerator/denominator)
    let mut digits: u128 = 0;
    for c in int_part.bytes().chain(frac_part.bytes()) {
        digits = digits
            .checked_mul(10)
            .and_then(|d| d.checked_add(u128::from(c - b'0')))
            .ok_or(QuantityError::Overflow)?;
    }
    let mut denom: u128 = 1;
    for _ in 0..frac_part.len() {
        denom = denom.checked_mul(10).ok_or(QuantityError::Overflow)?;
    }
    let (mul, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp: u32 = e[1..].parse().map_err(|_| QuantityError::Malformed)?;
            if exp > 30 {
                return Err(QuantityError::Overflow);
            }
            (10u128.pow(exp), 1)
        }
        _ => return Err(QuantityError::UnknownSuffix),
    };
    let numer = digits.checked_mul(mul).and_then(|v| v.checked_mul(scale)).ok_or(QuantityError::Overflow)?;
    let den = denom.checked_mul(div).ok_or(QuantityError::Overflow)?;
    let v = numer.div_ceil(den);
    u64::try_from(v).map_err(|_| QuantityError::Overflow)
}

/// CPU quantity in millicores (`"250m"` → 250, `"2"` → 2000, `"0.5"` → 500).
pub fn cpu_millis(s: &str) -> Result<u64, QuantityError> {
    parse_scaled(s, 1000)
}

/// Memory or storage quantity in bytes (`"64Mi"` → 67108864, `"1G"` → 10^9).
pub fn bytes(s: &str) -> Result<u64, QuantityError> {
    parse_scaled(s, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_memory() {
        assert_eq!(cpu_millis("250m"), Ok(250));
        assert_eq!(cpu_millis("2"), Ok(2000));
        assert_eq!(cpu_millis("0.5"), Ok(500));
        assert_eq!(cpu_millis("0.1m"), Ok(1));
        assert_eq!(bytes("64Mi"), Ok(64 << 20));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert_eq!(bytes("1.5Gi"), Ok(1536 << 20));
        assert_eq!(bytes("129e6"), Ok(129_000_000));
        assert_eq!(bytes("8131752Ki"), Ok(8_131_752 * 1024));
    }

    #[test]
    fn rejects_bad_quantities() {
        assert_eq!(bytes(""), Err(QuantityError::Malformed));
        assert_eq!(bytes("Mi"), Err(QuantityError::Malformed));
        assert_eq!(bytes("1.2.3"), Err(QuantityError::Malformed));
        assert_eq!(bytes("12Qi"), Err(QuantityError::UnknownSuffix));
        assert_eq!(bytes("-1"), Err(QuantityError::Negative));
        assert_eq!(bytes("99999999999999999999999Ei"), Err(QuantityError::Overflow));
        assert_eq!(bytes("1e99"), Err(QuantityError::Overflow));
        assert_eq!(bytes("1ex"), Err(QuantityError::Malformed));
    }
}
