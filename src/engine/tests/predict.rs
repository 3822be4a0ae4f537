//! Polling that predicts, on a hand-moved clock: a run is looked at near its expected end once its
//! job has history, at the fixed interval before that, and at once after a webhook hint.

use super::*;

/// An hourly one-step pipeline on `job`.
fn hourly(name: &str, job: i64) -> Pipeline {
    pipeline(name, "0 * * * *", vec![step("s", job, &[])])
}

/// The run as dbt Cloud reports it, created at `created` and, once `now` has passed
/// `created + took`, successful.
fn as_seen(id: i64, job: i64, created: DateTime<Utc>, took: Duration, now: DateTime<Utc>) -> Run {
    let end = created + took;
    let done = now >= end;
    serde_json::from_value(serde_json::json!({
        "id": id, "status": if done { 10 } else { 3 }, "job_definition_id": job,
        "created_at": created.to_rfc3339(),
        "finished_at": done.then(|| end.to_rfc3339()),
    }))
    .unwrap()
}

/// One run per job in `took` (job, how long its run takes), all triggered at `at`. Steps the
/// clock by 100 ms, answering every poll as dbt Cloud would, until every run was seen finished.
/// Returns the instants of the polls and how late each run's end was seen (job, delay).
fn follow(
    h: &mut Harness,
    at: &str,
    took: &[(i64, Duration)],
) -> (Vec<DateTime<Utc>>, Vec<(i64, Duration)>) {
    let actions = h.at(at);
    let created = h.now;
    assert_eq!(triggered_jobs(&actions).len(), took.len(), "{actions:?}");
    assert!(h.accept_all(actions).is_empty());
    let took_of = |job: i64| took.iter().find(|(j, _)| *j == job).unwrap().1;
    let mut polls = Vec::new();
    let mut late = Vec::new();
    let mut pending = Vec::new();
    for _ in 0..20_000 {
        if late.len() == took.len() {
            break;
        }
        h.now += Duration::milliseconds(100);
        let mut actions = h.step(None);
        actions.append(&mut pending);
        for action in actions {
            let Action::Poll { runs } = action else {
                continue;
            };
            polls.push(h.now);
            let seen: Vec<Run> = runs
                .iter()
                .map(|id| {
                    let job = h.runs[&id.0];
                    as_seen(id.0, job, created, took_of(job), h.now)
                })
                .collect();
            for run in &seen {
                if run.status == RunStatus::Success {
                    let job = h.runs[&run.id.0];
                    late.push((job, h.now - (created + took_of(job))));
                }
            }
            pending = h.apply(Event::RunsSeen { runs: seen });
        }
    }
    assert_eq!(late.len(), took.len(), "every run was seen finished");
    (polls, late)
}

fn secs(s: f64) -> Duration {
    Duration::milliseconds((s * 1000.0) as i64)
}

#[test]
fn a_job_with_history_is_polled_near_its_expected_end() {
    let mut h = Harness::new(vec![hourly("p", 7)], "2026-03-01T01:59:00Z");
    // No history: the 10 s interval, so a 31 s run is seen 9 s late.
    let (_, late) = follow(&mut h, "2026-03-01T02:00:00Z", &[(7, secs(31.0))]);
    assert_eq!(late, vec![(7, secs(9.0))]);
    // With one 31 s run learned, a 29 s run (within its ±10 %) is seen within two seconds.
    let (polls, late) = follow(&mut h, "2026-03-01T03:00:00Z", &[(7, secs(29.0))]);
    assert!(late[0].1 <= secs(2.1), "seen {:?} late", late[0].1);
    let start = t("2026-03-01T03:00:00Z");
    let offsets: Vec<f64> = polls
        .iter()
        .map(|p| (*p - start).num_milliseconds() as f64 / 1000.0)
        .collect();
    // The interval's looks at 10 s and 20 s (a run may fail early), then the expected window.
    assert_eq!(offsets[..2], [10.0, 20.0], "{offsets:?}");
    assert_eq!(
        offsets[2], 28.0,
        "the window (27.9 s on) on the 2 s grid: {offsets:?}"
    );
    assert!(polls.len() <= 5, "{offsets:?}");
    // A run longer than anything learned falls back to the interval once its window has passed.
    let (_, late) = follow(&mut h, "2026-03-01T04:00:00Z", &[(7, secs(60.0))]);
    assert!(late[0].1 <= secs(10.0), "seen {:?} late", late[0].1);
}

#[test]
fn runs_expected_to_end_close_together_share_one_request() {
    let mut h = Harness::new(vec![hourly("a", 7), hourly("b", 8)], "2026-03-01T01:59:00Z");
    follow(
        &mut h,
        "2026-03-01T02:00:00Z",
        &[(7, secs(30.0)), (8, secs(30.5))],
    );
    let (polls, late) = follow(
        &mut h,
        "2026-03-01T03:00:00Z",
        &[(7, secs(30.0)), (8, secs(30.5))],
    );
    assert!(late.iter().all(|(_, l)| *l <= secs(2.1)), "{late:?}");
    // Both runs ride every request: no poll asks for one run alone while the other is watched.
    let mut sorted = polls.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), polls.len(), "one request per instant");
}

#[test]
fn the_durations_are_learned_again_after_a_restart() {
    let mut h = Harness::new(vec![hourly("p", 7)], "2026-03-01T01:59:00Z");
    follow(&mut h, "2026-03-01T02:00:00Z", &[(7, secs(31.0))]);
    let state = h.engine.state().clone();
    let mut h = Harness::with_state(
        vec![hourly("p", 7)],
        "2026-03-01T02:05:00Z",
        state,
        EngineConfig::default(),
    );
    let (_, late) = follow(&mut h, "2026-03-01T03:00:00Z", &[(7, secs(29.0))]);
    assert!(late[0].1 <= secs(2.1), "seen {:?} late", late[0].1);
}

#[test]
fn without_prediction_only_the_interval_and_webhook_hints_poll() {
    let config = EngineConfig {
        predict_polls: false,
        ..EngineConfig::default()
    };
    let mut h = Harness::with_state(
        vec![hourly("p", 7)],
        "2026-03-01T01:59:00Z",
        State::default(),
        config,
    );
    follow(&mut h, "2026-03-01T02:00:00Z", &[(7, secs(31.0))]);
    let (polls, late) = follow(&mut h, "2026-03-01T03:00:00Z", &[(7, secs(29.0))]);
    assert_eq!(late, vec![(7, secs(1.0))]);
    assert_eq!(polls.len(), 3, "at 10, 20 and 30 s");
    // A hint (a webhook said the run changed) polls at once.
    let actions = h.at("2026-03-01T04:00:00Z");
    h.accept_all(actions);
    h.now += Duration::seconds(2);
    let run = RunId(h.next_run);
    let actions = h.apply(Event::RunHint { run });
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Poll { runs } if runs.contains(&run))),
        "{actions:?}"
    );
}
