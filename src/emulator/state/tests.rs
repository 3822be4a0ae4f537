use super::*;
use crate::emulator::render::step_views;

fn world(yaml_jobs: &str) -> (World, DateTime<Utc>) {
    let yaml = format!("account_id: 1\ntoken: t\nseed: 3\njobs:\n{yaml_jobs}");
    let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    (
        World::new(Scenario::from_yaml_str(&yaml).unwrap(), now),
        now,
    )
}

fn cause(c: &str) -> TriggerRequest {
    TriggerRequest {
        cause: c.into(),
        ..TriggerRequest::default()
    }
}

#[test]
fn advancing_in_one_jump_or_in_small_steps_gives_the_same_history() {
    let jobs = "  - {id: 1, name: a, duration: {min: 2s, max: 9s}, outcome: flaky}\n  - {id: 2, name: b, duration: 3s}\n";
    let (mut jump, t0) = world(jobs);
    let (mut steps, _) = world(jobs);
    for w in [&mut jump, &mut steps] {
        for i in 0..4 {
            w.trigger(JobId(1 + i % 2), cause("x"), t0).unwrap();
        }
    }
    jump.advance(t0 + Duration::seconds(120));
    for s in 1..=120 {
        steps.advance(t0 + Duration::seconds(s));
    }
    let summary = |w: &World| {
        w.runs
            .values()
            .map(|r| (r.id, r.status, r.dequeued_at, r.started_at, r.finished_at))
            .collect::<Vec<_>>()
    };
    assert_eq!(summary(&jump), summary(&steps));
    assert!(jump.runs.values().all(|r| r.is_terminal()));
    assert_eq!(jump.outbox.len(), steps.outbox.len());
}

#[test]
fn a_failing_run_shows_steps_up_to_the_failed_one() {
    let (mut w, t0) = world("  - {id: 1, name: a, outcome: error, fail_at_step: 4, execute_steps: [dbt seed, dbt run], duration: 10s}\n");
    let id = w.trigger(JobId(1), cause("x"), t0).unwrap();
    // 1s queue, 1s start, 5 steps of 2s: step 4 ends at +10s.
    w.advance(t0 + Duration::seconds(5));
    let views = step_views(&w.runs[&id], t0 + Duration::seconds(5));
    assert_eq!(views.len(), 2);
    assert_eq!(views[1].status, RunStatus::Running);
    let end = t0 + Duration::seconds(30);
    w.advance(end);
    let run = &w.runs[&id];
    assert_eq!(run.status, RunStatus::Error);
    assert_eq!(run.finished_at, Some(t0 + Duration::seconds(10)));
    let views = step_views(run, end);
    assert_eq!(views.len(), 4);
    assert_eq!(views[3].status, RunStatus::Error);
    assert_eq!(views[3].name, "Invoke dbt with `dbt seed`");
    assert!(views[..3].iter().all(|v| v.status == RunStatus::Success));
}

#[test]
fn five_thousand_runs_across_fifty_jobs_all_finish_and_announce_themselves() {
    let jobs: String = (0..50)
        .map(|i| {
            format!(
                "  - {{id: {}, name: j{i}, duration: {{min: 1s, max: 30s}}}}\n",
                i + 1
            )
        })
        .collect();
    let (mut w, t0) = world(&jobs);
    for i in 0..5000 {
        w.trigger(JobId(i % 50 + 1), cause("load"), t0).unwrap();
    }
    for minute in 1..=60 {
        w.advance(t0 + Duration::minutes(minute));
    }
    w.advance(t0 + Duration::hours(2));
    assert!(w.runs.values().all(|r| r.is_terminal()));
    assert_eq!(w.schedule.unfinished(), 0);
    assert_eq!(w.outbox.len(), 5000 * 2);
}
