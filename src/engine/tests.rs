//! The engine as data: events in, actions and states out, on a hand-moved clock.

use super::event::{Action, Event, Input, OperatorRequest, TriggerResult};
use super::state::{AttemptOutcome, AttemptRef, PipelineRunId, PipelineRunState, State, StepState};
use super::{Engine, EngineConfig};
use crate::dbt_cloud::wire::{Run, RunStatus};
use crate::ids::{JobId, RunId};
use crate::model::pipeline::{
    CatchupPolicy, ConcurrencyPolicy, Pipeline, PipelineName, RetryPolicy, ScheduleSpec, Step,
    StepLimits, StepName,
};
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;

/// A changed run as the store would write it (the tests read writes whole).
fn resolve(write: super::state::Write, state: &State) -> super::state::Write {
    match write {
        super::state::Write::Changed(id) => {
            super::state::Write::Run(Box::new(state.runs[&id].clone()))
        }
        other => other,
    }
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn step(name: &str, job: i64, deps: &[&str]) -> Step {
    Step {
        name: StepName(name.into()),
        job_id: JobId(job),
        depends_on: deps.iter().map(|d| StepName((*d).into())).collect(),
        overrides: BTreeMap::new(),
        limits: StepLimits::default().shared(),
        account: Default::default(),
        job_ref: None,
    }
}

fn pipeline(name: &str, cron: &str, steps: Vec<Step>) -> Pipeline {
    Pipeline {
        name: PipelineName(name.into()),
        description: None,
        source: "test.yaml".into(),
        schedule: Some(ScheduleSpec {
            cron: cron.into(),
            timezone: chrono_tz::UTC,
            catchup: CatchupPolicy::Latest,
        }),
        concurrency: ConcurrencyPolicy::Skip,
        suspended: false,
        cause: None,
        backfill: None,
        deadline: None,
        steps,
    }
}

/// A diamond: a -> (b, c) -> d, daily at 02:00.
fn diamond() -> Pipeline {
    pipeline(
        "diamond",
        "0 2 * * *",
        vec![
            step("a", 1, &[]),
            step("b", 2, &["a"]),
            step("c", 3, &["a"]),
            step("d", 4, &["b", "c"]),
        ],
    )
}

struct Harness {
    engine: Engine,
    now: DateTime<Utc>,
    /// Every write of every step so far, not yet looked at.
    writes: Vec<super::state::Write>,
    next_run: i64,
    /// dbt run id -> job id, for the runs the harness created.
    runs: BTreeMap<i64, i64>,
}

impl Harness {
    fn new(pipelines: Vec<Pipeline>, start: &str) -> Self {
        Self::with_state(pipelines, start, State::default(), EngineConfig::default())
    }

    fn with_state(
        pipelines: Vec<Pipeline>,
        start: &str,
        state: State,
        config: EngineConfig,
    ) -> Self {
        let now = t(start);
        let mut engine = Engine::new(config, pipelines, state, now).unwrap();
        let writes = engine
            .step([], now)
            .writes
            .into_iter()
            .map(|write| resolve(write, engine.state()))
            .collect();
        Self {
            engine,
            now,
            writes,
            next_run: 1000,
            runs: BTreeMap::new(),
        }
    }

    fn at(&mut self, when: &str) -> Vec<Action> {
        self.now = t(when);
        self.step(None)
    }

    fn advance(&mut self, secs: i64) -> Vec<Action> {
        self.now += Duration::seconds(secs);
        self.step(None)
    }

    fn apply(&mut self, event: Event) -> Vec<Action> {
        self.step(Some(event))
    }

    /// One engine step at `now`; keeps the writes, returns the actions.
    fn step(&mut self, event: Option<Event>) -> Vec<Action> {
        let output = self.engine.step(event.map(Input::Event), self.now);
        let state = self.engine.state();
        self.writes
            .extend(output.writes.into_iter().map(|write| resolve(write, state)));
        output.actions
    }

    /// The writes of every step since the last call.
    fn take_writes(&mut self) -> Vec<super::state::Write> {
        std::mem::take(&mut self.writes)
    }

    fn run(&self, id: i64, job: i64, status: RunStatus) -> Run {
        serde_json::from_value(serde_json::json!({
            "id": id, "status": status.code(), "job_definition_id": job,
            "href": format!("https://cloud.example/runs/{id}/"),
        }))
        .unwrap()
    }

    /// Answers every trigger in `actions` with a queued run; returns the other actions.
    fn accept_all(&mut self, actions: Vec<Action>) -> Vec<Action> {
        let mut rest = Vec::new();
        for action in actions {
            match action {
                Action::Trigger { attempt, job, .. } => {
                    self.next_run += 1;
                    self.runs.insert(self.next_run, job.0);
                    let run = self.run(self.next_run, job.0, RunStatus::Queued);
                    rest.extend(self.apply(Event::Triggered {
                        attempt,
                        result: TriggerResult::Accepted(Box::new(run)),
                    }));
                }
                other => rest.push(other),
            }
        }
        rest
    }

    fn finish_job(&mut self, job: i64, status: RunStatus) -> Vec<Action> {
        let id = *self
            .runs
            .iter()
            .rev()
            .find(|(_, j)| **j == job)
            .map(|(id, _)| id)
            .expect("job has a run");
        let run = self.run(id, job, status);
        self.apply(Event::RunsSeen { runs: vec![run] })
    }

    fn step_state(&self, run: &str, step: &str) -> StepState {
        self.engine.state().runs[&PipelineRunId(run.into())].steps[&StepName(step.into())].state
    }

    fn run_state(&self, run: &str) -> PipelineRunState {
        self.engine.state().runs[&PipelineRunId(run.into())].state
    }
}

fn triggered_jobs(actions: &[Action]) -> Vec<i64> {
    let mut jobs: Vec<i64> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Trigger { job, .. } => Some(job.0),
            _ => None,
        })
        .collect();
    jobs.sort();
    jobs
}

