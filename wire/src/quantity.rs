//! Kubernetes resource quantities (`"100m"`, `"1.5"`, `"64Mi"`, `"1G"`, `"2e3"`, `"128974848"`),
//! the text form of `resource.Quantity` in k8s.io/apimachinery: a decimal number with an optional
//! decimal SI suffix (`n u m k M G T P E`), binary SI suffix (`Ki Mi Gi Ti Pi Ei`) or decimal
//! exponent (`e3`, `E-2`).
//!
//! Values come out as integers in a chosen unit: millicores, bytes or nano-units. Fixed point
//! only, no floating point; a value finer than the unit rounds up (away from zero), as the API
//! server rounds (`0.1m` cpu is 1m); overflow is an error.

use core::fmt;

/// Why a quantity string was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantityError {
    /// The string is empty or not `<number><suffix>`.
    Malformed,
    /// The suffix is not one Kubernetes knows.
    UnknownSuffix,
    /// The value does not fit in the integer type in the unit asked for.
    Overflow,
    /// Negative quantities are not meaningful for resources (the unsigned readers only).
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

/// The magnitude of a quantity, exactly: `digits × 10^exp10 × 2^exp2`.
struct Magnitude {
    digits: u128,
    exp10: i32,
    exp2: u32,
}

/// Largest decimal exponent (`e<N>`) accepted, either sign.
const MAX_EXPONENT: i32 = 30;

impl Magnitude {
    /// Parses an unsigned `<number><suffix>`.
    fn parse(s: &str) -> Result<Magnitude, QuantityError> {
        let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (num, suffix) = s.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(QuantityError::Malformed);
        }
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let mut digits: u128 = 0;
        for c in int_part.bytes().chain(frac_part.bytes()) {
            digits = digits
                .checked_mul(10)
                .and_then(|d| d.checked_add(u128::from(c - b'0')))
                .ok_or(QuantityError::Overflow)?;
        }
        // At most 39 digits fit in a u128, so the fraction's length fits an i32.
        let frac_len = i32::try_from(frac_part.len()).map_err(|_| QuantityError::Overflow)?;
        let (exp10, exp2) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            e if e.starts_with(['e', 'E']) => {
                let exp: i32 = e[1..].parse().map_err(|_| QuantityError::Malformed)?;
                if exp.abs() > MAX_EXPONENT {
                    return Err(QuantityError::Overflow);
                }
                (exp, 0)
            }
            _ => return Err(QuantityError::UnknownSuffix),
        };
        Ok(Magnitude { digits, exp10: exp10 - frac_len, exp2 })
    }

    /// The magnitude in units of `10^-unit_exp10`, rounded up.
    fn scaled(&self, unit_exp10: i32) -> Result<u128, QuantityError> {
        let v = self.digits.checked_mul(1u128 << self.exp2).ok_or(QuantityError::Overflow)?;
        let e = self.exp10 + unit_exp10;
        if e >= 0 {
            10u128.checked_pow(e.unsigned_abs()).and_then(|m| v.checked_mul(m)).ok_or(QuantityError::Overflow)
        } else {
            match 10u128.checked_pow(e.unsigned_abs()) {
                Some(d) => Ok(v.div_ceil(d)),
                // The divisor exceeds any u128: a non-zero value is a tiny fraction of the unit.
                None => Ok(u128::from(v > 0)),
            }
        }
    }
}

/// A non-negative quantity in units of `10^-unit_exp10`, as a u64.
fn unsigned(s: &str, unit_exp10: i32) -> Result<u64, QuantityError> {
    let s = s.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(QuantityError::Negative);
    }
    let v = Magnitude::parse(s)?.scaled(unit_exp10)?;
    u64::try_from(v).map_err(|_| QuantityError::Overflow)
}

/// CPU quantity in millicores (`"250m"` → 250, `"2"` → 2000, `"0.5"` → 500).
pub fn cpu_millis(s: &str) -> Result<u64, QuantityError> {
    unsigned(s, 3)
}

/// Memory or storage quantity in bytes, or a count (`"64Mi"` → 67108864, `"1G"` → 10^9).
pub fn bytes(s: &str) -> Result<u64, QuantityError> {
    unsigned(s, 0)
}

/// Any quantity in nano-units, signed (`"1"` → 10^9, `"100m"` → 10^8, `"-1"` → -10^9).
pub fn nanos(s: &str) -> Result<i128, QuantityError> {
    let s = s.trim();
    let (body, negative) = match s.strip_prefix('-') {
        Some(rest) => (rest, true),
        None => (s.strip_prefix('+').unwrap_or(s), false),
    };
    let v = Magnitude::parse(body)?.scaled(9)?;
    let v = i128::try_from(v).map_err(|_| QuantityError::Overflow)?;
    Ok(if negative { -v } else { v })
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

    #[test]
    fn quantities_in_nano_units() {
        let q = |s: &str| nanos(s).ok();
        assert_eq!(q("1"), Some(1_000_000_000));
        assert_eq!(q("100m"), Some(100_000_000));
        assert_eq!(q("0.1"), Some(100_000_000));
        assert_eq!(q("1Ki"), Some(1024 * 1_000_000_000));
        assert_eq!(q("1.5Gi"), Some(1_610_612_736 * 1_000_000_000));
        assert_eq!(q("1M"), q("1000k"));
        assert_eq!(q("2e3"), q("2k"));
        assert_eq!(q("1n"), Some(1));
        assert_eq!(q("-1"), Some(-1_000_000_000));
        for bad in ["", "m", "1.2.3", "1Q", "1e", "abc", "1ee3", "1e99"] {
            assert_eq!(q(bad), None, "{bad}");
        }
    }

    #[test]
    fn rounds_up_below_the_unit_and_never_panics() {
        assert_eq!(nanos("0.1n"), Ok(1));
        assert_eq!(nanos("-0.1n"), Ok(-1));
        assert_eq!(cpu_millis("1e-3"), Ok(1));
        assert_eq!(cpu_millis("1u"), Ok(1));
        assert_eq!(bytes("0.000000000000000000000000000000000001m"), Ok(1));
        assert_eq!(bytes("0"), Ok(0));
        assert_eq!(bytes("+5k"), Ok(5000));
        assert_eq!(nanos("340282366920938463463374607431768211455"), Err(QuantityError::Overflow));
        assert_eq!(nanos("3402823669209384634633746074317682114550"), Err(QuantityError::Overflow));
        assert_eq!(bytes("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(bytes("18446744073709551616"), Err(QuantityError::Overflow));
    }
}
