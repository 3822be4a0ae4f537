//! The pipeline runs not yet terminal, indexed by pipeline and with the queued ones apart, so that
//! admitting a run and starting queued runs look at one pipeline's runs, not at every active run.

use super::state::PipelineRunId;
use crate::model::pipeline::PipelineName;
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::ops::Deref;

#[derive(Debug, Default)]
pub(super) struct ActiveRuns {
    all: BTreeSet<PipelineRunId>,
    by_pipeline: FxHashMap<PipelineName, Vec<PipelineRunId>>,
    /// Runs that were queued when last seen: every queued run, and perhaps some that have moved
    /// on since (`plan_queued_runs` drops those when it meets them).
    queued: BTreeSet<PipelineRunId>,
}

impl ActiveRuns {
    pub fn insert(&mut self, id: PipelineRunId, pipeline: &PipelineName, queued: bool) {
        if queued {
            self.queued.insert(id.clone());
        }
        if self.all.insert(id.clone()) {
            self.by_pipeline
                .entry(pipeline.clone())
                .or_default()
                .push(id);
        }
    }

    pub fn remove(&mut self, id: &PipelineRunId, pipeline: &PipelineName) {
        self.queued.remove(id);
        if !self.all.remove(id) {
            return;
        }
        if let Some(runs) = self.by_pipeline.get_mut(pipeline) {
            runs.retain(|r| r != id);
            if runs.is_empty() {
                self.by_pipeline.remove(pipeline);
            }
        }
    }

    /// Every active run, in id order.
    pub fn ids(&self) -> &BTreeSet<PipelineRunId> {
        &self.all
    }

    /// The active runs of one pipeline.
    pub fn of_pipeline(&self, pipeline: &PipelineName) -> &[PipelineRunId] {
        self.by_pipeline.get(pipeline).map_or(&[], Vec::as_slice)
    }

    /// The runs that may still be queued.
    pub fn maybe_queued(&self) -> &BTreeSet<PipelineRunId> {
        &self.queued
    }

    /// The run is no longer queued (it started, or it was found started).
    pub fn not_queued(&mut self, id: &PipelineRunId) {
        self.queued.remove(id);
    }
}

impl Deref for ActiveRuns {
    type Target = BTreeSet<PipelineRunId>;

    fn deref(&self) -> &Self::Target {
        &self.all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_found_by_pipeline_and_leave_every_index() {
        let a = PipelineName("a".into());
        let b = PipelineName("b".into());
        let id = |s: &str| PipelineRunId(s.into());
        let mut active = ActiveRuns::default();
        active.insert(id("a@1"), &a, true);
        active.insert(id("a@2"), &a, false);
        active.insert(id("b@1"), &b, true);
        assert_eq!(active.of_pipeline(&a), &[id("a@1"), id("a@2")]);
        assert_eq!(active.maybe_queued().len(), 2);
        active.not_queued(&id("a@1"));
        active.remove(&id("b@1"), &b);
        assert!(active.of_pipeline(&b).is_empty());
        assert_eq!(active.maybe_queued().len(), 0);
        assert_eq!(active.len(), 2);
        active.remove(&id("a@1"), &a);
        assert_eq!(active.of_pipeline(&a), &[id("a@2")]);
    }
}