const RUN: &str = "diamond@2026-03-01T02:00:00Z";

#[test]
fn a_diamond_runs_in_dag_order_with_fan_in() {
    let mut h = Harness::new(vec![diamond()], "2026-03-01T01:00:00Z");
    assert!(h.at("2026-03-01T01:59:59Z").is_empty());
    let actions = h.at("2026-03-01T02:00:00Z");
    assert_eq!(triggered_jobs(&actions), vec![1]);
    let rest = h.accept_all(actions);
    assert!(rest.is_empty(), "{rest:?}");

    let next = h.finish_job(1, RunStatus::Success);
    assert_eq!(triggered_jobs(&next), vec![2, 3], "b and c start together");
    h.accept_all(next);
    let after_b = h.finish_job(2, RunStatus::Success);
    assert!(triggered_jobs(&after_b).is_empty(), "d waits for c");
    let after_c = h.finish_job(3, RunStatus::Success);
    assert_eq!(triggered_jobs(&after_c), vec![4]);
    h.accept_all(after_c);
    h.finish_job(4, RunStatus::Success);
    assert_eq!(h.run_state(RUN), PipelineRunState::Succeeded);
}

#[test]
fn a_failed_step_stops_its_downstream_but_not_the_independent_branch() {
    let mut p = diamond();
    p.steps.push(step("e", 5, &["c"]));
    let mut h = Harness::new(vec![p], "2026-03-01T01:00:00Z");
    let a = h.at("2026-03-01T02:00:00Z");
    h.accept_all(a);
    let bc = h.finish_job(1, RunStatus::Success);
    h.accept_all(bc);
    h.finish_job(2, RunStatus::Error);
    assert_eq!(h.step_state(RUN, "b"), StepState::Failed);
    assert_eq!(h.step_state(RUN, "d"), StepState::UpstreamFailed);
    let e = h.finish_job(3, RunStatus::Success);
    assert_eq!(triggered_jobs(&e), vec![5], "the branch through c goes on");
    h.accept_all(e);
    assert_eq!(h.run_state(RUN), PipelineRunState::Running);
    h.finish_job(5, RunStatus::Success);
    assert_eq!(h.run_state(RUN), PipelineRunState::Failed);
}

