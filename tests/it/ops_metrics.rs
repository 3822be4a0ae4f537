//! Metrics after a known workload: the real daemon and emulator on a manual clock run one
//! scheduled pipeline whose second step fails once and succeeds on retry; `/metrics` over real
//! HTTP then shows the expected names, labels and values.

#![allow(clippy::unwrap_used)]

use crate::support::daemon::{pipeline, Harness};
use crate::support::scenario::{scenario, STAGING_JOB};
use crate::support::t;
use baton::engine::state::PipelineRunState;
use baton::ops::metrics::{router, Metrics};
use tokio_util::sync::CancellationToken;

fn scenario_yaml() -> String {
    scenario(&[
        STAGING_JOB,
        "{ id: 102, name: flaky, duration: 1m, outcome: fail_first, fail_first: 1 }",
    ])
}

const PIPELINE: &str = r#"
name: metered
schedule: { cron: "0 2 * * *" }
steps:
  staging: { job_id: 101 }
  flaky:
    job_id: 102
    depends_on: [staging]
    retry: { attempts: 2, backoff: 1m }
"#;

fn value(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"));
    line[series.len() + 1..].parse().unwrap()
}

#[tokio::test]
async fn a_known_workload_gives_the_expected_metrics() {
    let h = Harness::start(
        "2026-01-05T01:59:00Z",
        &scenario_yaml(),
        vec![pipeline(PIPELINE)],
    )
    .await;
    let metrics = Metrics::with_step_histograms();
    let mut seen = h.daemon.transitions();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(metrics.clone().run(h.daemon.clone(), shutdown.clone()));
    // Wait until the task subscribed and took its first look.
    h.daemon.inspect(|_, _| ()).await.unwrap();

    h.run_until(t("2026-01-05T02:30:00Z"), 10).await;
    let run = h.pipeline_run("metered@2026-01-05T02:00:00Z").await;
    assert_eq!(run.state, PipelineRunState::Succeeded);

    let mut emitted = 0u64;
    while seen.try_recv().is_ok() {
        emitted += 1;
    }
    metrics
        .processed()
        .wait_for(|n| *n >= emitted)
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, router(metrics)).await.unwrap();
    });
    let answer = reqwest::get(&url).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = answer.text().await.unwrap();
    println!("{text}");

    let p = r#"pipeline="metered""#;
    let attempts = |step: &str, outcome: &str| {
        value(
            &text,
            &format!(r#"baton_attempts_total{{{p},step="{step}",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(attempts("staging", "success"), 1.0);
    assert_eq!(attempts("flaky", "error"), 1.0);
    assert_eq!(attempts("flaky", "success"), 1.0);
    assert!(!text.contains(r#"step="staging",outcome="error""#));
    assert_eq!(
        value(
            &text,
            &format!(r#"baton_retries_total{{{p},step="flaky",class="error"}}"#)
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"baton_pipeline_runs_total{{{p},state="succeeded"}}"#)
        ),
        1.0
    );
    // Histograms: one observation per attempt; staging ran 3 minutes as dbt Cloud reported it
    // at the polls (every 10 s), so between 170 s and 190 s.
    assert_eq!(
        value(
            &text,
            &format!(r#"baton_step_queued_seconds_count{{{p},step="flaky"}}"#)
        ),
        2.0
    );
    let staging_running = value(
        &text,
        &format!(r#"baton_step_running_seconds_sum{{{p},step="staging"}}"#),
    );
    assert!(
        (170.0..=190.0).contains(&staging_running),
        "{staging_running}"
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"baton_step_running_seconds_bucket{{{p},step="staging",le="+Inf"}}"#)
        ),
        1.0
    );
    // The downstream step is triggered in the same turn that sees its upstream finish.
    assert_eq!(
        value(
            &text,
            &format!(r#"baton_dispatch_latency_seconds_count{{{p},step="flaky"}}"#)
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"baton_dispatch_latency_seconds_sum{{{p},step="flaky"}}"#)
        ),
        0.0
    );
    assert!(!text
        .contains(r#"baton_dispatch_latency_seconds_count{pipeline="metered",step="staging"}"#));
    // The tick at 02:00 created its run at 02:00.
    assert_eq!(
        value(
            &text,
            &format!(r#"baton_schedule_lag_seconds_count{{{p}}}"#)
        ),
        1.0
    );
    assert_eq!(
        value(&text, &format!(r#"baton_schedule_lag_seconds_sum{{{p}}}"#)),
        0.0
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"baton_pipeline_last_success_timestamp_seconds{{{p}}}"#)
        ),
        run.finished_at.unwrap().timestamp() as f64
    );
    assert_eq!(value(&text, "baton_attempts_in_flight"), 0.0);
    assert_eq!(
        value(
            &text,
            &format!(r#"baton_pipeline_runs_active{{{p},state="running"}}"#)
        ),
        0.0
    );
    assert_eq!(value(&text, "baton_metrics_transitions_lost_total"), 0.0);
    // Bounded labels: no run ids, no dbt Cloud run ids.
    assert!(
        !text.contains("@2026"),
        "a pipeline run id leaked into a label"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(name.starts_with("baton_"), "{line}");
    }

    shutdown.cancel();
    task.await.unwrap();
    h.shutdown().await;
}
