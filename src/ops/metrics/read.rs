//! What the metrics read from the engine's state, inside one `peek` per batch of transitions:
//! the timings of ended attempts, dispatch latency, schedule lag and the gauges.

use super::Pair;
use crate::engine::state::{PipelineRunId, PipelineRunState, RunOrigin};
use crate::engine::Engine;
use crate::model::pipeline::StepName;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// Something a transition needs from the engine's state.
#[derive(Debug)]
pub(super) enum Lookup {
    /// An attempt ended: its outcome and timings.
    AttemptEnded {
        run: PipelineRunId,
        step: StepName,
        number: u32,
        retry: bool,
    },
    /// A step's first attempt was accepted: how long after its last upstream finished.
    FirstTriggered { run: PipelineRunId, step: StepName },
    /// A pipeline run was created: how late after its tick.
    RunCreated { run: PipelineRunId },
}

/// What a lookup found.
#[derive(Debug)]
pub(super) enum Found {
    Attempt {
        pipeline: String,
        step: String,
        outcome: &'static str,
        retry: bool,
        queued: Option<f64>,
        running: Option<f64>,
    },
    Dispatch {
        pipeline: String,
        step: String,
        seconds: f64,
    },
    Lag {
        pipeline: String,
        seconds: f64,
    },
}

/// Engine-wide gauges, read in the same inspect: only the unfinished runs, and every pipeline
/// (the zero series, the last successes in memory) only when the definitions changed, since a batch
/// of transitions comes with nearly every turn and there are tens of thousands of pipelines.
#[derive(Debug, Default)]
pub(super) struct Gauges {
    /// The engine's `definitions_version` when every pipeline was walked (`None`: not walked).
    pub(super) pipelines_walked: Option<u64>,
    /// With `pipelines_walked`: every pipeline at zero; else only the pipelines counted.
    pub(super) active_runs: BTreeMap<Pair, i64>,
    pub(super) attempts_in_flight: i64,
    pub(super) last_success: BTreeMap<String, DateTime<Utc>>,
    /// Unfinished runs past their deadline, per pipeline (with `pipelines_walked`: every pipeline
    /// with a deadline listed).
    pub(super) late_now: BTreeMap<String, i64>,
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

pub(super) fn resolve(engine: &Engine, lookup: &Lookup) -> Option<Found> {
    let runs = &engine.state().runs;
    match lookup {
        Lookup::AttemptEnded {
            run,
            step,
            number,
            retry,
        } => {
            let r = runs.get(run)?;
            let a = r
                .steps
                .get(step)?
                .attempts
                .iter()
                .find(|a| a.number == *number)?;
            let finished = a.finished_at?;
            let queued = a
                .accepted_at
                .map(|from| seconds(from, a.running_since.unwrap_or(finished)));
            let running = a.running_since.map(|from| seconds(from, finished));
            Some(Found::Attempt {
                pipeline: r.pipeline().0.clone(),
                step: step.0.clone(),
                outcome: a.outcome?.name(),
                retry: *retry,
                queued,
                running,
            })
        }
        Lookup::FirstTriggered { run, step } => {
            let r = runs.get(run)?;
            let def = r.definition.step(step)?;
            let upstream_done = def
                .depends_on
                .iter()
                .filter_map(|up| r.steps.get(up)?.current()?.finished_at)
                .max()?;
            let accepted = r.steps.get(step)?.attempts.first()?.accepted_at?;
            Some(Found::Dispatch {
                pipeline: r.pipeline().0.clone(),
                step: step.0.clone(),
                seconds: seconds(upstream_done, accepted),
            })
        }
        Lookup::RunCreated { run } => {
            let r = runs.get(run)?;
            matches!(r.origin, RunOrigin::Schedule | RunOrigin::Catchup).then(|| Found::Lag {
                pipeline: r.pipeline().0.clone(),
                seconds: seconds(r.logical_date, r.created_at),
            })
        }
    }
}

/// The gauges; every pipeline is walked only when the definitions are not those of
/// `walked_version` (the first time, and after a reload). Between, a pipeline's success is counted
/// from its transition.
pub(super) fn gauges(engine: &Engine, walked_version: Option<u64>) -> Gauges {
    let mut g = Gauges::default();
    let version = engine.definitions_version();
    if walked_version != Some(version) {
        g.pipelines_walked = Some(version);
        for p in engine.pipelines() {
            for state in ["queued", "running"] {
                g.active_runs.insert((p.name.0.clone(), state.into()), 0);
            }
            if p.deadline.is_some() {
                g.late_now.insert(p.name.0.clone(), 0);
            }
        }
        for r in engine.state().runs.values() {
            if let (PipelineRunState::Succeeded, Some(at)) = (r.state, r.finished_at) {
                let entry = g.last_success.entry(r.pipeline().0.clone()).or_insert(at);
                *entry = (*entry).max(at);
            }
        }
        for (pipeline, at) in &engine.state().archived_last_success {
            let entry = g.last_success.entry(pipeline.0.clone()).or_insert(*at);
            *entry = (*entry).max(*at);
        }
    }
    for r in engine.active_runs() {
        let state = match r.state {
            PipelineRunState::Queued => "queued",
            PipelineRunState::Running => "running",
            _ => continue,
        };
        if r.late_since.is_some() {
            *g.late_now.entry(r.pipeline().0.clone()).or_default() += 1;
        }
        *g.active_runs
            .entry((r.pipeline().0.clone(), state.into()))
            .or_default() += 1;
    }
    g.attempts_in_flight = engine.in_flight_attempts() as i64;
    g
}