#[test]
fn an_error_is_retried_after_backoff_through_rerun_when_from_failure() {
    let mut p = pipeline("flaky", "0 2 * * *", vec![step("only", 9, &[])]);
    std::sync::Arc::make_mut(&mut p.steps[0].limits).retry = RetryPolicy {
        attempts: 3,
        backoff: std::time::Duration::from_secs(60),
        max_backoff: std::time::Duration::from_secs(600),
        from_failure: true,
        ..RetryPolicy::default()
    };
    let mut h = Harness::new(vec![p], "2026-03-01T01:00:00Z");
    let first = h.at("2026-03-01T02:00:00Z");
    h.accept_all(first);
    let failed_run = h.next_run;
    let after_error = h.finish_job(9, RunStatus::Error);
    assert!(
        after_error
            .iter()
            .all(|a| matches!(a, Action::FetchFailureDetails { .. })),
        "no retry before the backoff (only the failure details are fetched): {after_error:?}"
    );
    assert!(matches!(
        h.step_state("flaky@2026-03-01T02:00:00Z", "only"),
        StepState::WaitingRetry { .. }
    ));
    assert!(h
        .advance(59)
        .iter()
        .all(|a| !matches!(a, Action::Trigger { .. })));
    let retry = h.advance(1);
    let rerun = retry
        .iter()
        .find_map(|a| match a {
            Action::Trigger {
                rerun_of, request, ..
            } => Some((*rerun_of, request.cause.clone())),
            _ => None,
        })
        .expect("retry triggered");
    assert_eq!(rerun.0, Some(RunId(failed_run)));
    assert!(rerun.1.contains("attempt 2"), "{}", rerun.1);
    h.accept_all(retry);
    h.finish_job(9, RunStatus::Success);
    assert_eq!(
        h.run_state("flaky@2026-03-01T02:00:00Z"),
        PipelineRunState::Succeeded
    );
}

#[test]
fn an_ambiguous_trigger_is_reconciled_before_anything_is_sent_again() {
    let mut h = Harness::new(
        vec![pipeline("p", "0 2 * * *", vec![step("s", 7, &[])])],
        "2026-03-01T01:00:00Z",
    );
    let actions = h.at("2026-03-01T02:00:00Z");
    let Action::Trigger {
        attempt, request, ..
    } = actions[0].clone()
    else {
        panic!("expected a trigger: {actions:?}");
    };
    let after = h.apply(Event::Triggered {
        attempt: attempt.clone(),
        result: TriggerResult::Ambiguous {
            message: "502".into(),
        },
    });
    assert!(after.is_empty(), "nothing re-sent at once: {after:?}");
    let reconcile = h.advance(10);
    let key = match &reconcile[..] {
        [Action::Reconcile { key, .. }] => key.clone(),
        other => panic!("expected one reconcile: {other:?}"),
    };
    assert!(request.cause.contains(&key.0));
    // Nothing found: send again, with the same key.
    let resend = h.apply(Event::Reconciled {
        attempt: attempt.clone(),
        found: None,
    });
    match &resend[..] {
        [Action::Trigger { request: again, .. }] => assert_eq!(again.cause, request.cause),
        other => panic!("expected a re-send: {other:?}"),
    }
    // This time the run is found on reconciliation after another ambiguous answer: adopted.
    h.apply(Event::Triggered {
        attempt: attempt.clone(),
        result: TriggerResult::Ambiguous {
            message: "timeout".into(),
        },
    });
    h.advance(10);
    let run = h.run(555, 7, RunStatus::Running);
    let after = h.apply(Event::Reconciled {
        attempt: attempt.clone(),
        found: Some(Box::new(run)),
    });
    assert!(triggered_jobs(&after).is_empty());
    let a = &h.engine.state().runs[&attempt.run].steps[&attempt.step].attempts[0];
    assert_eq!(a.run_id, Some(RunId(555)));
    assert_eq!(a.sends, 2);
}

