//! Deadlines: a pipeline's `deadline` is how long after its logical date a run must have
//! succeeded. The engine decides lateness from the `now` it is given (no clock of its own): a run
//! still not done at its deadline is marked late once (`late_since`, persisted so a restart does
//! not announce it again) with a `PipelineRunLate` transition, and the plan wakes at the next
//! deadline so a sleeping loop (or a manual clock) looks at it in time.

use super::event::{Plan, TransitionKind};
use super::state::{PipelineRun, PipelineRunId, RunOrigin, StepState};
use super::{backfill::BackfillId, sooner, Engine};
use crate::model::pipeline::Pipeline;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

/// Runs with a deadline not yet found late, by deadline. An entry may outlive its run's need (the
/// run finished in time); it is dropped when its time comes.
#[derive(Debug, Default)]
pub(super) struct DeadlineQueue {
    due: BTreeSet<(DateTime<Utc>, PipelineRunId)>,
}

impl DeadlineQueue {
    /// Watches `run` if it has a deadline still ahead of a verdict.
    pub(super) fn watch(&mut self, run: &PipelineRun) {
        if let (Some(deadline), None) = (run.deadline, run.late_since) {
            if !run.state.is_terminal() {
                self.due.insert((deadline, run.id.clone()));
            }
        }
    }

    fn next(&self) -> Option<DateTime<Utc>> {
        self.due.first().map(|(at, _)| *at)
    }

    fn pop_due(&mut self, now: DateTime<Utc>) -> Vec<PipelineRunId> {
        let mut due = Vec::new();
        while self.due.first().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, id)) = self.due.pop_first() {
                due.push(id);
            }
        }
        due
    }
}

/// A duration in words, to the second (`1h 5m`, `40s`).
fn words(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    crate::humanize::between(from, to)
}

/// An instant in the run's pipeline zone and in UTC.
fn at(run: &PipelineRun, t: DateTime<Utc>) -> String {
    crate::humanize::when(t, crate::humanize::zone_of(&run.definition))
}

/// The steps a run is still waiting for, with their states (`marts (running), tests (pending)`).
pub fn waiting_for(run: &PipelineRun) -> String {
    let open: Vec<String> = run
        .definition
        .steps
        .iter()
        .filter_map(|s| {
            let state = run.steps.get(&s.name)?.state;
            (state != StepState::Succeeded).then(|| format!("{} ({})", s.name, state.name()))
        })
        .collect();
    if open.is_empty() {
        "nothing (every step is over)".to_string()
    } else {
        open.join(", ")
    }
}

/// "late: deadline 06:00Z passed 25m ago; still waiting for ...", for `baton why` and the like.
pub fn late_sentence(run: &PipelineRun, now: DateTime<Utc>) -> Option<String> {
    let deadline = run.deadline?;
    run.late_since?;
    Some(format!(
        "run {} is late: its deadline {} passed {} ago; still waiting for {}",
        run.id,
        at(run, deadline),
        words(deadline, now),
        waiting_for(run)
    ))
}

/// How long after its deadline a finished run ended, if it did.
pub fn finished_late_by(run: &PipelineRun) -> Option<String> {
    let (deadline, finished) = (run.deadline?, run.finished_at?);
    (finished > deadline).then(|| words(deadline, finished))
}

impl Engine {
    /// The deadline a new run gets: the pipeline's `deadline` after the logical date; for a
    /// backfill run only when its backfill asked for it.
    pub(super) fn deadline_of(
        &self,
        def: &Pipeline,
        logical_date: DateTime<Utc>,
        origin: &RunOrigin,
    ) -> Option<DateTime<Utc>> {
        let after = def.deadline?;
        if let RunOrigin::Backfill { backfill } = origin {
            let asked = self
                .state
                .backfills
                .get(&BackfillId(backfill.clone()))
                .is_some_and(|b| b.spec.deadline);
            if !asked {
                return None;
            }
        }
        Some(logical_date + super::to_chrono(after))
    }

    /// Marks the runs whose deadline came while they were not done, once each, and wakes the plan
    /// at the next deadline.
    pub(super) fn plan_deadlines(&mut self, now: DateTime<Utc>, plan: &mut Plan) {
        for id in self.index.deadlines.pop_due(now) {
            self.mark_late(&id, now, None);
        }
        plan.wake_at = sooner(plan.wake_at, self.index.deadlines.next());
    }

