//! Fuzzes the schedule math (`model::schedule`): arbitrary cron strings (5/6 fields, ranges, steps,
//! names, L/W/#, aliases, junk) in arbitrary zones from arbitrary instants, DST changes and the ends
//! of chrono's range included. Properties: nothing panics; ticks strictly increase after the start;
//! `previous_before` and `next_after` agree; and, for expressions a small oracle understands, each
//! tick is a wall time the expression matches and no matching minute between ticks is skipped
//! (instants within hours of an offset change are left to `tests/schedule_dst.rs`; past croner's
//! search horizon, local year 5000, a schedule ends by design).
//!
//! Input: `cron\nzone\nunix seconds` (the last two optional).

#![allow(clippy::unwrap_used)] // helpers of a test crate, not only #[test] fns

use crate::support::fuzz;
use crate::support::fuzz::{Target, Verdict};
use baton::model::schedule::Schedule;
use chrono::{DateTime, Datelike, Duration, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::{YEAR_LOWER_LIMIT, YEAR_UPPER_LIMIT};
use proptest::prelude::*;

const DICTIONARY: &[&str] = &[
    "*",
    "?",
    "/",
    "-",
    ",",
    " ",
    "\t",
    "L",
    "W",
    "LW",
    "#",
    "5#3",
    "L-2",
    "0",
    "7",
    "59",
    "60",
    "23",
    "24",
    "31",
    "32",
    "12",
    "13",
    "JAN",
    "feb",
    "DEC",
    "MON",
    "sun",
    "SAT-SUN",
    "@daily",
    "@hourly",
    "@weekly",
    "@monthly",
    "@yearly",
    "@reboot",
    "\n",
    "\nUTC",
    "\nEurope/Amsterdam",
    "\nAmerica/Sao_Paulo",
    "\n253402300799",
    "\n-8334601228800",
    "\n8210266876799",
    "4294967296",
    "-1",
    "1/0",
    "*/0",
    "0-59/61",
];

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Whether `value` is in a cron field, or `None` when the field uses syntax the oracle leaves
/// alone (L, W, #, reversed ranges, anything odd).
fn field_matches(
    text: &str,
    value: u32,
    min: u32,
    max: u32,
    names: &[&str],
    dow: bool,
) -> Option<bool> {
    let number = |s: &str| -> Option<u32> {
        if let Ok(n) = s.parse::<u32>() {
            return Some(n);
        }
        let index = names.iter().position(|n| n.eq_ignore_ascii_case(s))? as u32;
        Some(index + if dow { 0 } else { 1 })
    };
    let mut hit = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, Some(step.parse::<u32>().ok().filter(|s| *s > 0)?)),
            None => (part, None),
        };
        let (low, high) = match range {
            "*" | "?" => (min, max),
            _ => match range.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => {
                    let a = number(range)?;
                    (a, if step.is_some() { max } else { a })
                }
            },
        };
        if low > high || low < min || high > max + u32::from(dow) {
            return None;
        }
        let step = step.unwrap_or(1);
        hit |= (low..=high)
            .step_by(step as usize)
            .any(|v| v == value || (dow && v == 7 && value == 0));
    }
    Some(hit)
}

/// The oracle: does the wall time `t` match the 5-field `expression`? (Vixie: when both day
/// fields are restricted, either may match.)
fn oracle<T: Datelike + Timelike>(expression: &str, t: &T) -> Option<bool> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = fields.as_slice() else {
        return None;
    };
    let minute_ok = field_matches(minute, t.minute(), 0, 59, &[], false)?;
    let hour_ok = field_matches(hour, t.hour(), 0, 23, &[], false)?;
    let month_ok = field_matches(month, t.month(), 1, 12, &MONTHS, false)?;
    let dom_ok = field_matches(dom, t.day(), 1, 31, &[], false)?;
    let dow_ok = field_matches(dow, t.weekday().num_days_from_sunday(), 0, 6, &DAYS, true)?;
    let unrestricted = |f: &str| f == "*" || f == "?";
    let day_ok = if unrestricted(dom) || unrestricted(dow) {
        dom_ok && dow_ok
    } else {
        dom_ok || dow_ok
    };
    Some(minute_ok && hour_ok && month_ok && day_ok)
}

/// Instants the runs start from when the input names none: a quiet day and two DST changes.
const DEFAULT_STARTS: [i64; 3] = [1_767_225_600, 1_774_746_000, 1_792_890_000];

/// How far after the start ticks are followed, and at most how many.
const HORIZON_HOURS: i64 = 72;
const MAX_TICKS: usize = 200;

fn near_offset_change(tz: Tz, t: DateTime<Utc>) -> bool {
    let offset_at = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    let window = Duration::hours(3);
    match (t.checked_sub_signed(window), t.checked_add_signed(window)) {
        (Some(before), Some(after)) => {
            offset_at(before) != offset_at(t) || offset_at(after) != offset_at(t)
        }
        _ => true,
    }
}