#[test]
fn a_restart_reconciles_every_triggering_attempt_instead_of_sending() {
    let p = pipeline("p", "0 2 * * *", vec![step("s", 7, &[])]);
    let mut h = Harness::new(vec![p.clone()], "2026-03-01T01:00:00Z");
    let actions = h.at("2026-03-01T02:00:00Z");
    assert_eq!(triggered_jobs(&actions), vec![7]);
    // Crash: the trigger's answer never arrives. Restart from what was written.
    let mut state = State::default();
    for w in h.take_writes() {
        match w {
            super::state::Write::Run(r) => {
                state.runs.insert(r.id.clone(), *r);
            }
            super::state::Write::Cursor(n, c) => {
                state.cursors.insert(n, c);
            }
            super::state::Write::DeleteRun(_)
            | super::state::Write::Changed(_)
            | super::state::Write::Archive(_)
            | super::state::Write::Backfill(_) => {}
        }
    }
    // A new leader taking over holds off until no request of the old one can still land.
    let takeover = EngineConfig {
        takeover_hold: std::time::Duration::from_secs(30),
        ..EngineConfig::default()
    };
    let mut leader = Engine::new(
        takeover,
        vec![p.clone()],
        state.clone(),
        t("2026-03-01T02:00:05Z"),
    )
    .unwrap();
    assert!(leader.plan(t("2026-03-01T02:00:34Z")).actions.is_empty());
    let held = leader.plan(t("2026-03-01T02:00:35Z"));
    assert!(
        matches!(&held.actions[..], [Action::Reconcile { .. }]),
        "{:?}",
        held.actions
    );
    let mut engine = Engine::new(
        EngineConfig::default(),
        vec![p],
        state,
        t("2026-03-01T02:00:05Z"),
    )
    .unwrap();
    let output = engine.step([], t("2026-03-01T02:00:05Z"));
    assert!(
        matches!(&output.actions[..], [Action::Reconcile { .. }]),
        "{:?}",
        output.actions
    );
}

#[test]
fn a_timeout_cancels_and_waits_for_dbt_cloud_to_confirm() {
    let mut p = pipeline("p", "0 2 * * *", vec![step("s", 7, &[])]);
    std::sync::Arc::make_mut(&mut p.steps[0].limits).timeout =
        Some(std::time::Duration::from_secs(3600));
    let mut h = Harness::new(vec![p], "2026-03-01T01:00:00Z");
    let a = h.at("2026-03-01T02:00:00Z");
    h.accept_all(a);
    let before = h.advance(3599);
    assert!(!before.iter().any(|a| matches!(a, Action::Cancel { .. })));
    let at_deadline = h.advance(1);
    let (attempt, run) = at_deadline
        .iter()
        .find_map(|a| match a {
            Action::Cancel { attempt, run } => Some((attempt.clone(), *run)),
            _ => None,
        })
        .expect("cancel at the deadline");
    // dbt Cloud acknowledges but the run is still running: not done yet.
    let still = h.run(run.0, 7, RunStatus::Running);
    h.apply(Event::CancelAcknowledged {
        attempt: attempt.clone(),
        run: Box::new(still),
    });
    assert_eq!(
        h.step_state("p@2026-03-01T02:00:00Z", "s"),
        StepState::Running
    );
    h.finish_job(7, RunStatus::Cancelled);
    let step = &h.engine.state().runs[&attempt.run].steps[&attempt.step];
    assert_eq!(step.state, StepState::Failed);
    assert_eq!(step.attempts[0].outcome, Some(AttemptOutcome::TimedOut));
}

