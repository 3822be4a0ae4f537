//! What the metrics keep between scrapes, compactly: one entry per pipeline holding its counters,
//! gauges and timing histograms as fixed arrays, with step names interned once for all pipelines.
//! With 10,000 pipelines of five steps, series keyed by owned label strings in one map per family
//! were megabytes of keys alone.

use super::text::{LONG_BUCKETS, SHORT_BUCKETS};
use crate::engine::state::AttemptOutcome;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A histogram over `N - 1` fixed bounds (the last slot is `+Inf`), counts per bucket.
#[derive(Debug, Clone, Copy)]
pub(super) struct Histogram<const N: usize> {
    counts: [u32; N],
    sum: f64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self {
            counts: [0; N],
            sum: 0.0,
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        let slot = bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(bounds.len())
            .min(N - 1);
        self.counts[slot] = self.counts[slot].saturating_add(1);
        self.sum += value;
    }

    pub(super) fn counts(&self) -> &[u32] {
        &self.counts
    }

    pub(super) fn sum(&self) -> f64 {
        self.sum
    }

    /// Nothing observed yet: the series is not exported.
    pub(super) fn is_empty(&self) -> bool {
        self.counts.iter().all(|c| *c == 0)
    }
}

/// Times measured in minutes to hours (queued, running).
pub(super) type Long = Histogram<{ LONG_BUCKETS.len() + 1 }>;
/// Reaction times (dispatch latency, schedule lag).
pub(super) type Short = Histogram<{ SHORT_BUCKETS.len() + 1 }>;

impl Long {
    pub(super) fn add(&mut self, value: f64) {
        self.observe(LONG_BUCKETS, value);
    }
}

impl Short {
    pub(super) fn add(&mut self, value: f64) {
        self.observe(SHORT_BUCKETS, value);
    }
}

/// The timing histograms of one series (a pipeline, or one of its steps).
#[derive(Debug, Clone, Default)]
pub(super) struct Timings {
    pub(super) queued: Long,
    pub(super) running: Long,
    pub(super) dispatch: Short,
}

/// Attempts ended (or retries scheduled) of one step with one outcome.
#[derive(Debug, Clone, Copy)]
pub(super) struct Count {
    pub(super) step: StepId,
    pub(super) outcome: AttemptOutcome,
    /// A retry counter (`baton_retries_total`) rather than an attempt counter.
    pub(super) retry: bool,
    pub(super) n: u64,
}

/// Pipeline runs by final state, in label order.
pub(super) const RUN_STATES: [&str; 3] = ["cancelled", "failed", "succeeded"];

/// Everything exported for one pipeline.
#[derive(Debug, Clone, Default)]
pub(super) struct Series {
    /// Among the engine's pipelines at the last look (its gauges are exported even at zero).
    pub(super) present: bool,
    /// The pipeline has a deadline (its late gauge is exported even at zero).
    pub(super) deadline: bool,
    /// Pipeline runs not finished: queued, running.
    pub(super) active: [u32; 2],
    pub(super) late_now: u32,
    /// By `RUN_STATES`.
    pub(super) runs: [u64; 3],
    pub(super) ticks_missed: u64,
    pub(super) runs_late: u64,
    pub(super) ticks_skipped: u64,
    pub(super) triggers_ambiguous: u64,
    pub(super) last_success: Option<DateTime<Utc>>,
    pub(super) lag: Short,
    /// The pipeline's timings (without step histograms).
    pub(super) timings: Timings,
    /// Sorted by (step name, retry, outcome name).
    pub(super) counts: Vec<Count>,
    /// Per step timings (with step histograms), sorted by step name.
    pub(super) step_timings: Vec<(StepId, Timings)>,
}

/// A step name's index in the registry's interned names.
pub(super) type StepId = u32;

/// Step names, each kept once whatever the number of pipelines using it.
#[derive(Debug, Default)]
pub(super) struct StepNames {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, StepId>,
}

impl StepNames {
    pub(super) fn id(&mut self, name: &str) -> StepId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as StepId;
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    pub(super) fn name(&self, id: StepId) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }
}

