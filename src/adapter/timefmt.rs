//! Record times as RFC 3339 with an offset, whatever the source wrote.
//!
//! Backends index one time key in one format; apps write times in a dozen. An RFC 3339 time is kept as written;
//! another source time that carries an offset keeps its instant and offset. One without a zone (`2024-05-01 12:00:00,123` from Python's logging, Go's
//! `2024/05/01 12:00:00`, most regex captures) is read in the configured zone (`adapter.timeZone`, `--time-zone`,
//! default UTC: the zone the cluster's apps log in). One without a year (syslog RFC 3164 `May  1 12:00:00`) takes
//! the year of the file's clock (the read time), the previous year when that would put it more than a month ahead
//! (a December line read in January). A time that matches none of these is left as written.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, Offset, SecondsFormat, TimeZone};
use chrono_tz::Tz;

/// Layouts with an offset, tried in order after RFC 3339 itself.
const WITH_OFFSET: &[&str] = &[
    "%Y-%m-%d %H:%M:%S%.f%:z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f %z",
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%d/%b/%Y:%H:%M:%S %z",
];

/// Layouts without a zone.
const NAIVE: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y/%m/%d %H:%M:%S%.f",
    "%d/%b/%Y:%H:%M:%S",
];

/// The time `raw` stands for, as RFC 3339 with an offset; `None` when it matches no known layout (the caller then
/// keeps it as written). `read` is the file's clock (UTC) and `zone` the zone of times written without one.
pub(crate) fn normalize(raw: &str, read: DateTime<FixedOffset>, zone: Tz) -> Option<String> {
    let raw = raw.trim();
    if raw.len() < 8 || raw.len() > 48 {
        return None;
    }
    if let Some(time) = iso(raw, zone) {
        return time;
    }
    // Python's logging writes milliseconds after a comma; chrono reads fractions after a dot.
    let dotted;
    let text = match raw.as_bytes().get(19) {
        Some(b',') => {
            dotted = format!("{}.{}", &raw[..19], &raw[20..]);
            dotted.as_str()
        }
        _ => raw,
    };
    for layout in WITH_OFFSET {
        if let Ok(t) = DateTime::parse_from_str(text, layout) {
            return Some(render(t));
        }
    }
    for layout in NAIVE {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, layout) {
            return in_zone(naive, zone);
        }
    }
    without_year(text, read, zone)
}