#[test]
fn a_run_stuck_in_the_queue_hits_queue_timeout() {
    let mut p = pipeline("p", "0 2 * * *", vec![step("s", 7, &[])]);
    std::sync::Arc::make_mut(&mut p.steps[0].limits).queue_timeout =
        Some(std::time::Duration::from_secs(600));
    let mut h = Harness::new(vec![p], "2026-03-01T01:00:00Z");
    let a = h.at("2026-03-01T02:00:00Z");
    h.accept_all(a);
    let actions = h.advance(600);
    assert!(actions.iter().any(|a| matches!(a, Action::Cancel { .. })));
    h.finish_job(7, RunStatus::Cancelled);
    let run = &h.engine.state().runs[&PipelineRunId("p@2026-03-01T02:00:00Z".into())];
    assert_eq!(
        run.steps[&StepName("s".into())].attempts[0].outcome,
        Some(AttemptOutcome::QueueTimedOut)
    );
}

#[test]
fn dbt_clouds_own_timeout_and_an_outside_cancel_are_classes_of_their_own() {
    let mut p = pipeline("p", "0 2 * * *", vec![step("s", 7, &[])]);
    std::sync::Arc::make_mut(&mut p.steps[0].limits).retry = RetryPolicy {
        attempts: 2,
        on_cancel: true,
        ..RetryPolicy::default()
    };
    let mut h = Harness::new(vec![p], "2026-03-01T01:00:00Z");
    let a = h.at("2026-03-01T02:00:00Z");
    h.accept_all(a);
    let mut run = h.run(h.next_run, 7, RunStatus::Cancelled);
    run.status_message = Some("This run timed out after running for 1 hour, which exceeded the configured timeout of 3600 seconds.".into());
    h.apply(Event::RunsSeen { runs: vec![run] });
    let step = &h.engine.state().runs[&PipelineRunId("p@2026-03-01T02:00:00Z".into())].steps
        [&StepName("s".into())];
    assert_eq!(step.attempts[0].outcome, Some(AttemptOutcome::TimedOut));
    assert_eq!(
        step.state,
        StepState::Failed,
        "timeouts are not retried unless on_timeout"
    );
}

#[test]
fn concurrency_skip_queue_and_cancel_running() {
    let every_minute = |policy| {
        let mut p = pipeline("p", "* * * * *", vec![step("s", 7, &[])]);
        p.concurrency = policy;
        p
    };
    // skip: the second tick creates nothing while the first runs.
    let mut h = Harness::new(
        vec![every_minute(ConcurrencyPolicy::Skip)],
        "2026-03-01T01:59:30Z",
    );
    let a = h.at("2026-03-01T02:00:00Z");
    h.accept_all(a);
    let second = h.at("2026-03-01T02:01:00Z");
    assert!(triggered_jobs(&second).is_empty());
    assert!(!h
        .engine
        .state()
        .runs
        .contains_key(&PipelineRunId("p@2026-03-01T02:01:00Z".into())));

    // queue: the second tick waits and starts when the first ends.
    let mut h = Harness::new(
        vec![every_minute(ConcurrencyPolicy::Queue)],
        "2026-03-01T01:59:30Z",
    );
    let a = h.at("2026-03-01T02:00:00Z");
    h.accept_all(a);
    assert!(triggered_jobs(&h.at("2026-03-01T02:01:00Z")).is_empty());
    assert_eq!(
        h.run_state("p@2026-03-01T02:01:00Z"),
        PipelineRunState::Queued
    );
    let next = h.finish_job(7, RunStatus::Success);
    assert_eq!(triggered_jobs(&next), vec![7]);

    // cancel_running: the first is cancelled (confirmed), then the second starts.
    let mut h = Harness::new(
        vec![every_minute(ConcurrencyPolicy::CancelRunning)],
        "2026-03-01T01:59:30Z",
    );
    let a = h.at("2026-03-01T02:00:00Z");
    h.accept_all(a);
    let actions = h.at("2026-03-01T02:01:00Z");
    assert!(actions.iter().any(|a| matches!(a, Action::Cancel { .. })));
    assert!(
        triggered_jobs(&actions).is_empty(),
        "waits for the cancel to be confirmed"
    );
    let next = h.finish_job(7, RunStatus::Cancelled);
    assert_eq!(
        h.run_state("p@2026-03-01T02:00:00Z"),
        PipelineRunState::Cancelled
    );
    assert_eq!(triggered_jobs(&next), vec![7]);
}

