//! What the metrics read from the engine's state, inside one `peek` per batch of transitions:
//! the timings of ended attempts, dispatch latency, schedule lag and the gauges.

use super::registry::Registry;
use crate::engine::state::{AttemptOutcome, PipelineRunId, PipelineRunState, RunOrigin};
use crate::engine::Engine;
use crate::model::pipeline::StepName;
use chrono::{DateTime, Utc};

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
        outcome: AttemptOutcome,
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
                outcome: a.outcome?,
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

/// Sets the gauges from the engine's state, in place. Every pipeline is walked only when the
/// definitions are not those the gauges last walked (the first time, and after a reload): every
/// pipeline of the engine is exported (its active runs at zero, its late runs at zero when it has a
/// deadline), and a pipeline no longer loaded keeps its counters but leaves the gauges once it has
/// no run in memory. Between walks only the unfinished runs are read (a batch of transitions comes
/// with nearly every turn, and there are tens of thousands of pipelines); a pipeline's success is
/// counted from its transition.
pub(super) fn gauges(engine: &Engine, reg: &mut Registry) {
    let version = engine.definitions_version();
    if reg.pipelines_walked != Some(version) {
        reg.pipelines_walked = Some(version);
        reg.counted.clear();
        for series in reg.pipelines.values_mut() {
            series.present = false;
            series.deadline = false;
            series.active = [0, 0];
            series.late_now = 0;
        }
        for p in engine.pipelines() {
            let series = reg.series(&p.name.0);
            series.present = true;
            series.deadline = p.deadline.is_some();
        }
        for r in engine.state().runs.values() {
            if let (PipelineRunState::Succeeded, Some(at)) = (r.state, r.finished_at) {
                last_success(reg, &r.pipeline().0, at);
            }
        }
        for (pipeline, at) in &engine.state().archived_last_success {
            last_success(reg, &pipeline.0, *at);
        }
    } else {
        for pipeline in std::mem::take(&mut reg.counted) {
            if let Some(series) = reg.pipelines.get_mut(&pipeline) {
                series.active = [0, 0];
                series.late_now = 0;
            }
        }
    }
    for r in engine.active_runs() {
        let slot = match r.state {
            PipelineRunState::Queued => 0,
            PipelineRunState::Running => 1,
            _ => continue,
        };
        let series = reg.series(&r.pipeline().0);
        let first = series.active == [0, 0];
        series.present = true;
        if r.late_since.is_some() {
            series.late_now += 1;
        }
        series.active[slot] += 1;
        if first {
            reg.counted.push(r.pipeline().0.as_str().into());
        }
    }
    reg.attempts_in_flight = engine.in_flight_attempts() as i64;
}

pub(super) fn last_success(reg: &mut Registry, pipeline: &str, at: DateTime<Utc>) {
    let last = &mut reg.series(pipeline).last_success;
    *last = Some(last.map_or(at, |l| l.max(at)));
}
