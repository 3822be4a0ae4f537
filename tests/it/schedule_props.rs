//! Property tests of the schedule math against an independent oracle: for random cron expressions
//! around the DST transitions of several zones, the ticks strictly increase, each is a wall time the
//! expression matches, and none is skipped or doubled.
//!
//! The oracle is the rule `model::schedule` documents: a fixed-time expression (one minute, one
//! hour) fires once per matching local day, at its wall time (the first of two on a fall-back day,
//! the end of the gap on a spring-forward day); any other expression fires at every real minute
//! whose wall time matches.

#![allow(clippy::unwrap_used)] // helpers of a test crate, not only #[test] fns

use baton::model::schedule::Schedule;
use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, Offset, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use proptest::prelude::*;

const ZONES: &[&str] = &[
    "Europe/Amsterdam",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Kolkata",
];

#[derive(Debug, Clone)]
enum Field {
    Any,
    Step(u32),
    Values(Vec<u32>),
}

impl Field {
    fn text(&self) -> String {
        match self {
            Field::Any => "*".into(),
            Field::Step(k) => format!("*/{k}"),
            Field::Values(v) => v.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        }
    }

    fn matches(&self, value: u32) -> bool {
        match self {
            Field::Any => true,
            Field::Step(k) => value.is_multiple_of(*k),
            Field::Values(v) => v.contains(&value),
        }
    }

    fn single(&self) -> Option<u32> {
        match self {
            Field::Values(v) if v.len() == 1 => Some(v[0]),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Expr {
    minute: Field,
    hour: Field,
    dom: Field,
    dow: Field,
}

impl Expr {
    fn text(&self) -> String {
        format!(
            "{} {} {} * {}",
            self.minute.text(),
            self.hour.text(),
            self.dom.text(),
            self.dow.text()
        )
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = date.day();
        let dow = date.weekday().num_days_from_sunday();
        match (&self.dom, &self.dow) {
            (Field::Any, Field::Any) => true,
            (Field::Any, d) => d.matches(dow),
            (m, Field::Any) => m.matches(dom),
            (m, d) => m.matches(dom) || d.matches(dow),
        }
    }
}

fn values(range: std::ops::RangeInclusive<u32>, max_len: usize) -> impl Strategy<Value = Field> {
    proptest::collection::btree_set(range, 1..=max_len)
        .prop_map(|set| Field::Values(set.into_iter().collect()))
}

fn expr() -> impl Strategy<Value = Expr> {
    let minute = prop_oneof![
        3 => values(0..=59, 1),
        1 => values(0..=59, 3),
        1 => prop::sample::select(vec![5u32, 15, 20, 30]).prop_map(Field::Step),
    ];
    // Hours 0 to 3 hold every transition of these zones: weigh them.
    let hour = prop_oneof![
        3 => values(0..=3, 1),
        1 => values(0..=23, 1),
        1 => values(0..=23, 3),
        1 => Just(Field::Any),
        1 => prop::sample::select(vec![2u32, 3, 6]).prop_map(Field::Step),
    ];
    let dom = prop_oneof![3 => Just(Field::Any), 1 => values(1..=28, 2)];
    let dow = prop_oneof![3 => Just(Field::Any), 1 => values(0..=6, 2)];
    (minute, hour, dom, dow).prop_map(|(minute, hour, dom, dow)| Expr {
        minute,
        hour,
        dom,
        dow,
    })
}

/// Instants in 2025..=2027 where `tz` changes its UTC offset (none for Asia/Kolkata).
fn transitions(tz: Tz) -> Vec<DateTime<Utc>> {
    let mut found = Vec::new();
    let mut t = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let end = Utc.with_ymd_and_hms(2028, 1, 1, 0, 0, 0).unwrap();
    let offset = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    while t < end {
        let next = t + Duration::minutes(30);
        if offset(t) != offset(next) {
            found.push(next);
        }
        t = next;
    }
    found
}

fn oracle(e: &Expr, tz: Tz, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut ticks = Vec::new();
    if let (Some(minute), Some(hour)) = (e.minute.single(), e.hour.single()) {
        let first = after.with_timezone(&tz).date_naive() - Duration::days(1);
        let last = until.with_timezone(&tz).date_naive() + Duration::days(1);
        let mut date = first;
        while date <= last {
            if e.day_matches(date) {
                let wall = date.and_hms_opt(hour, minute, 0).unwrap();
                let instant = match tz.from_local_datetime(&wall) {
                    LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t,
                    LocalResult::None => {
                        // In the gap: the first wall time that exists after it.
                        let mut probe = wall;
                        loop {
                            probe += Duration::minutes(1);
                            if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                                break t;
                            }
                        }
                    }
                };
                let instant = instant.with_timezone(&Utc);
                if instant > after && instant <= until {
                    ticks.push(instant);
                }
            }
            date += Duration::days(1);
        }
    } else {
        let mut t = after.with_second(0).unwrap() + Duration::minutes(1);
        while t <= until {
            let local = t.with_timezone(&tz);
            if e.minute.matches(local.minute())
                && e.hour.matches(local.hour())
                && e.day_matches(local.date_naive())
            {
                ticks.push(t);
            }
            t += Duration::minutes(1);
        }
    }
    ticks.sort();
    ticks
}

fn check(e: &Expr, zone: &str, after: DateTime<Utc>) -> Result<(), TestCaseError> {
    let tz: Tz = zone.parse().unwrap();
    let schedule = match Schedule::parse(&e.text(), tz) {
        Ok(s) => s,
        Err(err) => return Err(TestCaseError::fail(format!("{} refused: {err}", e.text()))),
    };
    let until = after + Duration::days(3);
    let got = schedule.ticks_between(after, until, 100_000);
    let expected = oracle(e, tz, after, until);
    for pair in got.windows(2) {
        prop_assert!(pair[0] < pair[1], "not increasing: {pair:?}");
    }
    prop_assert_eq!(
        &got,
        &expected,
        "`{}` in {} after {}",
        e.text(),
        zone,
        after
    );
    for pair in got.windows(2) {
        prop_assert_eq!(schedule.previous_before(pair[1]), Some(pair[0]));
    }
    Ok(())
}

proptest! {
    // 96 cases by default (a few seconds); PROPTEST_CASES=2000 for a deeper search.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96)
    ))]

    #[test]
    fn ticks_match_the_oracle_around_dst_transitions(
        e in expr(),
        zone in prop::sample::select(ZONES),
        pick in any::<prop::sample::Index>(),
        shift_minutes in -2_880i64..=1_440,
    ) {
        let tz: Tz = zone.parse().unwrap();
        let all = transitions(tz);
        let anchor = if all.is_empty() {
            Utc.with_ymd_and_hms(2026, 3, 29, 0, 0, 0).unwrap()
                + Duration::days(pick.index(700) as i64)
        } else {
            all[pick.index(all.len())]
        };
        check(&e, zone, anchor + Duration::minutes(shift_minutes))?;
    }
}

#[test]
fn every_zone_but_kolkata_has_transitions_in_the_window() {
    for zone in ZONES {
        let n = transitions(zone.parse().unwrap()).len();
        if *zone == "Asia/Kolkata" {
            assert_eq!(n, 0);
        } else {
            assert_eq!(n, 6, "{zone}");
        }
    }
}