#[test]
fn catch_up_after_downtime_follows_each_policy() {
    let hourly = |policy| {
        let mut p = pipeline("p", "0 * * * *", vec![step("s", 7, &[])]);
        p.schedule.as_mut().unwrap().catchup = policy;
        p.concurrency = ConcurrencyPolicy::Queue;
        p
    };
    for (policy, expected) in [
        (CatchupPolicy::None, 0),
        (CatchupPolicy::Latest, 1),
        (CatchupPolicy::All, 10),
    ] {
        let mut h = Harness::new(vec![hourly(policy)], "2026-03-01T00:30:00Z");
        // A day of downtime: the engine next plans 24 hours later.
        h.at("2026-03-02T00:30:00Z");
        let created: Vec<String> = h.engine.state().runs.keys().map(|k| k.0.clone()).collect();
        assert_eq!(created.len(), expected, "{policy:?}");
        if policy == CatchupPolicy::All {
            // The ten most recent missed hours, oldest first.
            assert_eq!(created[0], "p@2026-03-01T15:00:00Z");
            assert_eq!(created[9], "p@2026-03-02T00:00:00Z");
        }
        if policy == CatchupPolicy::Latest {
            assert_eq!(created[0], "p@2026-03-02T00:00:00Z");
        }
    }
}

#[test]
fn the_in_flight_cap_holds_ready_steps_back() {
    let p = pipeline(
        "wide",
        "0 2 * * *",
        (0..5)
            .map(|i| step(&format!("s{i}"), 100 + i, &[]))
            .collect(),
    );
    let config = EngineConfig {
        max_in_flight: 2,
        ..EngineConfig::default()
    };
    let mut h = Harness::with_state(vec![p], "2026-03-01T01:00:00Z", State::default(), config);
    let first = h.at("2026-03-01T02:00:00Z");
    assert_eq!(triggered_jobs(&first).len(), 2);
    h.accept_all(first);
    let next = h.finish_job(100, RunStatus::Success);
    assert_eq!(triggered_jobs(&next).len(), 1);
}

#[test]
fn operator_cancel_and_retry_of_a_pipeline_run() {
    let mut h = Harness::new(vec![diamond()], "2026-03-01T01:00:00Z");
    let a = h.at("2026-03-01T02:00:00Z");
    h.accept_all(a);
    let actions = h.apply(Event::Operator(OperatorRequest::CancelPipelineRun {
        run: PipelineRunId(RUN.into()),
    }));
    assert!(actions.iter().any(|a| matches!(a, Action::Cancel { .. })));
    h.finish_job(1, RunStatus::Cancelled);
    assert_eq!(h.run_state(RUN), PipelineRunState::Cancelled);
    let retry = h.apply(Event::Operator(OperatorRequest::RetryPipelineRun {
        run: PipelineRunId(RUN.into()),
    }));
    assert_eq!(triggered_jobs(&retry), vec![1]);
    let Action::Trigger { attempt, .. } = &retry[0] else {
        panic!()
    };
    assert_eq!(
        attempt,
        &AttemptRef {
            run: PipelineRunId(RUN.into()),
            step: StepName("a".into()),
            number: 2
        }
    );
}

