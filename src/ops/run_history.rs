//! A pipeline's run history as the pipeline page and the API show it: the grid of its last runs
//! (one column per run, one row per step), the Gantt of one run built from the recorded attempt
//! times (waiting on upstream, queued, running, retried, waiting to retry) with its critical path,
//! and each step's duration trend with the median and the slowest runs. Pure: runs in, views out.

use crate::engine::state::{PipelineRun, PipelineRunState, StepRun};
use crate::model::pipeline::Pipeline;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Runs in the grid.
pub const GRID_RUNS: usize = 30;
/// At most this many runs are read for the trends (the retention period, bounded).
pub const TREND_RUNS: usize = 1_000;
/// Slowest runs marked per step.
const SLOWEST: usize = 3;

/// A pipeline run's state as a word.
pub fn run_state_name(state: PipelineRunState) -> &'static str {
    match state {
        PipelineRunState::Queued => "queued",
        PipelineRunState::Running => "running",
        PipelineRunState::Succeeded => "succeeded",
        PipelineRunState::Failed => "failed",
        PipelineRunState::Cancelled => "cancelled",
    }
}

/// In-memory and archived runs of one pipeline merged: newest logical date first, each id once
/// (the copy in memory wins: it may have been retried after archiving), at most `limit`.
pub fn merge_runs(
    in_memory: Vec<PipelineRun>,
    archived: Vec<PipelineRun>,
    limit: usize,
) -> Vec<PipelineRun> {
    let mut seen = BTreeSet::new();
    let mut all: Vec<PipelineRun> = in_memory
        .into_iter()
        .chain(archived)
        .filter(|r| seen.insert(r.id.clone()))
        .collect();
    all.sort_by_key(|r| std::cmp::Reverse((r.logical_date, r.created_at)));
    all.truncate(limit);
    all
}

/// When a step's last attempt ended (None while it runs or when it never ran).
fn step_end(step: &StepRun) -> Option<DateTime<Utc>> {
    step.current().and_then(|a| a.finished_at)
}

/// From the first attempt's trigger to the last attempt's end: the step's wall time.
pub fn step_seconds(step: &StepRun) -> Option<f64> {
    let first = step.attempts.first()?;
    let end = step_end(step)?;
    Some((end - first.created_at).num_milliseconds().max(0) as f64 / 1000.0)
}

/// One column of the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridRun {
    pub id: String,
    pub logical_date: DateTime<Utc>,
    pub state: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One cell: a step in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridCell {
    pub state: String,
    pub attempts: usize,
    /// The last attempt's dbt Cloud run page.
    pub href: Option<String>,
    pub seconds: Option<f64>,
    /// Why the last attempt ended, in words, when it did not succeed.
    pub reason: Option<String>,
}

/// Runs oldest first (left to right), steps in the definition's order; `cells[step][run]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub runs: Vec<GridRun>,
    pub steps: Vec<String>,
    pub cells: Vec<Vec<Option<GridCell>>>,
}

impl Grid {
    /// `runs` newest first, as `merge_runs` returns them.
    pub fn build(def: &Pipeline, runs: &[PipelineRun]) -> Self {
        let columns: Vec<&PipelineRun> = runs.iter().take(GRID_RUNS).rev().collect();
        let steps: Vec<String> = def.steps.iter().map(|s| s.name.0.clone()).collect();
        let cells = def
            .steps
            .iter()
            .map(|step| {
                columns
                    .iter()
                    .map(|run| {
                        let s = run.steps.get(&step.name)?;
                        let last = s.current();
                        Some(GridCell {
                            state: s.state.name().to_string(),
                            attempts: s.attempts.len(),
                            href: last.and_then(|a| a.href.clone()),
                            seconds: step_seconds(s),
                            reason: last
                                .filter(|a| {
                                    a.outcome.is_some_and(|o| {
                                        o != crate::engine::state::AttemptOutcome::Success
                                    })
                                })
                                .and_then(|a| crate::humanize::step_attempt_reason(a, Some(step))),
                        })
                    })
                    .collect()
            })
            .collect();
        Self {
            runs: columns
                .iter()
                .map(|r| GridRun {
                    id: r.id.0.clone(),
                    logical_date: r.logical_date,
                    state: run_state_name(r.state).to_string(),
                    started_at: r.started_at,
                    finished_at: r.finished_at,
                })
                .collect(),
            steps,
            cells,
        }
    }
}

