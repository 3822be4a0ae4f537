//! Schedule math: a 5-field cron expression evaluated in an IANA time zone (croner 4 + chrono-tz),
//! next tick, previous tick and the ticks missed between two instants.
//!
//! Semantics (Vixie cron, as croner 4 implements them and our tests pin down):
//! - when both day-of-month and day-of-week are restricted, a day matching either fires;
//! - a fixed-time job (one minute, one hour) whose wall time falls in a spring-forward gap fires
//!   once, at the first instant after the gap; on a fall-back day it fires once, at the first of
//!   the two repeated wall times;
//! - an interval job (`*/15 * * * *`, `0 * * * *`) fires at every real instant whose wall time
//!   matches: wall times inside a gap do not exist, and both halves of a repeated hour fire.

use super::pipeline::ScheduleSpec;
use chrono::{DateTime, Duration, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("expected 5 fields (minute hour day-of-month month day-of-week), found {0}")]
    FieldCount(usize),
    #[error("{field} field `{value}`: {message}")]
    Field {
        field: &'static str,
        value: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the expression never fires")]
    NeverFires,
}

/// A parsed cron expression bound to its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Shared by every schedule of the same expression: a parsed `Cron` takes about 5 KB.
    cron: std::sync::Arc<Cron>,
    timezone: Tz,
    expression: String,
}

const FIELD_NAMES: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];

fn parser() -> CronParser {
    // croner's default is already the Vixie OR of day-of-month and day-of-week; say so
    // explicitly so a change of default cannot slip in (tests pin the behaviour too).
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .dom_and_dow(false)
        .build()
}

thread_local! {
    /// Expressions this thread parsed: ten thousand pipelines share a few dozen expressions, and
    /// croner's parse is the costliest part of loading one.
    static PARSED: std::cell::RefCell<std::collections::HashMap<String, std::sync::Arc<Cron>>> =
        std::cell::RefCell::default();
    /// Expressions (with their zone) already found to fire: the search is the next costliest part.
    static FIRES: std::cell::RefCell<std::collections::HashSet<(String, Tz)>> =
        std::cell::RefCell::default();
}

fn parse_cached(expression: &str) -> Result<std::sync::Arc<Cron>, ScheduleError> {
    if let Some(cron) = PARSED.with(|p| p.borrow().get(expression).cloned()) {
        return Ok(cron);
    }
    let cron =
        std::sync::Arc::new(parser().parse(expression).map_err(|e| {
            blame_field(expression).unwrap_or(ScheduleError::Invalid(e.to_string()))
        })?);
    PARSED.with(|p| {
        let mut parsed = p.borrow_mut();
        // Bounded: a fuzzer or a generated fleet must not grow it without end.
        if parsed.len() >= 4096 {
            parsed.clear();
        }
        parsed.insert(expression.to_string(), cron.clone());
    });
    Ok(cron)
}

/// croner's messages do not say which field is wrong: parse each field alone (the others `*`)
/// and name the first that fails.
fn blame_field(expression: &str) -> Option<ScheduleError> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.len() != 5 {
        return None;
    }
    fields.iter().enumerate().find_map(|(i, value)| {
        let mut probe = ["*"; 5];
        probe[i] = value;
        parser()
            .parse(&probe.join(" "))
            .err()
            .map(|e| ScheduleError::Field {
                field: FIELD_NAMES[i],
                value: (*value).to_string(),
                message: e.to_string(),
            })
    })
}

/// How far back `previous_before` steps before walking forward when croner's backward search
/// returned a wall time the forward search skips: more than any UTC offset change.
const PREVIOUS_SAFETY_MARGIN_HOURS: i64 = 3;

impl Schedule {
    pub fn new(spec: &ScheduleSpec) -> Result<Schedule, ScheduleError> {
        Self::parse(&spec.cron, spec.timezone)
    }

