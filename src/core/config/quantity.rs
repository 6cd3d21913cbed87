//! Kubernetes resource quantities (`64Mi`, `100m`) as config holds them: checked at load, converted to bytes
//! where a runtime needs a number (the readers' backlog warning is a share of the log volume's `sizeLimit`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Kubernetes resource quantity (`64Mi`, `100m`), checked at load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

impl Quantity {
    /// Whether the text has the shape the apiserver accepts: a decimal number and an optional suffix.
    pub fn is_valid(&self) -> bool {
        let s = self.0.as_str();
        let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, suffix) = s.split_at(number_end);
        let number_ok = !number.is_empty() && number.matches('.').count() <= 1 && number != ".";
        let suffix_ok = matches!(
            suffix,
            "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
        );
        number_ok && suffix_ok
    }

    /// The quantity in bytes (rounded down), if it is valid.
    pub fn bytes(&self) -> Option<u64> {
        if !self.is_valid() {
            return None;
        }
        let s = self.0.as_str();
        let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, suffix) = s.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let (multiplier, divisor): (u128, u128) = match suffix {
            "m" => (1, 1000),
            "" => (1, 1),
            "k" => (1000, 1),
            "M" => (1000u128.pow(2), 1),
            "G" => (1000u128.pow(3), 1),
            "T" => (1000u128.pow(4), 1),
            "P" => (1000u128.pow(5), 1),
            "E" => (1000u128.pow(6), 1),
            "Ki" => (1 << 10, 1),
            "Mi" => (1 << 20, 1),
            "Gi" => (1 << 30, 1),
            "Ti" => (1 << 40, 1),
            "Pi" => (1 << 50, 1),
            _ => (1 << 60, 1),
        };
        // Exact: the digits as an integer, scaled by the fraction's length.
        let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
        let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
        let bytes = digits.checked_mul(multiplier)? / divisor / scale;
        u64::try_from(bytes).ok()
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_the_kubernetes_shape() {
        for ok in ["64Mi", "100m", "1", "0.5", "2Gi", "1k"] {
            assert!(Quantity(ok.into()).is_valid(), "{ok}");
        }
        for bad in ["", "Mi", "1.2.3", "10 Mi", "lots", "-1"] {
            assert!(!Quantity(bad.into()).is_valid(), "{bad}");
        }
    }

    #[test]
    fn quantities_convert_to_bytes_as_the_apiserver_counts_them() {
        for (q, bytes) in [
            ("256Mi", Some(256 << 20)),
            ("1.5Gi", Some(3 << 29)),
            ("100M", Some(100_000_000)),
            ("1k", Some(1000)),
            ("2500m", Some(2)),
            ("7", Some(7)),
            ("lots", None),
            ("99999Ei", None),
        ] {
            assert_eq!(Quantity(q.into()).bytes(), bytes, "{q}");
        }
    }
}