#[test]
fn failure_details_are_fetched_again_while_run_results_are_not_uploaded_and_after_a_restart() {
    use super::details::{DetailsFetch, FailureDetails, MAX_FETCHES, REFETCH_AFTER_SECS};
    let p = pipeline("p", "0 2 * * *", vec![step("s", 7, &[])]);
    let mut h = Harness::new(vec![p.clone()], "2026-03-01T01:00:00Z");
    let first = h.at("2026-03-01T02:00:00Z");
    h.accept_all(first);
    let actions = h.finish_job(7, RunStatus::Error);
    let fetch = |actions: &[Action]| {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::FetchFailureDetails { attempt, run } => Some((attempt.clone(), *run)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let wanted = fetch(&actions);
    assert_eq!(wanted.len(), 1, "{actions:?}");
    assert_eq!(
        h.step_state("p@2026-03-01T02:00:00Z", "s"),
        StepState::Failed
    );
    let (attempt, _) = wanted[0].clone();
    let missing = FailureDetails {
        failed_step: Some("Invoke dbt with `dbt build`".into()),
        run_results_missing: true,
        ..FailureDetails::default()
    };
    // Upload lag: asked again after REFETCH_AFTER_SECS, up to MAX_FETCHES times, never sooner.
    for n in 1..MAX_FETCHES {
        let after = h.apply(Event::FailureDetails {
            attempt: attempt.clone(),
            fetch: DetailsFetch::Fetched(missing.clone()),
        });
        assert!(fetch(&after).is_empty(), "fetch {n} repeated at once");
        assert!(fetch(&h.advance(REFETCH_AFTER_SECS - 1)).is_empty());
        assert_eq!(
            fetch(&h.advance(1)).len(),
            1,
            "fetch {} after the wait",
            n + 1
        );
    }
    let last = h.apply(Event::FailureDetails {
        attempt: attempt.clone(),
        fetch: DetailsFetch::Fetched(missing.clone()),
    });
    assert!(fetch(&last).is_empty());
    assert!(
        fetch(&h.advance(3600)).is_empty(),
        "gives up after {MAX_FETCHES}"
    );
    // An hour later the run is archived, with its details.
    let writes = h.take_writes();
    let stored = writes
        .iter()
        .find_map(|w| match w {
            super::state::Write::Archive(r) => Some(r.as_ref().clone()),
            _ => None,
        })
        .expect("the details are persisted");
    assert_eq!(
        stored.steps[&StepName("s".into())].attempts[0].details,
        Some(missing)
    );

    // A restart asks for the details an error attempt does not have yet.
    let mut state = State::default();
    let mut run = stored;
    run.steps.get_mut(&StepName("s".into())).unwrap().attempts[0].details = None;
    state.runs.insert(run.id.clone(), run);
    let h2 = Harness::with_state(
        vec![p],
        "2026-03-01T03:00:00Z",
        state,
        EngineConfig::default(),
    );
    assert!(
        h2.engine.has_calls_in_flight(),
        "the restart asked for the details"
    );
}

#[test]
fn retention_deletes_a_long_history_in_small_batches() {
    use super::state::{ArchivedRun, PipelineRunState, Write};
    let p = pipeline("p", "0 2 * * *", vec![step("s", 7, &[])]);
    let mut state = State::default();
    let long_ago = t("2025-01-01T00:00:00Z");
    for hour in 0..2500 {
        let at = long_ago + chrono::Duration::hours(hour);
        state.archived.insert(
            super::state::PipelineRunId::new(&p.name, at),
            ArchivedRun {
                state: PipelineRunState::Succeeded,
                finished_at: at,
            },
        );
    }
    let now = t("2026-03-01T00:00:00Z");
    let mut engine = Engine::new(EngineConfig::default(), vec![p], state, now).unwrap();
    let mut deleted_per_pass = Vec::new();
    for minute in 0..4 {
        engine.plan(now + chrono::Duration::minutes(minute));
        let deletes = engine
            .take_writes()
            .iter()
            .filter(|w| matches!(w, Write::DeleteRun(_)))
            .count();
        deleted_per_pass.push(deletes);
    }
    assert_eq!(deleted_per_pass, vec![1000, 1000, 500, 0]);
    assert!(engine.state().archived.is_empty());
}

mod predict;