    /// Parses `expression` (5 fields, or an `@daily`-style alias) for `timezone`.
    pub fn parse(expression: &str, timezone: Tz) -> Result<Schedule, ScheduleError> {
        let trimmed = expression.trim();
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && fields != 5 {
            return Err(ScheduleError::FieldCount(fields));
        }
        let cron = parse_cached(trimmed)?;
        let schedule = Schedule {
            cron,
            timezone,
            expression: trimmed.to_string(),
        };
        let key = (schedule.expression.clone(), timezone);
        if FIRES.with(|f| f.borrow().contains(&key)) {
            return Ok(schedule);
        }
        // `0 0 31 2 *` parses but never fires; croner gives up after a bounded search.
        let epoch = DateTime::<Utc>::UNIX_EPOCH + Duration::days(365 * 56);
        if schedule.next_after(epoch).is_none() {
            return Err(ScheduleError::NeverFires);
        }
        FIRES.with(|f| {
            let mut fires = f.borrow_mut();
            if fires.len() >= 4096 {
                fires.clear();
            }
            fires.insert(key);
        });
        Ok(schedule)
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first tick strictly after `after`; `None` when the expression has no further tick
    /// within croner's search horizon.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = self.local(after)?;
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last tick strictly before `before` (the start of a data interval that ends at
    /// `before` when `before` is a tick).
    ///
    /// croner's backward search does not apply the forward search's gap correction, so the
    /// candidate it finds is refined by walking forward: the result is always a tick that
    /// `next_after` produces.
    pub fn previous_before(&self, before: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = self.local(before)?;
        let candidate = self
            .cron
            .find_previous_occurrence(&local, false)
            .ok()?
            .with_timezone(&Utc);
        // Usually the candidate is a forward tick, and only a gap-corrected tick after it can have
        // been missed: walk forward from just before it.
        if let Some(found) = self.last_tick_before(candidate - Duration::seconds(1), before) {
            return Some(found);
        }
        // The candidate was a wall time the forward search never yields (the second half of a
        // repeated hour): start far enough back to meet the tick before it.
        self.last_tick_before(
            candidate - Duration::hours(PREVIOUS_SAFETY_MARGIN_HOURS),
            before,
        )
    }

    /// `at` in the schedule's zone, or `None` within a day of chrono's limits, where the local
    /// wall time does not exist (croner reads it and would panic); croner finds no tick past
    /// local year 5000 anyway.
    fn local(&self, at: DateTime<Utc>) -> Option<DateTime<Tz>> {
        let offset = self
            .timezone
            .offset_from_utc_datetime(&at.naive_utc())
            .fix();
        at.naive_utc().checked_add_offset(offset)?;
        Some(at.with_timezone(&self.timezone))
    }

    /// The last forward tick in `(from, before)`.
    fn last_tick_before(
        &self,
        from: DateTime<Utc>,
        before: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut cursor = from;
        let mut last = None;
        while let Some(tick) = self.next_after(cursor) {
            if tick >= before {
                break;
            }
            last = Some(tick);
            cursor = tick;
        }
        last
    }

    /// Ticks in `(after, until]`, oldest first, at most `max` of them: the OLDEST `max` when
    /// capped (catch-up replays in order; a caller that wants the newest uses `previous_before`).
    pub fn ticks_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        max: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut ticks = Vec::new();
        let mut cursor = after;
        while ticks.len() < max {
            match self.next_after(cursor) {
                Some(tick) if tick <= until => {
                    ticks.push(tick);
                    cursor = tick;
                }
                _ => break,
            }
        }
        ticks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn refuses_six_fields_and_garbage() {
        let tz = chrono_tz::UTC;
        assert_eq!(
            Schedule::parse("0 0 2 * * *", tz).unwrap_err(),
            ScheduleError::FieldCount(6)
        );
        assert!(Schedule::parse("61 * * * *", tz).is_err());
        assert_eq!(
            Schedule::parse("0 0 31 2 *", tz).unwrap_err(),
            ScheduleError::NeverFires
        );
    }

    #[test]
    fn next_after_is_strict() {
        let s = Schedule::parse("0 2 * * *", chrono_tz::UTC).unwrap();
        let t = at(chrono_tz::UTC, 2025, 1, 1, 2, 0);
        assert_eq!(s.next_after(t), Some(at(chrono_tz::UTC, 2025, 1, 2, 2, 0)));
        assert_eq!(
            s.previous_before(t),
            Some(at(chrono_tz::UTC, 2024, 12, 31, 2, 0))
        );
    }
}