/// The layouts apps write most (`2024-05-01T12:00:00Z`, `2024-05-01 12:00:00,123`, `2024/05/01 12:00:00.123456`,
/// `2024-05-01 12:00:00 +0200`), read by hand: chrono's format parser, tried layout after layout, costs more than
/// parsing the rest of the line. `None` when `raw` does not have this shape; `Some(None)` when it has, but names no
/// valid time. An RFC 3339 time is kept byte for byte (`Z` stays `Z`, the fraction keeps its digits); others get
/// the fraction padded to 3, 6 or 9 digits and an offset (`+00:00` for UTC).
fn iso(raw: &str, zone: Tz) -> Option<Option<String>> {
    let b = raw.as_bytes();
    let number = |at: usize, len: usize| -> Option<u32> {
        b.get(at..at + len)?
            .iter()
            .try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let sep = *b.get(4)?;
    let shape = matches!(sep, b'-' | b'/')
        && b.get(7) == Some(&sep)
        && matches!(b.get(10), Some(b'T' | b' '))
        && b.get(13) == Some(&b':')
        && b.get(16) == Some(&b':');
    if !shape {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    let (hour, minute, second) = (number(11, 2)?, number(14, 2)?, number(17, 2)?);
    let mut at = 19;
    let mut fraction = "";
    if matches!(b.get(at), Some(b'.' | b',')) {
        let len = b[at + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        fraction = &raw[at + 1..at + 1 + len];
        at += 1 + len;
    }
    let rest = &raw[at..];
    let written_offset = match rest {
        "" => None,
        "Z" | "z" => Some(0),
        _ => {
            let r = rest.strip_prefix(' ').unwrap_or(rest).as_bytes();
            let sign = match r.first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = match r.len() {
                6 if r[3] == b':' => (&r[1..3], &r[4..6]),
                5 => (&r[1..3], &r[3..5]),
                _ => return None,
            };
            let two = |d: &[u8]| {
                d.iter()
                    .try_fold(0i32, |n, &c| c.is_ascii_digit().then(|| n * 10 + i32::from(c - b'0')))
            };
            Some(sign * (two(h)? * 3600 + two(m)? * 60))
        }
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day);
    let Some(naive) = date.and_then(|d| d.and_hms_opt(hour, minute, second)) else {
        return Some(None);
    };
    let rfc3339 = sep == b'-'
        && b[10] == b'T'
        && b.get(19) != Some(&b',')
        && (rest.len() == 1 || rest.as_bytes().get(3) == Some(&b':'));
    if written_offset.is_some() && rfc3339 {
        return Some(Some(raw.to_owned()));
    }
    let offset = match written_offset {
        Some(seconds) => seconds,
        None if zone == Tz::UTC => 0,
        None => match zone.offset_from_local_datetime(&naive).earliest() {
            Some(o) => o.fix().local_minus_utc(),
            None => return Some(None),
        },
    };
    // Each field was read from exactly its width: its digits as written are the ones `{:02}` would write, and
    // copying them costs less than formatting (which took longer than the rest of this function).
    let mut out = String::with_capacity(35);
    for (field, then) in [
        (&raw[..4], "-"),
        (&raw[5..7], "-"),
        (&raw[8..10], "T"),
        (&raw[11..19], ""),
    ] {
        out.push_str(field);
        out.push_str(then);
    }
    if !fraction.is_empty() {
        let width: usize = match fraction.len() {
            0..=3 => 3,
            4..=6 => 6,
            _ => 9,
        };
        out.push('.');
        out.push_str(&fraction[..fraction.len().min(9)]);
        out.extend(std::iter::repeat_n('0', width.saturating_sub(fraction.len())));
    }
    let (sign, abs) = if offset < 0 { ('-', -offset) } else { ('+', offset) };
    out.push(sign);
    push_padded(&mut out, abs.unsigned_abs() / 3600, 2);
    out.push(':');
    push_padded(&mut out, abs.unsigned_abs() % 3600 / 60, 2);
    Some(Some(out))
}

/// `n` in decimal, zero-padded to `width` digits (as `{n:0width$}`).
fn push_padded(out: &mut String, n: u32, width: usize) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for _ in digits.len() - at..width {
        out.push('0');
    }
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

/// `May  1 12:00:00` (RFC 3164): the year from the read time, the previous one if that puts the time more than a
/// month ahead of it.
fn without_year(text: &str, read: DateTime<FixedOffset>, zone: Tz) -> Option<String> {
    let year = read.year();
    let parse = |year: i32| NaiveDateTime::parse_from_str(&format!("{year} {text}"), "%Y %b %e %H:%M:%S%.f").ok();
    let naive = parse(year)?;
    let month_ahead = read.naive_utc().checked_add_signed(chrono::Duration::days(31))?;
    let naive = if naive > month_ahead { parse(year - 1)? } else { naive };
    in_zone(naive, zone)
}

/// A wall-clock time in `zone`; in the hour a DST change repeats, the earlier instant.
fn in_zone(naive: NaiveDateTime, zone: Tz) -> Option<String> {
    let t = zone.from_local_datetime(&naive).earliest()?;
    Some(render(t.fixed_offset()))
}

fn render(t: DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z").unwrap()
    }

    fn norm(raw: &str, zone: &str) -> Option<String> {
        normalize(raw, read(), zone.parse().unwrap())
    }

    #[test]
    fn times_with_an_offset_keep_their_instant_and_offset() {
        for (raw, want) in [
            ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"),
            ("2024-05-01T12:00:00.123456+02:00", "2024-05-01T12:00:00.123456+02:00"),
            ("2024-05-01 12:00:00+0200", "2024-05-01T12:00:00+02:00"),
            ("2024-05-01 12:00:00.5 -0700", "2024-05-01T12:00:00.500-07:00"),
            ("10/Oct/2000:13:55:36 -0700", "2000-10-10T13:55:36-07:00"),
        ] {
            assert_eq!(norm(raw, "Asia/Tokyo").as_deref(), Some(want), "{raw}");
        }
    }

    #[test]
    fn times_without_a_zone_are_read_in_the_configured_zone() {
        assert_eq!(
            norm("2024-05-01 12:00:00,123", "Europe/Paris").as_deref(),
            Some("2024-05-01T12:00:00.123+02:00")
        );
        assert_eq!(
            norm("2024/01/15 08:30:00", "Europe/Paris").as_deref(),
            Some("2024-01-15T08:30:00+01:00")
        );
        assert_eq!(
            norm("2024-05-01T12:00:00", "UTC").as_deref(),
            Some("2024-05-01T12:00:00+00:00")
        );
    }

    #[test]
    fn times_without_a_year_take_the_read_times_year_or_the_one_before() {
        assert_eq!(
            norm("Apr 30 23:59:58", "UTC").as_deref(),
            Some("2024-04-30T23:59:58+00:00")
        );
        assert_eq!(
            norm("May  1 12:00:00", "America/New_York").as_deref(),
            Some("2024-05-01T12:00:00-04:00")
        );
        // Read on 2024-05-01: a December line is last year's.
        assert_eq!(
            norm("Dec 31 23:00:00", "UTC").as_deref(),
            Some("2023-12-31T23:00:00+00:00")
        );
    }

    #[test]
    fn the_hand_reader_agrees_with_chrono_on_the_common_layouts() {
        for raw in [
            "2024-05-01 12:00:00",
            "2024-05-01 12:00:00,1",
            "2024-05-01T12:00:00.1234",
            "2024/05/01 12:00:00.123456789",
            "2024-05-01 23:59:59+0530",
            "2024-05-01 00:00:00 -0130",
            "2024-02-29 12:00:00",
        ] {
            let by_hand = iso(raw, chrono_tz::Tz::UTC).unwrap().unwrap();
            let text = raw.replacen(',', ".", 1).replacen('/', "-", 2).replacen('T', " ", 1);
            let naive = NaiveDateTime::parse_from_str(&text[..19], "%Y-%m-%d %H:%M:%S").unwrap();
            let parsed = DateTime::parse_from_rfc3339(&by_hand).unwrap();
            assert_eq!(
                parsed.naive_local().format("%Y-%m-%d %H:%M:%S").to_string(),
                naive.format("%Y-%m-%d %H:%M:%S").to_string(),
                "{raw}"
            );
        }
        assert_eq!(iso("2023-02-29 12:00:00", chrono_tz::Tz::UTC), Some(None));
        assert_eq!(iso("May  1 12:00:00", chrono_tz::Tz::UTC), None);
    }

    #[test]
    fn a_time_that_matches_no_layout_is_left_to_the_caller() {
        for raw in ["yesterday", "", "12:00", "2024-13-01 00:00:00", "1714564800"] {
            assert_eq!(norm(raw, "UTC"), None, "{raw}");
        }
    }

    #[test]
    fn padded_digits_are_what_format_writes() {
        for (n, width) in [
            (0, 2),
            (7, 2),
            (59, 2),
            (100, 2),
            (5, 4),
            (2024, 4),
            (12345, 4),
            (u32::MAX, 2),
        ] {
            let mut out = String::new();
            push_padded(&mut out, n, width);
            assert_eq!(out, format!("{n:0width$}"));
        }
    }

    #[test]
    fn a_wall_time_repeated_by_a_dst_change_is_the_earlier_instant() {
        assert_eq!(
            norm("2024-10-27 02:30:00", "Europe/Paris").as_deref(),
            Some("2024-10-27T02:30:00+02:00")
        );
    }
}
