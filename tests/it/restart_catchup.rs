//! Catch-up after a simulated day of downtime, with the real daemon loop, store and client against
//! the in-process emulator on a manual clock: the daemon stops, the clock moves a day, a new daemon
//! starts on the same state directory, and each pipeline's policy decides which missed hourly ticks
//! run (`none`: none, `latest`: the newest, `all`: the newest `catchup_max`), each logged as missed.

#![allow(clippy::unwrap_used)]

use crate::support::daemon;
use crate::support::daemon::{pipeline, Harness};
use crate::support::scenario::scenario;
use crate::support::t;
use baton::engine::event::TransitionKind;
use baton::engine::state::{PipelineRun, PipelineRunState, RunOrigin};

fn scenario_yaml() -> String {
    scenario(&[
        "{ id: 1, name: none_job, duration: 1m }",
        "{ id: 2, name: latest_job, duration: 1m }",
        "{ id: 3, name: all_job, duration: 1m }",
        "{ id: 4, name: all_skip_job, duration: 1m }",
    ])
}

fn hourly(
    name: &str,
    catchup: &str,
    concurrency: &str,
    job: i64,
) -> baton::model::pipeline::Pipeline {
    pipeline(&format!(
        "name: {name}\nschedule: {{ cron: \"0 * * * *\", timezone: UTC, catchup: {catchup} }}\n\
         concurrency: {concurrency}\nsteps:\n  s: {{ job_id: {job} }}\n"
    ))
}

fn runs_of(runs: &[PipelineRun], pipeline: &str) -> Vec<PipelineRun> {
    let mut mine: Vec<PipelineRun> = runs
        .iter()
        .filter(|r| r.pipeline().0 == pipeline)
        .cloned()
        .collect();
    mine.sort_by_key(|r| r.logical_date);
    mine
}

fn logical_dates(runs: &[PipelineRun], origin: &RunOrigin) -> Vec<String> {
    runs.iter()
        .filter(|r| &r.origin == origin)
        .map(|r| r.logical_date.format("%m-%d %H:%M").to_string())
        .collect()
}

#[tokio::test]
async fn a_day_of_downtime_is_caught_up_by_each_pipelines_policy() {
    let mut settings = daemon::settings();
    settings.engine.catchup_max = 5;
    let pipelines = vec![
        hourly("none", "none", "skip", 1),
        hourly("latest", "latest", "skip", 2),
        hourly("all", "all", "queue", 3),
        hourly("all_skip", "all", "skip", 4),
    ];
    let mut h = Harness::start_with(
        "2026-03-01T00:30:00Z",
        &scenario_yaml(),
        pipelines,
        settings,
    )
    .await;
    h.run_until(t("2026-03-01T02:30:00Z"), 60).await;
    for name in ["none", "latest", "all", "all_skip"] {
        let runs = runs_of(&h.pipeline_runs().await, name);
        assert_eq!(
            logical_dates(&runs, &RunOrigin::Schedule),
            ["03-01 01:00", "03-01 02:00"],
            "{name} before the downtime"
        );
    }

    h.stop().await;
    h.clock.advance(chrono::Duration::days(1));
    h.restart(None).await;
    let mut transitions = h.daemon.transitions();
    // Three hours later: every catch-up run has had time to finish, and the 03:00 and 04:00 ticks
    // ran on time.
    h.run_for(3 * 3600, 60).await;

    let all_runs = h.pipeline_runs().await;
    let none = runs_of(&all_runs, "none");
    let latest = runs_of(&all_runs, "latest");
    let all = runs_of(&all_runs, "all");
    let all_skip = runs_of(&all_runs, "all_skip");
    assert!(logical_dates(&none, &RunOrigin::Catchup).is_empty());
    assert_eq!(logical_dates(&latest, &RunOrigin::Catchup), ["03-02 02:00"]);
    let newest_five = [
        "03-01 22:00",
        "03-01 23:00",
        "03-02 00:00",
        "03-02 01:00",
        "03-02 02:00",
    ];
    assert_eq!(logical_dates(&all, &RunOrigin::Catchup), newest_five);
    assert_eq!(
        logical_dates(&all_skip, &RunOrigin::Catchup),
        newest_five,
        "catch-up runs must not skip each other under concurrency: skip"
    );
    for (name, runs) in [
        ("none", &none),
        ("latest", &latest),
        ("all", &all),
        ("all_skip", &all_skip),
    ] {
        assert_eq!(
            logical_dates(runs, &RunOrigin::Schedule)[2..],
            ["03-02 03:00", "03-02 04:00", "03-02 05:00"],
            "{name}: on-time ticks after the restart"
        );
        for run in runs.iter() {
            assert_eq!(run.state, PipelineRunState::Succeeded, "{}", run.id);
        }
    }
    // Exactly one dbt Cloud run per pipeline run.
    for (job, runs) in [(1, &none), (2, &latest), (3, &all), (4, &all_skip)] {
        assert_eq!(h.runs_of(job).len(), runs.len(), "job {job}");
    }
    let mut missed = Vec::new();
    while let Ok(transition) = transitions.try_recv() {
        if transition.what == TransitionKind::TicksMissed {
            missed.push((transition.pipeline.0.clone(), transition.detail.clone()));
        }
    }
    missed.sort();
    let names: Vec<&str> = missed.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["all", "all_skip", "latest", "none"], "{missed:?}");
    assert!(
        missed
            .iter()
            .any(|(p, d)| p == "latest" && d.contains("runs 1 of them")),
        "{missed:?}"
    );
    h.shutdown().await;
}
