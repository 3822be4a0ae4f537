//! Timestamps and durations as dbt Cloud writes them: runs use a space (`2024-07-03 13:59:00.653171+00:00`),
//! jobs a `T`; decoding accepts either, with or without a fraction, `Z` or an offset.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Parses every timestamp spelling the real API and its clients produce.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let with_t = s.replacen(' ', "T", 1);
    if let Ok(t) = DateTime::parse_from_rfc3339(&with_t) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%#z"] {
        if let Ok(t) = DateTime::parse_from_str(&with_t, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    // No offset at all: dbt Cloud stores UTC.
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&with_t, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

macro_rules! timestamp_type {
    ($(#[$doc:meta])* $name:ident, $format:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub DateTime<Utc>);

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0.format($format))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                parse_timestamp(&raw).map($name).ok_or_else(|| {
                    serde::de::Error::custom(format_args!("not a timestamp: {raw:?}"))
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.format($format).fmt(f)
            }
        }

        impl From<DateTime<Utc>> for $name {
            fn from(t: DateTime<Utc>) -> Self {
                Self(t)
            }
        }
    };
}

timestamp_type!(
    /// A run, trigger or step timestamp: written `2024-07-03 13:59:00.653171+00:00`.
    SpacedTimestamp,
    "%Y-%m-%d %H:%M:%S%.6f+00:00"
);
timestamp_type!(
    /// A job timestamp: written `2024-03-25T13:47:20.129690Z`.
    IsoTimestamp,
    "%Y-%m-%dT%H:%M:%S%.6fZ"
);

/// Formats a duration the way dbt Cloud does: `HH:MM:SS`, hours past 24 allowed.
pub fn format_hms(seconds: i64) -> String {
    let s = seconds.max(0);
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Parses `HH:MM:SS` (hours may exceed 24) into seconds.
pub fn parse_hms(s: &str) -> Option<i64> {
    let mut parts = s.trim().split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(0..60).contains(&m) || !(0.0..60.0).contains(&sec) {
        return None;
    }
    Some(h * 3600 + m * 60 + sec as i64)
}

/// A humanized duration as dbt Cloud writes it: `0 minutes`, `9 seconds`, `56 minutes, 48 seconds`,
/// `1 day`.
pub fn humanize_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    if s == 0 {
        return "0 minutes".to_string();
    }
    let units = [
        ("day", 86_400),
        ("hour", 3600),
        ("minute", 60),
        ("second", 1),
    ];
    let mut rest = s;
    let mut parts = Vec::new();
    for (name, size) in units {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
        } else if !parts.is_empty() {
            // Only adjacent units, as the API writes it: 24:00:36 is "1 day".
            break;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        let want = parse_timestamp("2024-07-03T13:59:00.653171Z").unwrap();
        for s in [
            "2024-07-03 13:59:00.653171+00:00",
            "2024-07-03T13:59:00.653171+00:00",
            "2024-07-03 15:59:00.653171+02:00",
            "2024-07-03 13:59:00.653171",
        ] {
            assert_eq!(parse_timestamp(s), Some(want), "{s}");
        }
        assert!(parse_timestamp("2024-07-03 13:59:00+00:00").is_some());
        assert!(parse_timestamp("2024-07-03T13:59:00Z").is_some());
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn formats_as_the_api_does() {
        let t = parse_timestamp("2024-07-03T13:59:00.653171Z").unwrap();
        assert_eq!(
            SpacedTimestamp(t).to_string(),
            "2024-07-03 13:59:00.653171+00:00"
        );
        assert_eq!(IsoTimestamp(t).to_string(), "2024-07-03T13:59:00.653171Z");
        assert_eq!(format_hms(90_061), "25:01:01");
        assert_eq!(parse_hms("25:01:01"), Some(90_061));
        assert_eq!(humanize_duration(9), "9 seconds");
        assert_eq!(humanize_duration(3408), "56 minutes, 48 seconds");
        assert_eq!(humanize_duration(86_400), "1 day");
        assert_eq!(humanize_duration(0), "0 minutes");
        assert_eq!(humanize_duration(86_436), "1 day");
        assert_eq!(humanize_duration(110), "1 minute, 50 seconds");
    }
}