    /// A run that ends after its deadline without having been found late (its end and its
    /// deadline fell in the same turn) is announced late now, so every late run is announced
    /// exactly once. Returns how long after its deadline the run ended, for its final transition.
    pub(super) fn finishing_against_deadline(
        &mut self,
        id: &PipelineRunId,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let run = self.state.runs.get(id)?;
        let deadline = run.deadline?;
        if now <= deadline {
            return None;
        }
        let by = words(deadline, now);
        let when = at(run, deadline);
        if run.late_since.is_none() {
            self.mark_late(id, now, Some(&by));
        }
        Some(format!("{by} after its deadline {when}"))
    }

    fn mark_late(&mut self, id: &PipelineRunId, now: DateTime<Utc>, ended_by: Option<&str>) {
        let Some(run) = self.state.runs.get_mut(id) else {
            return;
        };
        let Some(deadline) = run.deadline else {
            return;
        };
        if run.late_since.is_some() || (run.state.is_terminal() && ended_by.is_none()) {
            return;
        }
        run.late_since = Some(now);
        let detail = match ended_by {
            Some(by) => format!(
                "deadline {} passed; the run ended {by} after it",
                at(run, deadline)
            ),
            None => format!(
                "deadline {} passed {} ago; still waiting for {}",
                at(run, deadline),
                words(deadline, now),
                waiting_for(run)
            ),
        };
        let run = run.clone();
        self.outbox.runs.insert(id.clone());
        self.note(now, &run, TransitionKind::PipelineRunLate, detail);
    }
}

#[cfg(test)]
mod tests {
    use crate::dbt_cloud::wire::{Run, RunStatus};
    use crate::engine::event::{Action, Event, OperatorRequest, TransitionKind, TriggerResult};
    use crate::engine::state::State;
    use crate::engine::{Engine, EngineConfig};
    use crate::ids::JobId;
    use crate::model::pipeline::{
        ConcurrencyPolicy, Pipeline, PipelineName, Step, StepLimits, StepName,
    };
    use chrono::{DateTime, Utc};
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// The one-step pipeline `p` with a one-hour deadline, triggered manually for its logical date
    /// 2026-01-01T00:00Z.
    fn engine() -> Engine {
        let step = Step {
            name: StepName("marts".into()),
            job_id: JobId(7),
            depends_on: Vec::new(),
            overrides: BTreeMap::new(),
            limits: StepLimits::default().shared(),
            account: Default::default(),
            job_ref: None,
        };
        let p = Pipeline {
            name: PipelineName("p".into()),
            description: None,
            source: "p.yaml".into(),
            schedule: None,
            concurrency: ConcurrencyPolicy::Skip,
            suspended: false,
            cause: None,
            steps: vec![step],
            backfill: None,
            deadline: Some(Duration::from_secs(3600)),
        };
        let now = t("2026-01-01T00:00:00Z");
        let mut e = Engine::new(EngineConfig::default(), vec![p], State::default(), now).unwrap();
        e.apply(
            Event::Operator(OperatorRequest::TriggerPipeline {
                pipeline: PipelineName("p".into()),
                logical_date: Some(now.into()),
            }),
            now,
        );
        e
    }

    fn late(e: &mut Engine) -> Vec<String> {
        e.take_transitions()
            .into_iter()
            .filter(|t| t.what == TransitionKind::PipelineRunLate)
            .map(|t| t.detail)
            .collect()
    }

    /// Accepts the trigger and finishes its run with `status` at `now`.
    fn finish(e: &mut Engine, actions: Vec<Action>, status: RunStatus, now: DateTime<Utc>) {
        for action in actions {
            if let Action::Trigger { attempt, .. } = action {
                let run = |s: RunStatus| -> Run {
                    serde_json::from_value(serde_json::json!({
                        "id": 55, "status": s.code(), "job_definition_id": 7,
                        "href": "https://cloud.example/runs/55/",
                    }))
                    .unwrap()
                };
                e.apply(
                    Event::Triggered {
                        attempt,
                        result: TriggerResult::Accepted(Box::new(run(RunStatus::Queued))),
                    },
                    now,
                );
                e.plan(now);
                e.apply(
                    Event::RunsSeen {
                        runs: vec![run(status)],
                    },
                    now,
                );
                e.plan(now);
            }
        }
    }

