//! The one duration grammar: `500ms`, `30s`, `2m`, `1h` or sums like `1m30s`. The config file (`ambassador.timeout`),
//! the webhook's flags and the ambassador's flags all parse with it, so a value the config accepts is a value
//! the injected ambassador accepts (`timeout: "0s"` once loaded and made every ambassador exit at start).

use std::time::Duration;

/// Parses a duration such as `500ms`, `30s`, `2m`, `1h` or a sum like `1m30s` (a clap value parser too).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?}: expected e.g. 500ms, 30s, 2m, 1h or 1m30s");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            _ => return Err(invalid()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Like [`parse_duration`], but zero is refused: a zero timeout would fail every request.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!("timeout {text:?} must be greater than zero")),
        d => Ok(d),
    }
}

/// The longest drain period: past the kubelet's grace period (30 s by default) the container is killed anyway.
pub const MAX_DRAIN_PERIOD: Duration = Duration::from_secs(300);

/// Like [`parse_duration`], for how long a classic-mode runtime keeps serving after SIGTERM: zero (stop at once)
/// up to [`MAX_DRAIN_PERIOD`]. Config (`sidecars.drainPeriod`) and the runtimes' `--drain-period` both use it.
pub fn parse_drain_period(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d > MAX_DRAIN_PERIOD => Err(format!(
            "drain period {text:?} is longer than {}: the kubelet kills the container long before",
            format_duration(MAX_DRAIN_PERIOD)
        )),
        d => Ok(d),
    }
}

/// Formats a duration the way the flags take it (`30s`, `500ms`), for messages.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_compound_durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_durations_without_unit_or_number() {
        for bad in ["", "30", "s", "1.5s", "10 s", "3d", "-1s", "ms5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn refuses_zero_timeouts() {
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("0ms").is_err());
        assert_eq!(parse_timeout("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn drain_periods_run_from_zero_to_five_minutes() {
        assert_eq!(parse_drain_period("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_drain_period("5m"), Ok(MAX_DRAIN_PERIOD));
        assert!(parse_drain_period("5m1s").unwrap_err().contains("longer than 300s"));
        assert!(parse_drain_period("soon").is_err());
    }

    #[test]
    fn formats_durations_like_the_flags() {
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
