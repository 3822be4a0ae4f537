//! Schedule semantics pinned with concrete dates: DST gaps and overlaps, the day-of-month /
//! day-of-week OR, strictness of `next_after`, `ticks_between` capping and `previous_before`.

#![allow(clippy::unwrap_used)] // helpers of a test crate, not only #[test] fns

use baton::model::pipeline::{CatchupPolicy, ScheduleSpec};
use baton::model::schedule::Schedule;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

fn schedule(cron: &str, tz: &str) -> Schedule {
    Schedule::new(&ScheduleSpec {
        cron: cron.into(),
        timezone: tz.parse().unwrap(),
        catchup: CatchupPolicy::None,
    })
    .unwrap()
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn local(ticks: &[DateTime<Utc>], tz: &str) -> Vec<String> {
    let tz: Tz = tz.parse().unwrap();
    ticks
        .iter()
        .map(|t| {
            t.with_timezone(&tz)
                .format("%Y-%m-%d %H:%M %:z")
                .to_string()
        })
        .collect()
}

#[test]
fn daily_0230_amsterdam_fires_once_on_spring_forward_day_at_0300() {
    let s = schedule("30 2 * * *", "Europe/Amsterdam");
    let ticks = s.ticks_between(utc("2026-03-28T00:00:00Z"), utc("2026-03-31T00:00:00Z"), 10);
    assert_eq!(
        local(&ticks, "Europe/Amsterdam"),
        [
            "2026-03-28 02:30 +01:00",
            "2026-03-29 03:00 +02:00",
            "2026-03-30 02:30 +02:00"
        ]
    );
}

#[test]
fn daily_0230_amsterdam_fires_once_on_fall_back_day_at_the_first_0230() {
    let s = schedule("30 2 * * *", "Europe/Amsterdam");
    let ticks = s.ticks_between(utc("2026-10-24T00:00:00Z"), utc("2026-10-27T00:00:00Z"), 10);
    assert_eq!(
        local(&ticks, "Europe/Amsterdam"),
        [
            "2026-10-24 02:30 +02:00",
            "2026-10-25 02:30 +02:00",
            "2026-10-26 02:30 +01:00"
        ]
    );
    // Starting between the two 02:30s must not produce the second one.
    let between = utc("2026-10-25T00:45:00Z"); // 02:45 CEST, before the clocks go back
    assert_eq!(
        local(&[s.next_after(between).unwrap()], "Europe/Amsterdam"),
        ["2026-10-26 02:30 +01:00"]
    );
}

#[test]
fn interval_job_fires_in_both_halves_of_the_repeated_hour_and_skips_the_gap() {
    let s = schedule("0,30 * * * *", "Europe/Amsterdam");
    let ticks = s.ticks_between(utc("2026-10-24T23:59:00Z"), utc("2026-10-25T02:01:00Z"), 20);
    assert_eq!(
        local(&ticks, "Europe/Amsterdam"),
        [
            "2026-10-25 02:00 +02:00",
            "2026-10-25 02:30 +02:00",
            "2026-10-25 02:00 +01:00",
            "2026-10-25 02:30 +01:00",
            "2026-10-25 03:00 +01:00"
        ]
    );
    let ticks = s.ticks_between(utc("2026-03-29T00:00:00Z"), utc("2026-03-29T01:30:00Z"), 20);
    assert_eq!(
        local(&ticks, "Europe/Amsterdam"),
        [
            "2026-03-29 01:30 +01:00",
            "2026-03-29 03:00 +02:00",
            "2026-03-29 03:30 +02:00"
        ]
    );
}

#[test]
fn new_york_and_sydney_follow_the_wall_clock() {
    let s = schedule("0 9 * * *", "America/New_York");
    let ticks = s.ticks_between(utc("2026-03-07T00:00:00Z"), utc("2026-03-10T00:00:00Z"), 10);
    let utc_hours: Vec<String> = ticks
        .iter()
        .map(|t| t.format("%d %H:%M").to_string())
        .collect();
    assert_eq!(utc_hours, ["07 14:00", "08 13:00", "09 13:00"]);

    let s = schedule("0 2 * * *", "Australia/Sydney");
    // Sydney springs forward on 2026-10-04 at 02:00 -> 03:00.
    let ticks = s.ticks_between(utc("2026-10-02T12:00:00Z"), utc("2026-10-05T12:00:00Z"), 10);
    assert_eq!(
        local(&ticks, "Australia/Sydney"),
        [
            "2026-10-03 02:00 +10:00",
            "2026-10-04 03:00 +11:00",
            "2026-10-05 02:00 +11:00"
        ]
    );
}

#[test]
fn day_of_month_and_day_of_week_both_restricted_means_either() {
    // The 13th of each month OR any Friday (Vixie cron), not only Friday the 13th.
    let s = schedule("0 0 13 * 5", "UTC");
    let ticks = s.ticks_between(utc("2026-02-01T00:00:00Z"), utc("2026-03-01T00:00:00Z"), 10);
    let days: Vec<String> = ticks
        .iter()
        .map(|t| t.format("%d %a").to_string())
        .collect();
    assert_eq!(days, ["06 Fri", "13 Fri", "20 Fri", "27 Fri"]);
    let ticks = s.ticks_between(utc("2026-04-01T00:00:00Z"), utc("2026-04-20T00:00:00Z"), 10);
    let days: Vec<String> = ticks
        .iter()
        .map(|t| t.format("%d %a").to_string())
        .collect();
    assert_eq!(days, ["03 Fri", "10 Fri", "13 Mon", "17 Fri"]);
    // One restricted field alone restricts as usual.
    let s = schedule("0 0 * * 5", "UTC");
    assert_eq!(
        s.ticks_between(utc("2026-04-01T00:00:00Z"), utc("2026-04-20T00:00:00Z"), 10)
            .len(),
        3
    );
}

#[test]
fn next_after_is_strict_and_ticks_between_is_half_open_and_capped_to_the_oldest() {
    let s = schedule("0 * * * *", "UTC");
    let t = utc("2026-01-01T05:00:00Z");
    assert_eq!(s.next_after(t), Some(utc("2026-01-01T06:00:00Z")));
    let ticks = s.ticks_between(t, utc("2026-01-01T08:00:00Z"), 10);
    assert_eq!(ticks.first(), Some(&utc("2026-01-01T06:00:00Z")));
    assert_eq!(ticks.last(), Some(&utc("2026-01-01T08:00:00Z")));
    let capped = s.ticks_between(t, utc("2026-01-02T00:00:00Z"), 2);
    assert_eq!(
        capped,
        [utc("2026-01-01T06:00:00Z"), utc("2026-01-01T07:00:00Z")]
    );
    assert!(s.ticks_between(t, t, 10).is_empty());
}

#[test]
fn previous_before_finds_the_gap_corrected_tick() {
    let s = schedule("30 2 * * *", "Europe/Amsterdam");
    let spring_tick = utc("2026-03-29T01:00:00Z"); // 03:00 CEST, the corrected 02:30
    let next = s.next_after(spring_tick).unwrap();
    assert_eq!(s.previous_before(next), Some(spring_tick));
    assert_eq!(
        s.previous_before(spring_tick),
        Some(utc("2026-03-28T01:30:00Z"))
    );
}

#[test]
fn refuses_what_is_not_standard_five_fields() {
    let tz: Tz = "UTC".parse().unwrap();
    for bad in ["0 0 2 * * *", "* * * *", "0 25 * * *", "abc", "0 0 30 2 *"] {
        assert!(Schedule::parse(bad, tz).is_err(), "{bad}");
    }
    assert!(Schedule::parse("@daily", tz).is_ok());
}

#[test]
fn previous_before_across_the_repeated_hour() {
    // Fixed time: the tick before the day after fall-back is the FIRST 02:30.
    let s = schedule("30 2 * * *", "Europe/Amsterdam");
    assert_eq!(
        s.previous_before(utc("2026-10-26T01:30:00Z")),
        Some(utc("2026-10-25T00:30:00Z"))
    );
    // From inside the repeated hour, too.
    assert_eq!(
        s.previous_before(utc("2026-10-25T01:45:00Z")),
        Some(utc("2026-10-25T00:30:00Z"))
    );
    // Interval: both halves are ticks, each the previous of the next.
    let s = schedule("30 * * * *", "Europe/Amsterdam");
    assert_eq!(
        s.previous_before(utc("2026-10-25T02:30:00Z")),
        Some(utc("2026-10-25T01:30:00Z"))
    );
    assert_eq!(
        s.previous_before(utc("2026-10-25T01:30:00Z")),
        Some(utc("2026-10-25T00:30:00Z"))
    );
}
