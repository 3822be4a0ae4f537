//! Engine tests as data: `check(pipelines, script)` feeds a script of inputs to a fresh engine and
//! prints, for each line, the transitions and actions of the step it caused, to compare with an
//! inline snapshot. Script lines:
//! - `at 2026-03-01T02:00:00Z`: a step at that time;
//! - `accept`: dbt Cloud accepts every trigger of the last step (queued runs 1001, 1002, ...);
//! - `seen STEP STATUS`: a poll sees STEP's latest dbt Cloud run in STATUS (`running`, `success`,
//!   `error`, `cancelled`);
//! - `trigger PIPELINE [DATE]`, `cancel RUN`, `retry RUN`, `pause PIPELINE`, `resume PIPELINE`:
//!   operator requests, whose answers are printed too.

use super::event::{
    Action, Event, Input, OperatorDate, OperatorRequest, Output, ReplyTo, TriggerResult,
};
use super::state::{PipelineRunId, State};
use super::{Engine, EngineConfig};
use crate::dbt_cloud::wire::{Run, RunStatus};
use crate::model::pipeline::PipelineName;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[allow(clippy::unwrap_used)]
fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Runs `script` against the pipelines in `pipelines` (YAML documents separated by `---`),
/// starting at `start`, and returns what each line caused.
pub(super) fn check(pipelines: &str, start: &str, script: &str) -> String {
    run_script(pipelines, start, script).1
}

/// Runs `script` as `check` does; returns the engine, what each line caused, and the time the
/// script ended at.
#[allow(clippy::unwrap_used)]
pub(super) fn run_script(
    pipelines: &str,
    start: &str,
    script: &str,
) -> (Engine, String, DateTime<Utc>) {
    let defs = pipelines
        .split("\n---\n")
        .map(|yaml| crate::config::load_pipeline_str("test.yaml", yaml).unwrap())
        .collect();
    let mut now = t(start);
    let mut engine = Engine::new(EngineConfig::default(), defs, State::default(), now).unwrap();
    engine.step([], now);
    let mut last_actions: Vec<Action> = Vec::new();
    // dbt Cloud run id and job of each step's latest run, by step name.
    let mut dbt_runs: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut next_run = 1000;
    let mut out = String::new();
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut inputs = Vec::new();
        match words.as_slice() {
            ["at", when] => now = t(when),
            ["accept"] => {
                for action in &last_actions {
                    if let Action::Trigger { attempt, job, .. } = action {
                        next_run += 1;
                        dbt_runs.insert(attempt.step.0.clone(), (next_run, job.0));
                        inputs.push(Input::Event(Event::Triggered {
                            attempt: attempt.clone(),
                            result: TriggerResult::Accepted(Box::new(run(
                                next_run,
                                job.0,
                                RunStatus::Queued,
                            ))),
                        }));
                    }
                }
            }
            ["seen", step, status] => {
                let (id, job) = dbt_runs[*step];
                let status = match *status {
                    "running" => RunStatus::Running,
                    "success" => RunStatus::Success,
                    "error" => RunStatus::Error,
                    "cancelled" => RunStatus::Cancelled,
                    other => panic!("unknown status {other}"),
                };
                inputs.push(Input::Event(Event::RunsSeen {
                    runs: vec![run(id, job, status)],
                }));
            }
            [command, target, rest @ ..] => {
                let pipeline = PipelineName((*target).into());
                let run = PipelineRunId((*target).into());
                let request = match *command {
                    "trigger" => OperatorRequest::TriggerPipeline {
                        pipeline,
                        logical_date: rest.first().map(|d| OperatorDate::Text((*d).into())),
                    },
                    "cancel" => OperatorRequest::CancelPipelineRun { run },
                    "retry" => OperatorRequest::RetryPipelineRun { run },
                    "pause" => OperatorRequest::Pause { pipeline },
                    "resume" => OperatorRequest::Resume { pipeline },
                    other => panic!("unknown command {other}"),
                };
                inputs.push(Input::Request {
                    reply: ReplyTo(0),
                    request,
                });
            }
            _ => panic!("cannot read the script line `{line}`"),
        }
        let output = engine.step(inputs, now);
        writeln!(out, "> {line}").unwrap();
        render(&mut out, &output);
        last_actions = output.actions;
    }
    (engine, out, now)
}