fn check(bytes: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split('\n');
    let expression = lines.next().unwrap_or("");
    let zone_name = lines.next();
    let start = lines.next().and_then(|s| s.trim().parse::<i64>().ok());
    let tz: Tz = zone_name
        .and_then(|z| z.trim().parse::<Tz>().ok())
        .unwrap_or(chrono_tz::UTC);
    let schedule = match Schedule::parse(expression, tz) {
        Ok(schedule) => schedule,
        Err(e) => {
            fuzz::count("expressions refused");
            let _ = e.to_string();
            return Ok(());
        }
    };
    let starts: Vec<DateTime<Utc>> = match start {
        Some(secs) => DateTime::from_timestamp(secs, 0).into_iter().collect(),
        None => DEFAULT_STARTS
            .iter()
            .filter_map(|s| DateTime::from_timestamp(*s, 0))
            .collect(),
    };
    let expression = schedule.expression().to_string();
    fuzz::count("expressions accepted");
    if oracle(&expression, &DateTime::<Utc>::UNIX_EPOCH).is_some() {
        fuzz::count("accepted expressions the oracle reads");
    }
    for start in starts {
        check_from(&schedule, &expression, tz, start)?;
    }
    Ok(())
}

fn check_from(schedule: &Schedule, expression: &str, tz: Tz, start: DateTime<Utc>) -> Verdict {
    let until = start
        .checked_add_signed(Duration::hours(HORIZON_HOURS))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let ticks = schedule.ticks_between(start, until, MAX_TICKS);
    let mut previous = start;
    for (i, tick) in ticks.iter().copied().enumerate() {
        if tick <= previous || tick > until {
            return Err(format!(
                "ticks not increasing: {expression} in {tz} from {start}: {tick} after {previous}"
            ));
        }
        if schedule.next_after(previous) != Some(tick) {
            return Err(format!(
                "ticks_between disagrees with next_after: {expression} in {tz} at {previous}"
            ));
        }
        // croner's backward search stops in local year 1, so near there it may find nothing.
        let searchable = previous.with_timezone(&tz).year() > YEAR_LOWER_LIMIT;
        if i > 0 && searchable && schedule.previous_before(tick) != Some(previous) {
            return Err(format!(
                "previous_before is not the tick before: {expression} in {tz}: before {tick} gave {:?}, expected {previous}",
                schedule.previous_before(tick)
            ));
        }
        let local = tick.with_timezone(&tz);
        if !near_offset_change(tz, tick) {
            if local.second() != 0 || local.nanosecond() != 0 {
                return Err(format!(
                    "tick off the minute: {expression} in {tz}: {local}"
                ));
            }
            if oracle(expression, &local) == Some(false) {
                return Err(format!(
                    "tick does not match: {expression} in {tz}: {local}"
                ));
            }
        }
        previous = tick;
    }
    if let Some(before) = schedule.previous_before(start) {
        if before >= start {
            return Err(format!(
                "previous_before not before: {expression} in {tz} at {start}: {before}"
            ));
        }
        if schedule.next_after(before).is_some_and(|next| next < start) {
            return Err(format!(
                "previous_before skipped a tick: {expression} in {tz} at {start}: {before}"
            ));
        }
    }
    check_nothing_skipped(expression, tz, start, &ticks, until)
}

/// Walks the minutes between the start and the last tick (or the horizon when the list was not
/// capped): a matching minute that is not a tick was skipped.
fn check_nothing_skipped(
    expression: &str,
    tz: Tz,
    start: DateTime<Utc>,
    ticks: &[DateTime<Utc>],
    until: DateTime<Utc>,
) -> Verdict {
    let probe = tz.offset_from_utc_datetime(&start.naive_utc()).fix();
    if probe.local_minus_utc() % 60 != 0 || oracle(expression, &start.with_timezone(&tz)).is_none()
    {
        return Ok(());
    }
    let end = if ticks.len() == MAX_TICKS {
        *ticks.last().unwrap()
    } else {
        until
    };
    // croner searches local years 1 to 4999 only: past them the schedule ends by design.
    let searched = |t: DateTime<Utc>| {
        (YEAR_LOWER_LIMIT + 1..YEAR_UPPER_LIMIT).contains(&t.with_timezone(&tz).year())
    };
    if !searched(start) || !searched(end) {
        return Ok(());
    }
    let Some(mut minute) = DateTime::from_timestamp((start.timestamp() / 60 + 1) * 60, 0) else {
        return Ok(());
    };
    fuzz::count("runs walked minute by minute for skipped ticks");
    let mut next_tick = ticks.iter().peekable();
    while minute < end {
        while next_tick.peek().is_some_and(|t| **t < minute) {
            next_tick.next();
        }
        let is_tick = next_tick.peek().is_some_and(|t| **t == minute);
        if !is_tick
            && oracle(expression, &minute.with_timezone(&tz)) == Some(true)
            && !near_offset_change(tz, minute)
        {
            return Err(format!(
                "matching minute skipped: {expression} in {tz} from {start}: {}",
                minute.with_timezone(&tz)
            ));
        }
        minute += Duration::minutes(1);
    }
    Ok(())
}

