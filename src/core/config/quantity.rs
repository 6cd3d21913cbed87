//! Kubernetes resource quantities (`64Mi`, `100m`, `1.5G`, `2e3`), parsed the way the apiserver parses them so
//! that two quantities compare by value: `1Gi` is more than `1G`, `1M` is a million times `1m`.
//!
//! k8s-openapi's `Quantity` is a string wrapper without arithmetic, and no maintained crate parses this grammar,
//! so this is the apiserver's grammar (`k8s.io/apimachinery/pkg/api/resource`):
//! `<number><suffix>`, where the number is decimal (`1`, `1.5`, `.5`, `5.`) and the suffix is binary SI
//! (`Ki Mi Gi Ti Pi Ei`), decimal SI (`n u m "" k M G T P E`) or a decimal exponent (`e3`, `E-2`). Like the
//! apiserver, a value finer than a nano-unit rounds up. Resources are never negative, so a sign is refused.

use super::Quantity;

/// A quantity's value in nano-units (`1` is 10⁹, `1m` is 10⁶): exact for every quantity the apiserver keeps
/// (it rounds finer values up to the nano-unit too), and large enough for `8Ei` (≈ 9.2 × 10²⁷).
pub type Nanos = u128;

/// Why a text is not a resource quantity; phrased to follow the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not `<number><suffix>`.
    #[error("is not a Kubernetes quantity (a number and an optional suffix, such as 100m, 64Mi or 1G)")]
    Malformed,
    /// A sign: resources are never negative.
    #[error("is negative; a resource quantity is zero or more")]
    Negative,
    /// Past what a quantity can hold.
    #[error("is too large for a Kubernetes quantity")]
    TooLarge,
}

/// The most digits a number may have: beyond that the value overflows or carries precision the apiserver drops.
const MAX_DIGITS: usize = 30;

impl Quantity {
    /// The value in nano-units, or why the text is not a quantity.
    pub fn nanos(&self) -> Result<Nanos, QuantityError> {
        parse(&self.0)
    }

    /// Whether the text is a quantity the apiserver accepts for a resource.
    pub fn is_valid(&self) -> bool {
        self.nanos().is_ok()
    }
}

/// Parses `text` into nano-units.
pub fn parse(text: &str) -> Result<Nanos, QuantityError> {
    let unsigned = match text.as_bytes().first() {
        Some(b'-') => return Err(QuantityError::Negative),
        Some(b'+') => &text[1..],
        _ => text,
    };
    let number_end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(QuantityError::Malformed);
    }
    let (exp10, exp2): (i32, u32) = match suffix {
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "" => (0, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        exponent => (decimal_exponent(exponent)?, 0),
    };
    let digits = whole.trim_start_matches('0').len() + fraction.len();
    if digits > MAX_DIGITS {
        return Err(QuantityError::TooLarge);
    }
    // All the digits as one integer, then scaled: value = mantissa × 10^(exp10 + 9 − |fraction|) × 2^exp2.
    let mantissa = whole
        .bytes()
        .chain(fraction.bytes())
        .fold(0u128, |acc, d| acc * 10 + u128::from(d - b'0'));
    let scale = exp10 + 9 - i32::try_from(fraction.len()).map_err(|_| QuantityError::TooLarge)?;
    let binary = mantissa.checked_shl(exp2).filter(|v| v >> exp2 == mantissa);
    let binary = binary.ok_or(QuantityError::TooLarge)?;
    if scale >= 0 {
        10u128
            .checked_pow(scale.unsigned_abs())
            .and_then(|p| binary.checked_mul(p))
            .ok_or(QuantityError::TooLarge)
    } else {
        // Finer than a nano-unit: round up, as the apiserver does.
        match 10u128.checked_pow(scale.unsigned_abs()) {
            Some(p) => Ok(binary.div_ceil(p)),
            None => Ok(u128::from(binary > 0)),
        }
    }
}

/// `e3`, `E-2`, `e+6`: a decimal exponent suffix, as an integer.
fn decimal_exponent(suffix: &str) -> Result<i32, QuantityError> {
    let digits = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))
        .ok_or(QuantityError::Malformed)?;
    let unsigned = digits.trim_start_matches(['+', '-']);
    if unsigned.is_empty() || digits.len() - unsigned.len() > 1 || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QuantityError::Malformed);
    }
    // A large positive exponent overflows any quantity; a large negative one only rounds up to a nano-unit.
    let value: u32 = unsigned.parse().unwrap_or(u32::MAX);
    if digits.starts_with('-') {
        Ok(-i32::try_from(value.min(100)).unwrap_or(100))
    } else if value > 40 {
        Err(QuantityError::TooLarge)
    } else {
        Ok(i32::try_from(value).unwrap_or(40))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> Nanos {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn suffixes_scale_by_their_kubernetes_meaning() {
        assert_eq!(n("1"), 1_000_000_000);
        assert_eq!(n("100m"), 100_000_000);
        assert_eq!(n("1k"), 1_000 * n("1"));
        assert_eq!(n("64Mi"), 64 * 1024 * 1024 * n("1"));
        assert_eq!(n("1G"), 1_000_000_000 * n("1"));
        assert_eq!(n("1Ei"), (1u128 << 60) * n("1"));
        assert_eq!(n("1n"), 1);
        assert_eq!(n("1u"), 1_000);
        assert_eq!(n("2e3"), n("2k"));
        assert_eq!(n("1E-3"), n("1m"));
        assert_eq!(n("1e+6"), n("1M"));
    }

    #[test]
    fn milli_mega_and_mebi_are_told_apart() {
        assert!(n("1m") < n("1"));
        assert!(n("1M") < n("1Mi"));
        assert_eq!(n("1M") / n("1m"), 1_000_000_000);
        assert!(n("1Gi") > n("1G"));
        assert!(n("1000Mi") < n("1Gi"));
        assert!(n("1024Mi") == n("1Gi"));
        assert!(n("0.5") == n("500m"));
        assert!(n("1.5Gi") == n("1536Mi"));
        assert!(n(".5") == n("0.5") && n("5.") == n("5"));
    }

    #[test]
    fn values_finer_than_a_nano_unit_round_up() {
        assert_eq!(n("0.1n"), 1);
        assert_eq!(n("1e-12"), 1);
        assert_eq!(n("0"), 0);
        assert_eq!(n("0e-50"), 0);
    }

    #[test]
    fn malformed_negative_and_huge_quantities_are_refused() {
        for bad in [
            "", "Mi", "1.2.3", "10 Mi", "lots", "1mi", "1KI", "1e", "1e--3", "1ee3", ".", "1.5.", "0x10",
        ] {
            assert_eq!(parse(bad), Err(QuantityError::Malformed), "{bad}");
        }
        assert_eq!(parse("-1"), Err(QuantityError::Negative));
        assert_eq!(parse("+1"), Ok(n("1")));
        for huge in ["1e41", "100000000000000000000000000000000", "1000000000000000000000Ei"] {
            assert_eq!(parse(huge), Err(QuantityError::TooLarge), "{huge}");
        }
        assert_eq!(n("8Ei"), 8 * (1u128 << 60) * 1_000_000_000);
    }
}
