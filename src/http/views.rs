//! The JSON shapes of the API, built from the engine's state inside the loop (so each answer is
//! one consistent snapshot). The CLI decodes the same types.

use crate::dbt_cloud::wire::TriggerRequest;
use crate::engine::backfill::{Backfill, BackfillState, PreviewDate};
use crate::engine::details::FailureDetails;
use crate::engine::state::{
    Attempt, AttemptKind, CancelReason, PipelineRun, PipelineRunState, RunOrigin, StepState,
};
use crate::engine::Engine;
use crate::model::pipeline::{Pipeline, PipelineName};
use crate::store::HistoryReader;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How many recent runs a pipeline's detail view lists.
const RECENT_RUNS: usize = 10;

/// How many fire times a pipeline view lists.
pub const NEXT_FIRE_TIMES: usize = 5;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineView {
    pub name: String,
    pub description: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub suspended: bool,
    pub paused: bool,
    pub next_fire_times: Vec<DateTime<Utc>>,
    pub active_runs: usize,
    pub last_run: Option<RunSummary>,
    /// The full definition (with `GET /pipelines/{name}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<Pipeline>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_runs: Vec<RunSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub id: String,
    pub pipeline: String,
    pub logical_date: DateTime<Utc>,
    pub origin: RunOrigin,
    pub state: PipelineRunState,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<CancelReason>,
    /// Why it failed, in one line, with the dbt Cloud link.
    pub failure: Option<String>,
    pub failure_href: Option<String>,
    /// When the run must have succeeded by (its pipeline's `deadline`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// When baton found the run late (its deadline passed before it was done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunView {
    #[serde(flatten)]
    pub summary: RunSummary,
    pub steps: Vec<StepView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepView {
    pub name: String,
    pub job_id: i64,
    pub depends_on: Vec<String>,
    pub state: String,
    /// With `waiting_retry`: when the next attempt starts.
    pub retry_at: Option<DateTime<Utc>>,
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptView {
    pub number: u32,
    pub kind: AttemptKind,
    pub phase: String,
    pub dbt_run_id: Option<i64>,
    pub href: Option<String>,
    /// dbt Cloud's status code (1, 2, 3, 10, 20, 30).
    pub status: Option<i64>,
    pub outcome: Option<String>,
    pub message: Option<String>,
    /// Why the attempt ended, in words (baton's own timeouts and cancels say so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub blocked_by: Vec<i64>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub request: TriggerRequest,
    pub details: Option<FailureDetails>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackfillView {
    #[serde(flatten)]
    pub backfill: Backfill,
    pub counts: BackfillCounts,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackfillCounts {
    pub dates: usize,
    pub skipped: usize,
    pub not_started: usize,
    pub active: usize,
    pub succeeded: usize,
    pub failed: usize,
}

/// The answer to a dry run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackfillPreview {
    pub pipeline: String,
    pub dates: Vec<PreviewDateView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreviewDateView {
    pub logical_date: DateTime<Utc>,
    pub run: Option<String>,
    pub skipped: Option<String>,
    pub triggers: Vec<PreviewTriggerView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreviewTriggerView {
    pub step: String,
    pub job_id: i64,
    pub body: Option<TriggerRequest>,
    pub error: Option<String>,
}

impl From<PreviewDate> for PreviewDateView {
    fn from(p: PreviewDate) -> Self {
        Self {
            logical_date: p.logical_date,
            run: p.run.map(|r| r.0),
            skipped: p.skipped,
            triggers: p
                .triggers
                .into_iter()
                .map(|t| PreviewTriggerView {
                    step: t.step.0,
                    job_id: t.job_id.0,
                    body: t.body,
                    error: t.error,
                })
                .collect(),
        }
    }
}

/// A pipeline's newest runs, from memory and from the archive, newest logical date first.
pub fn newest_runs(
    in_memory: Vec<RunView>,
    history: &HistoryReader,
    pipeline: &PipelineName,
    limit: usize,
) -> Vec<RunView> {
    // Archived runs may be newer by logical date than some in memory (a backfill's), so both
    // are read to the limit; a run in both places (retried after archiving) is the one in memory.
    let mut all = in_memory;
    all.extend(history.newest(pipeline, limit).iter().map(run_view));
    let mut seen = std::collections::BTreeSet::new();
    all.retain(|r| seen.insert(r.summary.id.clone()));
    all.sort_by_key(|r| std::cmp::Reverse((r.summary.logical_date, r.summary.created_at)));
    all.truncate(limit);
    all
}

/// Completes a pipeline view read from memory with its archived runs.
pub fn with_history(mut view: PipelineView, history: &HistoryReader, full: bool) -> PipelineView {
    let pipeline = PipelineName(view.name.clone());
    if full {
        let in_memory = std::mem::take(&mut view.recent_runs)
            .into_iter()
            .map(|summary| RunView {
                summary,
                steps: Vec::new(),
            })
            .collect();
        view.recent_runs = newest_runs(in_memory, history, &pipeline, RECENT_RUNS)
            .into_iter()
            .map(|r| r.summary)
            .collect();
        view.last_run = view.recent_runs.first().cloned();
    } else if view.last_run.is_none() {
        view.last_run = history.newest(&pipeline, 1).first().map(run_summary);
    }
    view
}

/// Runs of a pipeline in memory, newest logical date first.
pub fn runs_of<'a>(engine: &'a Engine, pipeline: &PipelineName) -> Vec<&'a PipelineRun> {
    let mut runs: Vec<&PipelineRun> = engine
        .state()
        .runs
        .values()
        .filter(|r| r.pipeline() == pipeline)
        .collect();
    runs.sort_by_key(|r| std::cmp::Reverse((r.logical_date, r.created_at)));
    runs
}

pub fn pipeline_view(
    engine: &Engine,
    def: &Pipeline,
    now: DateTime<Utc>,
    full: bool,
) -> PipelineView {
    let paused = engine
        .state()
        .cursors
        .get(&def.name)
        .is_some_and(|c| c.paused);
    let mut next_fire_times = Vec::new();
    if let Some(schedule) = engine.schedule(&def.name) {
        let mut after = now;
        while next_fire_times.len() < NEXT_FIRE_TIMES {
            match schedule.next_after(after) {
                Some(t) => {
                    next_fire_times.push(t);
                    after = t;
                }
                None => break,
            }
        }
    }
    let runs = runs_of(engine, &def.name);
    let active_runs = runs.iter().filter(|r| !r.state.is_terminal()).count();
    PipelineView {
        name: def.name.0.clone(),
        description: def.description.clone(),
        cron: def.schedule.as_ref().map(|s| s.cron.clone()),
        timezone: def.schedule.as_ref().map(|s| s.timezone.to_string()),
        suspended: def.suspended,
        paused,
        next_fire_times,
        active_runs,
        last_run: runs.first().map(|r| run_summary(r)),
        definition: full.then(|| def.clone()),
        recent_runs: if full {
            runs.iter()
                .take(RECENT_RUNS)
                .map(|r| run_summary(r))
                .collect()
        } else {
            Vec::new()
        },
    }
}

pub fn run_summary(run: &PipelineRun) -> RunSummary {
    // The failure worth showing: the last attempt of the first failed step, in DAG order.
    let failed_attempt: Option<&Attempt> = run
        .definition
        .steps
        .iter()
        .filter_map(|s| run.steps.get(&s.name))
        .filter(|s| s.state == StepState::Failed)
        .find_map(|s| s.current());
    let failure_step = run
        .definition
        .steps
        .iter()
        .find(|s| {
            run.steps
                .get(&s.name)
                .is_some_and(|r| r.state == StepState::Failed)
        })
        .map(|s| s.name.0.clone());
    let failure = failed_attempt.map(|a| {
        let why = a
            .details
            .as_ref()
            .map(|d| d.summary())
            .filter(|s| !s.is_empty())
            .or_else(|| {
                let step = failure_step_def(run);
                crate::humanize::step_attempt_reason(a, step)
            })
            .unwrap_or_else(|| a.outcome.map_or("failed", |o| o.name()).to_string());
        format!("{}: {why}", failure_step.clone().unwrap_or_default())
    });
    RunSummary {
        id: run.id.0.clone(),
        pipeline: run.pipeline().0.clone(),
        logical_date: run.logical_date,
        origin: run.origin.clone(),
        state: run.state,
        created_at: run.created_at,
        started_at: run.started_at,
        finished_at: run.finished_at,
        cancel_reason: run.cancel_reason,
        failure,
        failure_href: failed_attempt.and_then(|a| a.href.clone()),
        deadline: run.deadline,
        late_since: run.late_since,
    }
}

fn failure_step_def(run: &PipelineRun) -> Option<&crate::model::pipeline::Step> {
    run.definition.steps.iter().find(|s| {
        run.steps
            .get(&s.name)
            .is_some_and(|r| r.state == StepState::Failed)
    })
}

pub fn run_view(run: &PipelineRun) -> RunView {
    let steps = run
        .definition
        .steps
        .iter()
        .filter_map(|def| run.steps.get(&def.name).map(|s| (def, s)))
        .map(|(def, s)| StepView {
            name: def.name.0.clone(),
            job_id: def.job_id.0,
            depends_on: def.depends_on.iter().map(|d| d.0.clone()).collect(),
            state: s.state.name().to_string(),
            retry_at: match s.state {
                StepState::WaitingRetry { until } => Some(until),
                _ => None,
            },
            attempts: s
                .attempts
                .iter()
                .map(|a| attempt_view(a, Some(def)))
                .collect(),
        })
        .collect();
    RunView {
        summary: run_summary(run),
        steps,
    }
}

fn attempt_view(a: &Attempt, step: Option<&crate::model::pipeline::Step>) -> AttemptView {
    AttemptView {
        reason: crate::humanize::step_attempt_reason(a, step),
        number: a.number,
        kind: a.kind.clone(),
        phase: format!("{:?}", a.phase).to_lowercase(),
        dbt_run_id: a.run_id.map(|r| r.0),
        href: a.href.clone(),
        status: a.status.map(|s| s.code()),
        outcome: a.outcome.map(|o| o.name().to_string()),
        message: a.message.clone(),
        blocked_by: a.blocked_by.iter().map(|r| r.0).collect(),
        created_at: a.created_at,
        finished_at: a.finished_at,
        request: a.request.clone(),
        details: a.details.clone(),
    }
}

pub fn backfill_view(engine: &Engine, backfill: &Backfill) -> BackfillView {
    let mut counts = BackfillCounts {
        dates: backfill.dates.len(),
        ..BackfillCounts::default()
    };
    for date in &backfill.dates {
        if date.skipped.is_some() || date.run.is_none() {
            counts.skipped += 1;
            continue;
        }
        if !date.started {
            counts.not_started += 1;
            continue;
        }
        match date.run.as_ref().and_then(|r| engine.state().run_state(r)) {
            Some(PipelineRunState::Succeeded) => counts.succeeded += 1,
            Some(PipelineRunState::Failed | PipelineRunState::Cancelled) => counts.failed += 1,
            Some(_) => counts.active += 1,
            None => {}
        }
    }
    BackfillView {
        backfill: backfill.clone(),
        counts,
    }
}

pub fn backfill_state_name(state: BackfillState) -> &'static str {
    state.name()
}
