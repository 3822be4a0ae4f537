//! What a person reads: instants to the second in a pipeline's zone and in UTC, durations in
//! whole units, the reason an attempt ended in words, and counts that never print as `-0`.
//! Pure formatting (no clock, no IO), shared by the engine's transition texts, the CLI, the demo,
//! the status pages and the benchmark table.

use crate::engine::state::{Attempt, AttemptOutcome, CancelReason};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::time::Duration;

/// `2026-12-06 00:01:57 UTC`: to the second, never nanoseconds.
pub fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `2026-12-06 01:01:57 CET (00:01:57 UTC)` in a zone other than UTC, `utc(at)` in UTC. The UTC
/// part carries its date too when the day differs.
pub fn when(at: DateTime<Utc>, zone: Tz) -> String {
    if zone == chrono_tz::UTC {
        return utc(at);
    }
    let local = at.with_timezone(&zone);
    let same_day = local.date_naive() == at.date_naive();
    let utc_part = if same_day {
        at.format("%H:%M:%S UTC").to_string()
    } else {
        utc(at)
    };
    format!("{} ({utc_part})", local.format("%Y-%m-%d %H:%M:%S %Z"))
}

/// `1h 2m 5s`, `45s`, `0s`: whole seconds, the two largest units that are not zero.
pub fn duration(d: Duration) -> String {
    let total = d.as_secs() + u64::from(d.subsec_millis() >= 500);
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let d_ = h / 24;
    match (d_, h % 24, m, s) {
        (0, 0, 0, s) => format!("{s}s"),
        (0, 0, m, 0) => format!("{m}m"),
        (0, 0, m, s) => format!("{m}m {s}s"),
        (0, h, 0, _) => format!("{h}h"),
        (0, h, m, _) => format!("{h}h {m}m"),
        (d, 0, _, _) => format!("{d}d"),
        (d, h, _, _) => format!("{d}d {h}h"),
    }
}

/// The span between two instants as `duration` (zero when `to` is before `from`).
pub fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    duration((to - from).to_std().unwrap_or_default())
}

/// The zone a pipeline's times are read in: its schedule's, UTC without one.
pub fn zone_of(pipeline: &crate::model::pipeline::Pipeline) -> Tz {
    pipeline
        .schedule
        .as_ref()
        .map_or(chrono_tz::UTC, |s| s.timezone)
}

/// Why an attempt of `step` ended, in words (`attempt_reason` with the step's limits).
pub fn step_attempt_reason(
    attempt: &Attempt,
    step: Option<&crate::model::pipeline::Step>,
) -> Option<String> {
    attempt_reason(
        attempt,
        step.and_then(|s| s.limits.timeout),
        step.and_then(|s| s.limits.queue_timeout),
    )
}

/// A count or a rounded figure with `decimals` decimals, never `-0` (nor `-0.0`).
pub fn number(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    match text.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => text,
    }
}

/// Why an attempt ended, in words: baton's own timeouts and cancels say so (with dbt Cloud's
/// confirmation) instead of only dbt Cloud's `Cancelled by user.`; other outcomes keep dbt Cloud's
/// message. `timeout`, `queue_timeout`: the step's limits, for the sentence.
pub fn attempt_reason(
    attempt: &Attempt,
    timeout: Option<Duration>,
    queue_timeout: Option<Duration>,
) -> Option<String> {
    let confirmed = "cancel confirmed by dbt Cloud";
    let limit =
        |d: Option<Duration>| d.map_or(String::new(), |d| format!(" after {}", duration(d)));
    let cancel_reason = attempt.cancel.as_ref().map(|c| c.reason);
    let message = attempt.message.clone().filter(|m| !m.trim().is_empty());
    match (attempt.outcome?, cancel_reason) {
        (AttemptOutcome::TimedOut, Some(CancelReason::Timeout)) => {
            Some(format!("timed out{}; {confirmed}", limit(timeout)))
        }
        (AttemptOutcome::TimedOut, _) => Some(match message {
            Some(m) => format!("timed out in dbt Cloud: {m}"),
            None => "timed out in dbt Cloud".to_string(),
        }),
        (AttemptOutcome::QueueTimedOut, _) => Some(format!(
            "queued in dbt Cloud for too long (queue_timeout{}); {confirmed}",
            limit(queue_timeout)
        )),
        (AttemptOutcome::CancelledByBaton, Some(reason)) => {
            let why = match reason {
                CancelReason::Operator => "an operator cancelled the pipeline run",
                CancelReason::Superseded => "a newer run replaced it (concurrency: cancel_running)",
                CancelReason::Shutdown => "the daemon shut down (on_shutdown: cancel)",
                CancelReason::Timeout => "timed out",
                CancelReason::QueueTimeout => "queued for too long",
            };
            Some(format!("cancelled: {why}; {confirmed}"))
        }
        (AttemptOutcome::CancelledOutside, _) => Some(match message {
            Some(m) => format!("cancelled outside baton: {m}"),
            None => "cancelled outside baton".to_string(),
        }),
        (AttemptOutcome::Success, _) => message,
        (outcome, _) => Some(message.unwrap_or_else(|| outcome.name().replace('_', " "))),
    }
}

/// What a cancel request was for, in words.
pub fn cancel_reason(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::Timeout => "the step's timeout passed",
        CancelReason::QueueTimeout => "the step's queue_timeout passed",
        CancelReason::Operator => "an operator cancelled the pipeline run",
        CancelReason::Superseded => "a newer run replaced it",
        CancelReason::Shutdown => "the daemon shut down",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn instants_are_to_the_second_in_the_zone_and_utc() {
        let at = t("2026-12-06T00:01:57.616959156Z");
        assert_eq!(utc(at), "2026-12-06 00:01:57 UTC");
        assert_eq!(when(at, chrono_tz::UTC), "2026-12-06 00:01:57 UTC");
        assert_eq!(
            when(at, chrono_tz::Europe::Amsterdam),
            "2026-12-06 01:01:57 CET (00:01:57 UTC)"
        );
        assert_eq!(
            when(at, chrono_tz::America::New_York),
            "2026-12-05 19:01:57 EST (2026-12-06 00:01:57 UTC)"
        );
    }

    #[test]
    fn durations_read_as_words() {
        let s = Duration::from_secs;
        assert_eq!(duration(s(0)), "0s");
        assert_eq!(duration(Duration::from_millis(1_600)), "2s");
        assert_eq!(duration(s(120)), "2m");
        assert_eq!(duration(s(125)), "2m 5s");
        assert_eq!(duration(s(3600 + 120 + 5)), "1h 2m");
        assert_eq!(duration(s(86_400 * 2 + 3600)), "2d 1h");
    }

    #[test]
    fn no_negative_zero() {
        assert_eq!(number(-0.0, 0), "0");
        assert_eq!(number(-0.0001, 2), "0.00");
        assert_eq!(number(-1.5, 1), "-1.5");
        assert_eq!(number(3.0, 0), "3");
    }
}