#[derive(Debug, Default)]
pub(super) struct Registry {
    /// Boxed: a map node holds eleven entries, mostly empty slots of a large value otherwise.
    pub(super) pipelines: BTreeMap<Box<str>, Box<Series>>,
    pub(super) steps: StepNames,
    /// (account, endpoint, status)
    pub(super) api: BTreeMap<(String, String, u16), u64>,
    pub(super) attempts_in_flight: i64,
    pub(super) transitions_lost: u64,
    /// The engine's definitions version when the gauges last walked every pipeline.
    pub(super) pipelines_walked: Option<u64>,
    /// The pipelines whose active or late gauges the last read set above zero (the next read
    /// sets them back before counting, instead of walking every pipeline).
    pub(super) counted: Vec<Box<str>>,
}

impl Registry {
    /// The pipeline's entry, made on first use (its name is copied once).
    pub(super) fn series(&mut self, pipeline: &str) -> &mut Series {
        series_in(&mut self.pipelines, pipeline)
    }

    /// Counts one ended attempt (or scheduled retry) of `step` with `outcome`.
    pub(super) fn count(
        &mut self,
        pipeline: &str,
        step: &str,
        outcome: AttemptOutcome,
        retry: bool,
    ) {
        let id = self.steps.id(step);
        let Self {
            pipelines, steps, ..
        } = self;
        let series = series_in(pipelines, pipeline);
        if let Some(c) = series
            .counts
            .iter_mut()
            .find(|c| c.step == id && c.outcome == outcome && c.retry == retry)
        {
            c.n += 1;
            return;
        }
        let key = |c: &Count| (steps.name(c.step), c.retry, c.outcome.name());
        let new = Count {
            step: id,
            outcome,
            retry,
            n: 1,
        };
        let at = series.counts.partition_point(|c| key(c) < key(&new));
        series.counts.insert(at, new);
    }

    /// The timings a measurement of `step` goes to: the step's own with step histograms, the
    /// pipeline's otherwise.
    pub(super) fn timings(&mut self, pipeline: &str, step: &str, per_step: bool) -> &mut Timings {
        if !per_step {
            return &mut self.series(pipeline).timings;
        }
        let id = self.steps.id(step);
        let Self {
            pipelines, steps, ..
        } = self;
        let series = series_in(pipelines, pipeline);
        let at = match series
            .step_timings
            .binary_search_by(|(s, _)| steps.name(*s).cmp(step))
        {
            Ok(at) => at,
            Err(at) => {
                series.step_timings.insert(at, (id, Timings::default()));
                at
            }
        };
        &mut series.step_timings[at].1
    }
}

/// A pipeline's entry, made on first use: the name is copied only then (an `entry` call would
/// copy it on every lookup).
fn series_in<'a>(
    pipelines: &'a mut BTreeMap<Box<str>, Box<Series>>,
    pipeline: &str,
) -> &'a mut Series {
    if !pipelines.contains_key(pipeline) {
        pipelines.insert(pipeline.into(), Box::default());
    }
    pipelines
        .get_mut(pipeline)
        .unwrap_or_else(|| unreachable!("inserted above"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stay_in_label_order_and_step_names_are_kept_once() {
        let mut reg = Registry::default();
        reg.count("p", "marts", AttemptOutcome::Success, false);
        reg.count("p", "base", AttemptOutcome::Success, false);
        reg.count("p", "base", AttemptOutcome::Error, false);
        reg.count("p", "base", AttemptOutcome::Error, true);
        reg.count("p", "base", AttemptOutcome::Error, false);
        reg.count("q", "base", AttemptOutcome::Success, false);
        let order: Vec<(&str, bool, &str, u64)> = reg.pipelines["p"]
            .counts
            .iter()
            .map(|c| (reg.steps.name(c.step), c.retry, c.outcome.name(), c.n))
            .collect();
        assert_eq!(
            order,
            [
                ("base", false, "error", 2),
                ("base", false, "success", 1),
                ("base", true, "error", 1),
                ("marts", false, "success", 1),
            ]
        );
        assert_eq!(reg.steps.names.len(), 2);
    }

    #[test]
    fn histograms_put_values_in_the_first_bucket_that_holds_them() {
        let mut h = Short::default();
        h.add(0.005);
        h.add(7.0);
        h.add(1e9);
        h.add(f64::NAN);
        assert_eq!(h.counts()[0], 2);
        assert_eq!(h.counts()[SHORT_BUCKETS.len()], 1);
        assert_eq!(h.counts().iter().sum::<u32>(), 4);
        assert_eq!(h.sum(), 0.005 + 7.0 + 1e9);
    }
}
