//! Each scheduled pipeline's next tick, ordered by time, so a plan touches only the pipelines that
//! are due: a plan runs on every event, and a daemon may hold ten thousand pipelines.

use crate::model::pipeline::PipelineName;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
pub(super) struct TickCache {
    by_pipeline: HashMap<PipelineName, DateTime<Utc>>,
    queue: BTreeSet<(DateTime<Utc>, PipelineName)>,
    /// Pipelines whose next tick must be worked out again (loaded, resumed).
    unknown: BTreeSet<PipelineName>,
}

impl TickCache {
    /// Every pipeline is looked at again (start-up, reload).
    pub fn reset(&mut self, names: impl Iterator<Item = PipelineName>) {
        self.by_pipeline.clear();
        self.queue.clear();
        self.unknown = names.collect();
    }

    /// The pipeline is looked at again at the next plan.
    pub fn forget(&mut self, name: &PipelineName) {
        self.remove(name);
        self.unknown.insert(name.clone());
    }

    pub fn set(&mut self, name: &PipelineName, next: DateTime<Utc>) {
        self.remove(name);
        self.by_pipeline.insert(name.clone(), next);
        self.queue.insert((next, name.clone()));
    }

    /// The pipelines due at `now` or not known, each taken out until `set` puts it back.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<PipelineName> {
        let mut due: Vec<PipelineName> = std::mem::take(&mut self.unknown).into_iter().collect();
        while let Some((at, _)) = self.queue.first() {
            if *at > now {
                break;
            }
            if let Some((_, name)) = self.queue.pop_first() {
                self.by_pipeline.remove(&name);
                due.push(name);
            }
        }
        due
    }

    /// A pipeline's next tick as last worked out (None: not known yet, or taken as due).
    pub fn get(&self, name: &PipelineName) -> Option<DateTime<Utc>> {
        self.by_pipeline.get(name).copied()
    }

    /// The earliest tick still ahead.
    pub fn earliest(&self) -> Option<DateTime<Utc>> {
        self.queue.first().map(|(at, _)| *at)
    }

    fn remove(&mut self, name: &PipelineName) {
        self.unknown.remove(name);
        if let Some(at) = self.by_pipeline.remove(name) {
            self.queue.remove(&(at, name.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn only_due_and_unknown_pipelines_are_handed_out() {
        let (a, b, c) = (
            PipelineName("a".into()),
            PipelineName("b".into()),
            PipelineName("c".into()),
        );
        let mut cache = TickCache::default();
        cache.reset([a.clone(), b.clone()].into_iter());
        assert_eq!(
            cache.take_due(t("2026-01-01T00:00:00Z")),
            vec![a.clone(), b.clone()]
        );
        cache.set(&a, t("2026-01-01T01:00:00Z"));
        cache.set(&b, t("2026-01-01T02:00:00Z"));
        cache.set(&b, t("2026-01-01T00:30:00Z"));
        assert_eq!(cache.earliest(), Some(t("2026-01-01T00:30:00Z")));
        assert!(cache.take_due(t("2026-01-01T00:29:59Z")).is_empty());
        assert_eq!(
            cache.take_due(t("2026-01-01T01:00:00Z")),
            vec![b.clone(), a.clone()]
        );
        assert_eq!(cache.earliest(), None);
        cache.set(&c, t("2026-01-01T05:00:00Z"));
        cache.forget(&c);
        assert_eq!(cache.earliest(), None);
        assert_eq!(cache.take_due(t("2026-01-01T01:00:00Z")), vec![c]);
    }
}