/// What a stretch of a Gantt row was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    /// Upstream steps had not finished.
    WaitingUpstream,
    /// Ready, waiting for room under the account's in-flight cap.
    WaitingSlot,
    /// Triggered, queued in dbt Cloud.
    Queued,
    Running,
    /// An attempt that failed and was retried.
    Retried,
    /// The retry policy's backoff between two attempts.
    WaitingRetry,
}

impl SpanKind {
    /// Every kind, in the order a step's time passes through them.
    pub const ALL: [SpanKind; 6] = [
        Self::WaitingUpstream,
        Self::WaitingSlot,
        Self::Queued,
        Self::Running,
        Self::Retried,
        Self::WaitingRetry,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::WaitingUpstream => "waiting_upstream",
            Self::WaitingSlot => "waiting_slot",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retried => "retried",
            Self::WaitingRetry => "waiting_retry",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::WaitingUpstream => "waiting on upstream",
            Self::WaitingSlot => "waiting for a slot",
            Self::Queued => "queued in dbt Cloud",
            Self::Running => "running",
            Self::Retried => "failed attempt (retried)",
            Self::WaitingRetry => "waiting to retry",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub kind: SpanKind,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub attempt: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GanttRow {
    pub step: String,
    pub state: String,
    pub spans: Vec<Span>,
    /// On the chain of steps that decided when the run ended.
    pub critical: bool,
    pub href: Option<String>,
}

/// One run's steps on a time axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gantt {
    pub run: String,
    pub state: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub rows: Vec<GanttRow>,
}

impl Gantt {
    /// `now` ends the spans of a run still in flight.
    pub fn build(run: &PipelineRun, now: DateTime<Utc>) -> Self {
        let def = &run.definition;
        let start = run.started_at.unwrap_or(run.created_at);
        let end_of = |s: &StepRun| -> Option<DateTime<Utc>> {
            s.current()
                .map(|a| a.finished_at.unwrap_or(now))
                .or_else(|| s.state.is_terminal().then_some(start))
        };
        let mut rows = Vec::with_capacity(def.steps.len());
        for step in &def.steps {
            let Some(s) = run.steps.get(&step.name) else {
                continue;
            };
            // When the last upstream ended; None while one has not (or never ran).
            let ready: Option<DateTime<Utc>> = step
                .depends_on
                .iter()
                .map(|up| run.steps.get(up).and_then(step_end))
                .try_fold(start, |latest, end| Some(latest.max(end?)));
            let mut spans = Vec::new();
            let mut push = |kind, from: DateTime<Utc>, to: DateTime<Utc>, attempt| {
                if to > from {
                    spans.push(Span {
                        kind,
                        from,
                        to,
                        attempt,
                    });
                }
            };
            let first_trigger = s.attempts.first().map(|a| a.created_at);
            let waited_until = first_trigger.unwrap_or(if s.state.is_terminal() {
                ready.unwrap_or(start)
            } else {
                now
            });
            let ready = ready.unwrap_or(waited_until);
            push(
                SpanKind::WaitingUpstream,
                start,
                ready.min(waited_until),
                None,
            );
            push(SpanKind::WaitingSlot, ready, waited_until, None);
            let last = s.attempts.len();
            for (i, a) in s.attempts.iter().enumerate() {
                let end = a.finished_at.unwrap_or(now);
                let running = a.running_since.map(|r| r.max(a.created_at));
                push(
                    SpanKind::Queued,
                    a.created_at,
                    running.unwrap_or(end).min(end),
                    Some(a.number),
                );
                if let Some(from) = running {
                    let kind = if i + 1 < last {
                        SpanKind::Retried
                    } else {
                        SpanKind::Running
                    };
                    push(kind, from, end, Some(a.number));
                }
                if let Some(next) = s.attempts.get(i + 1) {
                    push(SpanKind::WaitingRetry, end, next.created_at, None);
                } else if let crate::engine::state::StepState::WaitingRetry { until } = s.state {
                    push(SpanKind::WaitingRetry, end, until.min(now).max(end), None);
                }
            }
            rows.push(GanttRow {
                step: step.name.0.clone(),
                state: s.state.name().to_string(),
                spans,
                critical: false,
                href: s.current().and_then(|a| a.href.clone()),
            });
        }
        // The critical path: from the step that ended last, back through the upstream that
        // released it (the one that ended last), to a root.
        let ends: BTreeMap<&str, DateTime<Utc>> = def
            .steps
            .iter()
            .filter_map(|st| Some((st.name.0.as_str(), end_of(run.steps.get(&st.name)?)?)))
            .collect();
        let mut critical = BTreeSet::new();
        let mut cursor = ends
            .iter()
            .max_by_key(|(name, at)| (**at, std::cmp::Reverse(**name)))
            .map(|(name, _)| *name);
        while let Some(name) = cursor {
            if !critical.insert(name.to_string()) {
                break;
            }
            cursor = def
                .steps
                .iter()
                .find(|s| s.name.0 == name)
                .and_then(|s| {
                    s.depends_on
                        .iter()
                        .filter_map(|up| Some((up.0.as_str(), *ends.get(up.0.as_str())?)))
                        .max_by_key(|(n, at)| (*at, std::cmp::Reverse(*n)))
                })
                .map(|(n, _)| n);
        }
        for row in &mut rows {
            row.critical = critical.contains(&row.step);
        }
        let end = rows
            .iter()
            .flat_map(|r| r.spans.iter().map(|s| s.to))
            .chain(run.finished_at)
            .max()
            .unwrap_or(start)
            .max(start);
        Self {
            run: run.id.0.clone(),
            state: run_state_name(run.state).to_string(),
            start,
            end,
            rows,
        }
    }
}

/// One finished step of one run, as a point of its trend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendPoint {
    pub run: String,
    pub logical_date: DateTime<Utc>,
    pub seconds: f64,
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTrend {
    pub step: String,
    /// Oldest first.
    pub points: Vec<TrendPoint>,
    pub median_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
    /// The slowest runs, slowest first.
    pub slowest: Vec<TrendPoint>,
}

/// `GET /api/v1/pipelines/{name}/trends`: each step's durations over the runs kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trends {
    pub pipeline: String,
    /// Pipeline runs read (at most `TREND_RUNS`, newest).
    pub runs: usize,
    pub steps: Vec<StepTrend>,
}