fn run(id: i64, job: i64, status: RunStatus) -> Run {
    serde_json::from_value(serde_json::json!({
        "id": id, "status": status.code(), "job_definition_id": job,
        "href": format!("https://cloud.example/runs/{id}/"),
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

/// One line per transition, action and reply.
fn render(out: &mut String, output: &Output) {
    for t in &output.transitions {
        let run = t.run.as_ref().map_or(String::new(), |r| format!(" {r}"));
        let step = t.step.as_ref().map_or(String::new(), |s| format!(" {s}"));
        let detail = match t.detail.as_str() {
            "" => String::new(),
            detail => format!(": {detail}"),
        };
        let _ = writeln!(out, "  {}{run}{step}{detail}", t.what.name());
    }
    for action in &output.actions {
        let _ = match action {
            Action::Trigger {
                attempt,
                job,
                rerun_of,
                ..
            } => match rerun_of {
                Some(failed) => writeln!(out, "  rerun {failed} as job {job} for {attempt}"),
                None => writeln!(out, "  trigger job {job} for {attempt}"),
            },
            Action::Reconcile { attempt, job, .. } => {
                writeln!(out, "  reconcile job {job} for {attempt}")
            }
            Action::Poll { runs } => {
                let runs: Vec<String> = runs.iter().map(|r| r.to_string()).collect();
                writeln!(out, "  poll {}", runs.join(", "))
            }
            Action::Cancel { attempt, run } => writeln!(out, "  cancel {run} of {attempt}"),
            Action::FetchFailureDetails { attempt, run } => {
                writeln!(out, "  fetch failure details of {run} for {attempt}")
            }
        };
    }
    for reply in &output.replies {
        let _ = match &reply.result {
            Ok(outcome) => writeln!(out, "  ok: {outcome:?}"),
            Err(refusal) => writeln!(out, "  refused: {refusal}"),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::{check, run_script};
    use crate::engine::why::WhyReason;
    use crate::model::pipeline::{PipelineName, StepName};

    const CHAIN: &str = r#"
name: chain
schedule: { cron: "0 2 * * *" }
steps:
  staging: { job_id: 1 }
  marts: { job_id: 2, depends_on: [staging], retry: { attempts: 2, backoff: 1m } }
"#;

    #[test]
    fn a_chain_runs_in_order_and_retries_a_failed_step() {
        let out = check(
            CHAIN,
            "2026-03-01T01:59:00Z",
            "
            at 2026-03-01T02:00:00Z
            accept
            seen staging success
            accept
            seen marts error
            at 2026-03-01T02:01:30Z
            accept
            seen marts success
            ",
        );
        insta::assert_snapshot!(out, @r#"
        > at 2026-03-01T02:00:00Z
          pipeline_run_created chain@2026-03-01T02:00:00Z: scheduled
          pipeline_run_started chain@2026-03-01T02:00:00Z
          step_triggering chain@2026-03-01T02:00:00Z staging: triggering job 1
          trigger job 1 for chain@2026-03-01T02:00:00Z staging #1
        > accept
          step_triggered chain@2026-03-01T02:00:00Z staging: dbt Cloud run 1001
          step_status chain@2026-03-01T02:00:00Z staging: Queued (1)
        > seen staging success
          step_status chain@2026-03-01T02:00:00Z staging: Success (10)
          step_succeeded chain@2026-03-01T02:00:00Z staging
          step_triggering chain@2026-03-01T02:00:00Z marts: triggering job 2
          trigger job 2 for chain@2026-03-01T02:00:00Z marts #1
        > accept
          step_triggered chain@2026-03-01T02:00:00Z marts: dbt Cloud run 1002
          step_status chain@2026-03-01T02:00:00Z marts: Queued (1)
        > seen marts error
          step_status chain@2026-03-01T02:00:00Z marts: Error (20)
          step_retry_scheduled chain@2026-03-01T02:00:00Z marts: attempt 1 ended error; attempt 2 of 2 at 2026-03-01 02:01:00 UTC
          fetch failure details of 1002 for chain@2026-03-01T02:00:00Z marts #1
        > at 2026-03-01T02:01:30Z
          step_triggering chain@2026-03-01T02:00:00Z marts: triggering job 2
          trigger job 2 for chain@2026-03-01T02:00:00Z marts #2
        > accept
          step_triggered chain@2026-03-01T02:00:00Z marts: dbt Cloud run 1003
          step_status chain@2026-03-01T02:00:00Z marts: Queued (1)
        > seen marts success
          step_status chain@2026-03-01T02:00:00Z marts: Success (10)
          step_succeeded chain@2026-03-01T02:00:00Z marts
          pipeline_run_succeeded chain@2026-03-01T02:00:00Z
        "#);
    }

    #[test]
    fn operator_requests_are_answered_or_refused_with_the_reason() {
        let out = check(
            CHAIN,
            "2026-03-01T01:00:00Z",
            "
            trigger chain 2026-02-01
            trigger chain 2026-02-01
            trigger nope
            retry chain@2026-02-01T00:00:00Z
            cancel chain@2026-02-01T00:00:00Z
            cancel chain@2026-02-01T00:00:00Z
            retry chain@2026-02-01T00:00:00Z
            pause chain
            at 2026-03-01T02:00:00Z
            resume chain
            ",
        );
        insta::assert_snapshot!(out, @r#"
        > trigger chain 2026-02-01
          pipeline_run_created chain@2026-02-01T00:00:00Z: manual
          pipeline_run_started chain@2026-02-01T00:00:00Z
          step_triggering chain@2026-02-01T00:00:00Z staging: triggering job 1
          trigger job 1 for chain@2026-02-01T00:00:00Z staging #1
          ok: RunCreated(PipelineRunId("chain@2026-02-01T00:00:00Z"))
        > trigger chain 2026-02-01
          refused: pipeline run chain@2026-02-01T00:00:00Z exists already (Running); to run it again use `baton retry chain@2026-02-01T00:00:00Z` (if it failed) or give another logical date
        > trigger nope
          refused: no pipeline named `nope` is loaded
        > retry chain@2026-02-01T00:00:00Z
          refused: only a failed or cancelled pipeline run can be retried; chain@2026-02-01T00:00:00Z is Running
        > cancel chain@2026-02-01T00:00:00Z
          cancel_requested chain@2026-02-01T00:00:00Z: Operator
          ok: RunCancelled(PipelineRunId("chain@2026-02-01T00:00:00Z"))
        > cancel chain@2026-02-01T00:00:00Z
          cancel_requested chain@2026-02-01T00:00:00Z: Operator
          ok: RunCancelled(PipelineRunId("chain@2026-02-01T00:00:00Z"))
        > retry chain@2026-02-01T00:00:00Z
          refused: only a failed or cancelled pipeline run can be retried; chain@2026-02-01T00:00:00Z is Running
        > pause chain
          ok: Paused(PipelineName("chain"))
        > at 2026-03-01T02:00:00Z
        > resume chain
          ok: Resumed(PipelineName("chain"))
        "#);
    }

    /// What `why` answers after each script, for the pipeline or one step.
    #[test]
    fn why_names_the_reason_in_each_state() {
        let after_staging = "at 2026-03-01T02:00:00Z\naccept\nseen staging success\naccept";
        let marts_failed = format!("{after_staging}\nseen marts error");
        let cases: Vec<(String, Option<&str>, WhyReason)> = vec![
            (String::new(), None, WhyReason::Schedule),
            ("pause chain".into(), None, WhyReason::Paused),
            (
                "at 2026-03-01T02:00:00Z".into(),
                None,
                WhyReason::Triggering,
            ),
            (
                "at 2026-03-01T02:00:00Z\naccept".into(),
                None,
                WhyReason::DbtCloudQueue,
            ),
            (
                "at 2026-03-01T02:00:00Z\naccept\nseen staging running".into(),
                None,
                WhyReason::Running,
            ),
            (
                "at 2026-03-01T02:00:00Z\naccept".into(),
                Some("marts"),
                WhyReason::Upstream,
            ),
            (marts_failed.clone(), None, WhyReason::RetryBackoff),
            (marts_failed.clone(), Some("staging"), WhyReason::Finished),
            (
                "at 2026-03-01T02:00:00Z\ncancel chain@2026-03-01T02:00:00Z".into(),
                None,
                WhyReason::Cancelling,
            ),
            (
                format!("{after_staging}\ncancel chain@2026-03-01T02:00:00Z"),
                None,
                WhyReason::Cancelling,
            ),
        ];
        for (script, step, expected) in cases {
            let (engine, _, now) = run_script(CHAIN, "2026-03-01T01:59:00Z", &script);
            let step = step.map(|s| StepName(s.into()));
            let why = engine
                .why(&PipelineName("chain".into()), step.as_ref(), now)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(why.reason, expected, "after `{script}`: {}", why.sentence);
        }
    }
}
