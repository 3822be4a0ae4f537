//! Reconciliation looks past the first page: when more than a page of the job's runs were created
//! after an ambiguous trigger (a job shared with other schedulers, a long outage), the attempt's
//! run is still found by its key instead of being triggered a second time.

#![allow(clippy::unwrap_used)]

use crate::support::daemon::{pipeline, Harness};
use crate::support::scenario::scenario;
use crate::support::t;
use baton::dbt_cloud::wire::TriggerRequest;
use baton::emulator::Faults;
use baton::ids::JobId;

fn scenario_yaml() -> String {
    scenario(&["{ id: 1, name: shared, duration: 10m }"])
}

#[tokio::test]
async fn an_ambiguous_trigger_followed_by_more_than_a_page_of_runs_is_still_adopted() {
    let p = pipeline(
        "name: shared\nschedule: { cron: \"0 1 * * *\", timezone: UTC }\nsteps:\n  s: { job_id: 1 }\n",
    );
    let h = Harness::start("2026-03-01T00:30:00Z", &scenario_yaml(), vec![p]).await;
    h.emulator.set_faults(Faults {
        trigger_502_next: 1,
        ..Faults::default()
    });
    h.run_until(t("2026-03-01T01:00:00Z"), 60).await;
    assert_eq!(
        h.runs_of(1).len(),
        1,
        "the trigger queued its run and answered 502"
    );

    // Before the reconciliation looks, someone else triggers the job 150 times.
    let client = h.client();
    for i in 0..150 {
        let request = TriggerRequest {
            cause: format!("another scheduler {i}"),
            ..TriggerRequest::default()
        };
        client.trigger(JobId(1), &request).await.unwrap();
    }
    h.run_for(120, 5).await;

    let keyed: Vec<_> = h
        .runs_of(1)
        .into_iter()
        .filter(|r| r.cause.contains("[bt-"))
        .collect();
    assert_eq!(keyed.len(), 1, "triggered again: {keyed:?}");
    let run = h.pipeline_run("shared@2026-03-01T01:00:00Z").await;
    let attempt = &run.steps[&baton::model::pipeline::StepName("s".into())].attempts[0];
    assert_eq!(attempt.run_id, Some(keyed[0].id));
    h.shutdown().await;
}