/// The median by the lower middle for an even count: a duration that was really measured.
fn median(sorted: &[f64]) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    Some(sorted[(sorted.len() - 1) / 2])
}

impl Trends {
    /// `runs` newest first.
    pub fn build(def: &Pipeline, runs: &[PipelineRun]) -> Self {
        let steps = def
            .steps
            .iter()
            .map(|step| {
                let points: Vec<TrendPoint> = runs
                    .iter()
                    .rev()
                    .filter_map(|r| {
                        let s = r.steps.get(&step.name)?;
                        Some(TrendPoint {
                            run: r.id.0.clone(),
                            logical_date: r.logical_date,
                            seconds: step_seconds(s)?,
                            state: s.state.name().to_string(),
                        })
                    })
                    .collect();
                let mut sorted: Vec<f64> = points.iter().map(|p| p.seconds).collect();
                sorted.sort_by(f64::total_cmp);
                let mut slowest = points.clone();
                slowest.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
                slowest.truncate(SLOWEST);
                StepTrend {
                    step: step.name.0.clone(),
                    median_seconds: median(&sorted),
                    max_seconds: sorted.last().copied(),
                    points,
                    slowest,
                }
            })
            .collect();
        Self {
            pipeline: def.name.0.clone(),
            runs: runs.len(),
            steps,
        }
    }
}

#[cfg(test)]
#[path = "run_history_tests.rs"]
mod tests;