fn cron_field(min: u32, max: u32, names: &'static [&'static str]) -> impl Strategy<Value = String> {
    let value = move || min..=max;
    let simple = prop_oneof![
        4 => Just("*".to_string()),
        1 => Just("?".to_string()),
        4 => value().prop_map(|v| v.to_string()),
        2 => (value(), value()).prop_map(|(a, b)| format!("{a}-{b}")),
        1 => (value(), value(), 0..max + 2).prop_map(|(a, b, s)| format!("{a}-{b}/{s}")),
        2 => (1..max + 1).prop_map(|s| format!("*/{s}")),
        1 => (value(), 1..max + 2).prop_map(|(a, s)| format!("{a}/{s}")),
        1 => prop::sample::select(if names.is_empty() { vec!["*"] } else { names.to_vec() })
            .prop_map(str::to_uppercase),
        1 => (0..max + 3).prop_map(|v| v.to_string()),
        1 => prop::sample::select(vec!["L", "LW", "15W", "L-3", "5L", "5#3", "0#5", "7", "W", "#", "-", ""])
            .prop_map(str::to_string),
    ];
    prop::collection::vec(simple, 1..4).prop_map(|parts| parts.join(","))
}

fn expression() -> impl Strategy<Value = String> {
    let five = (
        cron_field(0, 59, &[]),
        cron_field(0, 23, &[]),
        cron_field(1, 31, &[]),
        cron_field(1, 12, &MONTHS),
        cron_field(0, 7, &DAYS),
    )
        .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"));
    prop_oneof![
        8 => five,
        1 => (cron_field(0, 59, &[]), cron_field(0, 59, &[]), cron_field(0, 23, &[]))
            .prop_map(|(s, m, h)| format!("{s} {m} {h} * * *")),
        1 => prop::sample::select(vec![
            "@daily", "@hourly", "@weekly", "@monthly", "@yearly", "@annually", "@midnight",
            "@reboot", "@", "@every 5m", " 0 0 * * * ", "0\t0 * * *",
        ])
        .prop_map(str::to_string),
    ]
}

fn zone() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(chrono_tz::TZ_VARIANTS.to_vec()).prop_map(|tz| tz.name().to_string()),
        1 => "[A-Za-z/_+0-9-]{0,20}",
    ]
}

fn start() -> impl Strategy<Value = String> {
    let min = DateTime::<Utc>::MIN_UTC.timestamp();
    let max = DateTime::<Utc>::MAX_UTC.timestamp();
    prop_oneof![
        // Around this decade, where DST rules are busy.
        4 => (1_577_836_800i64..2_000_000_000).prop_map(|s| (s / 60 * 60).to_string()),
        1 => (min..=max).prop_map(|s| s.to_string()),
        1 => prop::sample::select(vec![
            min, min + 1, min + 86_400 * 400, max, max - 1, max - 86_400 * 400,
            253_402_300_799, -62_135_596_800, 0, -1, 4_102_444_800,
        ])
        .prop_map(|s| s.to_string()),
    ]
}

fn schedule_input() -> impl Strategy<Value = Vec<u8>> {
    (expression(), zone(), start())
        .prop_map(|(cron, zone, start)| format!("{cron}\n{zone}\n{start}").into_bytes())
}

#[test]
fn schedule_math_never_panics_and_ticks_match() {
    fuzz::run(
        Target {
            name: "schedule",
            seeds: Vec::new(),
            dictionary: DICTIONARY,
            check: &check,
        },
        schedule_input().boxed(),
    );
}

#[test]
fn the_oracle_reads_cron_fields_like_cron() {
    let t = chrono_tz::UTC
        .with_ymd_and_hms(2026, 3, 2, 6, 15, 0)
        .unwrap(); // a Monday
    assert_eq!(oracle("15 6 * * MON", &t), Some(true));
    assert_eq!(oracle("*/20 6 * * *", &t), Some(false));
    assert_eq!(oracle("15 6 31 * 1", &t), Some(true)); // either day field
    assert_eq!(oracle("15 6 31 * *", &t), Some(false));
    assert_eq!(oracle("15 6 L * *", &t), None);
    assert_eq!(
        oracle(
            "15 6 * * 5-7",
            &chrono_tz::UTC
                .with_ymd_and_hms(2026, 3, 1, 6, 15, 0)
                .unwrap()
        ),
        Some(true)
    );
}
