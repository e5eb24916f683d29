//! Which dead letters a replay takes: by kind (`--filter-kind`) and by the time they were
//! dead-lettered (`--since`, `--until`). Pure, so every case is a unit test.

use crate::plugin::ErrorKind;
use crate::router::{BAD_INPUT, UNDELIVERABLE};

/// Every dead-letter kind Switchyard writes, in the order the help lists them.
pub fn known_kinds() -> Vec<&'static str> {
    let mut kinds: Vec<&'static str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
    kinds.extend([UNDELIVERABLE, BAD_INPUT]);
    kinds
}

/// The dead letters to replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only these kinds; empty: every kind.
    pub kinds: Vec<String>,
    /// Only dead letters written at or after this instant (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only dead letters written before this instant (ms since the epoch).
    pub until_ms: Option<i64>,
}

impl Selection {
    /// From the command line's values: kinds repeated or comma-separated, each one Switchyard
    /// writes; times as RFC 3339 or ms since the epoch, `since` before `until`.
    pub fn parse(
        kinds: &[String],
        since: Option<&str>,
        until: Option<&str>,
    ) -> anyhow::Result<Selection> {
        let known = known_kinds();
        let mut chosen = Vec::new();
        for kind in kinds.iter().flat_map(|k| k.split(',')).map(str::trim) {
            if kind.is_empty() {
                continue;
            }
            anyhow::ensure!(
                known.contains(&kind),
                "--filter-kind: unknown kind {kind:?}; the kinds are {}",
                known.join(", ")
            );
            if !chosen.iter().any(|k| k == kind) {
                chosen.push(kind.to_owned());
            }
        }
        let since_ms = since
            .map(|t| parse_time(t).map_err(|e| anyhow::anyhow!("--since: {e}")))
            .transpose()?;
        let until_ms = until
            .map(|t| parse_time(t).map_err(|e| anyhow::anyhow!("--until: {e}")))
            .transpose()?;
        if let (Some(since), Some(until)) = (since_ms, until_ms) {
            anyhow::ensure!(since < until, "--since must be before --until");
        }
        Ok(Selection {
            kinds: chosen,
            since_ms,
            until_ms,
        })
    }

    /// Why a dead letter of `kind`, written at `at_ms`, is not taken; `None` if it is. A
    /// dead letter with no time is outside any time window.
    pub fn skips(&self, kind: &str, at_ms: Option<i64>) -> Option<String> {
        if !self.kinds.is_empty() && !self.kinds.iter().any(|k| k == kind) {
            return Some(format!("kind {kind} not selected"));
        }
        if self.since_ms.is_none() && self.until_ms.is_none() {
            return None;
        }
        let Some(at) = at_ms else {
            return Some("no dead-letter time".into());
        };
        if self.since_ms.is_some_and(|since| at < since) {
            return Some("dead-lettered before --since".into());
        }
        if self.until_ms.is_some_and(|until| at >= until) {
            return Some("dead-lettered at or after --until".into());
        }
        None
    }
}

/// An instant as milliseconds since the Unix epoch: digits alone are already that; anything
/// else must be RFC 3339 (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.250+02:00`; a space
/// may stand for the `T`; fractions finer than a millisecond are cut).
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .map_err(|_| format!("{text:?} is too large for ms since the epoch"));
    }
    rfc3339(text).ok_or_else(|| {
        format!(
            "{text:?} is neither ms since the epoch nor an RFC 3339 time such as 2024-05-01T12:00:00Z"
        )
    })
}

fn rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let days_in_month = *month_days.get(usize::try_from(month).ok()?.checked_sub(1)?)?;
    // A leap second (60) is read as the second before the next minute.
    if !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if at(i, b".") {
        let start = i + 1;
        i = start;
        while at(i, b"0123456789") {
            i += 1;
        }
        if i == start {
            return None;
        }
        let mut fraction = text.get(start..i)?.to_owned();
        fraction.truncate(3);
        while fraction.len() < 3 {
            fraction.push('0');
        }
        millis = fraction.parse::<i64>().ok()?;
    }
    let offset_minutes = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && at(i + 3, b":") => {
            let (h, m) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_rfc_3339_and_epoch_ms() {
        let cases: [(&str, Option<i64>); 16] = [
            ("0", Some(0)),
            ("1700000000123", Some(1_700_000_000_123)),
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2023-11-14T22:13:20Z", Some(1_700_000_000_000)),
            ("2023-11-14T22:13:20.123Z", Some(1_700_000_000_123)),
            ("2023-11-14T22:13:20.1239999Z", Some(1_700_000_000_123)),
            ("2023-11-14t22:13:20.5z", Some(1_700_000_000_500)),
            ("2023-11-14 23:13:20+01:00", Some(1_700_000_000_000)),
            ("2023-11-14T17:13:20-05:00", Some(1_700_000_000_000)),
            ("2024-02-29T00:00:00Z", Some(1_709_164_800_000)),
            ("2023-02-29T00:00:00Z", None),
            ("2023-11-14T22:13:20", None),
            ("2023-11-14", None),
            ("2023-11-14T25:00:00Z", None),
            ("2023-11-14T22:13:20.Z", None),
            ("yesterday", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_time(text).ok(), expected, "{text}");
        }
        assert!(
            parse_time("soon")
                .unwrap_err()
                .contains("neither ms since the epoch nor an RFC 3339 time")
        );
    }

    #[test]
    fn kinds_are_checked_and_times_ordered() {
        let s = Selection::parse(&["trap,timeout".into(), "trap".into()], None, None)
            .expect("valid kinds");
        assert_eq!(s.kinds, ["trap", "timeout"]);
        let error = Selection::parse(&["crash".into()], None, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown kind \"crash\""), "{error}");
        assert!(
            error.contains(
                "trap, timeout, memory, bad-output, rejected, state-full, undeliverable, bad-input"
            ),
            "{error}"
        );
        assert!(Selection::parse(&[], Some("20"), Some("10")).is_err());
        assert!(Selection::parse(&[], Some("soon"), None).is_err());
    }

    #[test]
    fn a_selection_says_why_it_skips() {
        let s = Selection {
            kinds: vec!["trap".into()],
            since_ms: Some(100),
            until_ms: Some(200),
        };
        assert_eq!(s.skips("trap", Some(100)), None);
        assert_eq!(s.skips("trap", Some(199)), None);
        assert_eq!(
            s.skips("timeout", Some(150)).as_deref(),
            Some("kind timeout not selected")
        );
        assert!(s.skips("trap", Some(99)).is_some());
        assert!(s.skips("trap", Some(200)).is_some());
        assert!(s.skips("trap", None).is_some());
        assert_eq!(Selection::default().skips("anything", None), None);
    }
}