    #[test]
    fn a_run_past_its_deadline_is_late_once_and_the_plan_wakes_for_it() {
        let mut e = engine();
        let plan = e.plan(t("2026-01-01T00:00:00Z"));
        assert!(plan.wake_at.is_some_and(|w| w <= t("2026-01-01T01:00:00Z")));
        assert!(late(&mut e).is_empty());
        e.plan(t("2026-01-01T01:00:05Z"));
        let details = late(&mut e);
        assert_eq!(details.len(), 1, "{details:?}");
        assert!(
            details[0].contains("still waiting for marts (running)"),
            "{details:?}"
        );
        let run = e.state().runs.values().next().unwrap().clone();
        assert_eq!(run.late_since, Some(t("2026-01-01T01:00:05Z")));
        e.plan(t("2026-01-01T02:00:00Z"));
        assert!(late(&mut e).is_empty());
        let sentence = super::late_sentence(&run, t("2026-01-01T01:30:00Z")).unwrap();
        assert!(sentence.contains("passed 30m ago"), "{sentence}");
    }

    #[test]
    fn a_run_done_in_time_is_never_late() {
        let mut e = engine();
        let actions = e.plan(t("2026-01-01T00:00:00Z")).actions;
        finish(
            &mut e,
            actions,
            RunStatus::Success,
            t("2026-01-01T00:30:00Z"),
        );
        let run = e.state().runs.values().next().unwrap().clone();
        assert_eq!(super::finished_late_by(&run), None);
        e.plan(t("2026-01-01T03:00:00Z"));
        assert!(late(&mut e).is_empty());
    }

    #[test]
    fn a_run_ending_past_its_deadline_unnoticed_is_late_once_and_says_by_how_much() {
        let mut e = engine();
        let actions = e.plan(t("2026-01-01T00:00:00Z")).actions;
        finish(
            &mut e,
            actions,
            RunStatus::Success,
            t("2026-01-01T01:10:00Z"),
        );
        let transitions = e.take_transitions();
        let announced = transitions
            .iter()
            .filter(|t| t.what == TransitionKind::PipelineRunLate)
            .count();
        assert_eq!(announced, 1);
        let done = transitions
            .iter()
            .find(|t| t.what == TransitionKind::PipelineRunSucceeded)
            .unwrap();
        assert!(
            done.detail.contains("10m after its deadline"),
            "{}",
            done.detail
        );
        let run = e.state().runs.values().next().unwrap().clone();
        assert_eq!(super::finished_late_by(&run).as_deref(), Some("10m"));
        e.plan(t("2026-01-01T03:00:00Z"));
        assert!(late(&mut e).is_empty());
    }

    #[test]
    fn backfill_runs_get_the_deadline_only_when_their_backfill_asks() {
        use crate::engine::backfill::{BackfillId, Reprocess};
        use crate::engine::event::BackfillRequest;
        for asked in [false, true] {
            let mut e = engine();
            let now = t("2026-01-10T00:00:00Z");
            let request = BackfillRequest {
                pipeline: PipelineName("p".into()),
                from: t("2026-01-02T00:00:00Z").into(),
                to: t("2026-01-02T00:00:00Z").into(),
                every: Some(Duration::from_secs(86_400)),
                max_active: 1,
                reprocess: Reprocess::None,
                deadline: asked,
            };
            e.apply(
                Event::Operator(OperatorRequest::CreateBackfill {
                    id: BackfillId("bf".into()),
                    request,
                }),
                now,
            );
            e.plan(now);
            let run = e
                .state()
                .runs
                .values()
                .find(|r| r.is_backfill())
                .expect("the backfill's run")
                .clone();
            assert_eq!(
                run.deadline,
                asked.then(|| t("2026-01-02T01:00:00Z")),
                "asked: {asked}"
            );
            let late: Vec<_> = e
                .take_transitions()
                .into_iter()
                .filter(|t| t.what == TransitionKind::PipelineRunLate)
                .map(|t| t.run)
                .collect();
            // The manual run is late either way; the backfill run only when its backfill asked.
            let backfill_late = late.iter().any(|r| r.as_ref() == Some(&run.id));
            assert_eq!(backfill_late, asked);
        }
    }
}
