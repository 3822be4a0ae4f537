//! The rolling backfill of `pipelines/weekly_backfill.yaml`: every Saturday at 20:00 it re-runs
//! the last 7 days, each into its own schema, two at a time. Run with the real file against the
//! emulator on a manual clock.

#![allow(clippy::unwrap_used)]

use crate::support::daemon::Harness;
use crate::support::scenario::scenario;
use crate::support::t;
use baton::engine::backfill::{BackfillId, BackfillState};
use baton::engine::state::{PipelineRunState, RunOrigin};
use std::path::Path;

fn scenario_yaml() -> String {
    scenario(&[
        "{ id: 559070, name: seeds, duration: 2m }",
        "{ id: 559071, name: models, duration: 4m }",
        "{ id: 559072, name: tests, duration: 2m }",
    ])
}

#[tokio::test]
async fn the_weekly_example_rebuilds_the_last_seven_days_two_at_a_time() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/weekly_backfill.yaml");
    let pipelines = baton::config::load_pipelines(&[file]).unwrap_or_else(|d| panic!("{d}"));
    let rolling = pipelines[0]
        .backfill
        .clone()
        .expect("the example declares a rolling backfill");
    assert_eq!(rolling.max_active, 2);
    // Saturday 2026-03-21, ten minutes before the rolling tick.
    let h = Harness::start("2026-03-21T19:50:00Z", &scenario_yaml(), pipelines).await;
    h.run_until(t("2026-03-21T19:59:50Z"), 60).await;
    assert!(h.emulator.runs().is_empty());

    let id = BackfillId("weekly_backfill-rolling-20260321T2000".into());
    let mut most = 0;
    h.clock.set(t("2026-03-21T20:00:00Z"));
    h.settle().await;
    while h.now() < t("2026-03-22T02:00:00Z") {
        let (active, state) = {
            let id = id.clone();
            h.daemon
                .inspect(move |e, _| {
                    let active = e
                        .state()
                        .runs
                        .values()
                        .filter(|r| {
                            r.origin
                                == RunOrigin::Backfill {
                                    backfill: id.0.clone(),
                                }
                        })
                        .filter(|r| !r.state.is_terminal())
                        .count();
                    (active, e.state().backfills.get(&id).map(|b| b.state))
                })
                .await
                .unwrap()
        };
        assert!(active <= 2, "{active} active");
        most = most.max(active);
        assert!(state.is_some(), "the rolling tick created the backfill");
        if state != Some(BackfillState::Running) {
            assert_eq!(state, Some(BackfillState::Succeeded));
            break;
        }
        h.clock.set(h.now() + chrono::Duration::seconds(30));
        h.settle().await;
    }
    assert_eq!(most, 2);
    let mut schemas: Vec<String> = h
        .runs_of(559071)
        .into_iter()
        .map(|r| r.request.schema_override.unwrap())
        .collect();
    schemas.sort();
    let expected: Vec<String> = (14..=20).map(|d| format!("backfill_202603{d}")).collect();
    assert_eq!(
        schemas, expected,
        "one run per day of the window, each in its own schema"
    );
    let run = h.pipeline_run("weekly_backfill@2026-03-14T20:00:00Z").await;
    assert_eq!(run.state, PipelineRunState::Succeeded);
    h.shutdown().await;
}
