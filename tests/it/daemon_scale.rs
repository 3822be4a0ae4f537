//! A hundred pipelines of five steps for a simulated day against the emulator: no tick missed, no
//! trigger duplicated, every pipeline run in the state its jobs imply.

use crate::support::daemon::{pipeline, Harness};
use crate::support::slow_tests_enabled;
use crate::support::t;
use baton::engine::state::{PipelineRunState, StepState};
use baton::model::pipeline::Pipeline;
use std::collections::{BTreeMap, BTreeSet};

const PIPELINES: usize = 100;

fn job(p: usize, step: usize) -> usize {
    10_000 + p * 10 + step
}

/// Every tenth pipeline has a step that always fails.
fn fails(p: usize) -> bool {
    p.is_multiple_of(10)
}

fn scenario() -> String {
    let mut yaml = String::from("account_id: 42\ntoken: scale-token\njobs:\n");
    for p in 0..PIPELINES {
        for s in 1..=5 {
            let outcome = if fails(p) && s == 3 {
                "error"
            } else {
                "success"
            };
            yaml.push_str(&format!(
                "  - {{ id: {}, name: p{p}s{s}, duration: 2m, outcome: {outcome} }}\n",
                job(p, s)
            ));
        }
    }
    yaml
}

fn pipelines() -> Vec<Pipeline> {
    (0..PIPELINES)
        .map(|p| {
            pipeline(&format!(
                r#"
name: p{p}
schedule: {{ cron: "{minute} * * * *", timezone: Europe/Amsterdam }}
steps:
  s1: {{ job_id: {j1} }}
  s2: {{ job_id: {j2}, depends_on: [s1] }}
  s3: {{ job_id: {j3}, depends_on: [s1] }}
  s4: {{ job_id: {j4}, depends_on: [s2, s3] }}
  s5: {{ job_id: {j5}, depends_on: [s4] }}
"#,
                minute = p % 60,
                j1 = job(p, 1),
                j2 = job(p, 2),
                j3 = job(p, 3),
                j4 = job(p, 4),
                j5 = job(p, 5),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pipelines_for_a_simulated_day() {
    if !slow_tests_enabled("daemon_scale::a_hundred_pipelines_for_a_simulated_day") {
        return;
    }
    let h = Harness::start("2026-02-28T23:59:30Z", &scenario(), pipelines()).await;
    let day_end = t("2026-03-01T23:59:30Z");
    // A minute at a time through the day, then time for the last runs to finish.
    h.run_until(t("2026-03-02T00:30:00Z"), 60).await;

    let runs: Vec<_> = h
        .pipeline_runs()
        .await
        .into_iter()
        .filter(|r| r.logical_date <= day_end)
        .collect();
    let mut per_pipeline: BTreeMap<String, usize> = BTreeMap::new();
    for r in &runs {
        *per_pipeline.entry(r.pipeline().0.clone()).or_default() += 1;
    }
    assert_eq!(per_pipeline.len(), PIPELINES);
    assert!(
        per_pipeline.values().all(|n| *n == 24),
        "every pipeline ran every hour of the day: {per_pipeline:?}"
    );

    let mut wrong = Vec::new();
    for r in &runs {
        let p: usize = r.pipeline().0[1..].parse().unwrap();
        let expected = if fails(p) {
            PipelineRunState::Failed
        } else {
            PipelineRunState::Succeeded
        };
        if r.state != expected {
            wrong.push(format!("{} is {:?}", r.id, r.state));
        }
        if fails(p) {
            let s4 = &r.steps[&baton::model::pipeline::StepName("s4".into())];
            assert_eq!(s4.state, StepState::UpstreamFailed);
        }
    }
    assert!(wrong.is_empty(), "{wrong:?}");

    // No duplicated trigger: every attempt key is carried by exactly one dbt Cloud run, and each
    // step of each pipeline run made exactly the runs it needed.
    let emulated = h.emulator.runs();
    let mut keys = BTreeSet::new();
    for run in &emulated {
        let key = run.cause.rsplit_once("[bt-").map(|(_, k)| k.to_string());
        let key = key.unwrap_or_else(|| panic!("cause without key: {}", run.cause));
        assert!(keys.insert(key), "two runs carry one key: {}", run.cause);
    }
    let steps_run: usize = runs
        .iter()
        .flat_map(|r| r.steps.values())
        .map(|s| s.attempts.len())
        .sum();
    let expected_steps = 24 * (PIPELINES - PIPELINES / 10) * 5 + 24 * (PIPELINES / 10) * 3;
    assert_eq!(steps_run, expected_steps);
    println!(
        "simulated day: {} pipeline runs, {} dbt Cloud runs, {} requests",
        runs.len(),
        emulated.len(),
        h.emulator.request_counts().values().sum::<u64>()
    );
    h.shutdown().await;
}
