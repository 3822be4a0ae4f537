//! Reading archived pipeline runs (finished runs the engine no longer holds in memory) for the
//! HTTP API and for the runtime when an operator retries one. Read-only: only the runtime writes.

use super::backend::HistorySource;
use super::records::{inflate, Definitions};
use crate::engine::state::{PipelineRun, PipelineRunId};
use crate::model::pipeline::{Pipeline, PipelineName};
use std::sync::{Arc, Mutex, RwLock};

/// A cheap, clonable reader of the run history. It lets go of the database when the store is
/// dropped (reading nothing from then on).
#[derive(Clone)]
pub struct HistoryReader {
    source: Arc<RwLock<Option<Arc<dyn HistorySource>>>>,
    cache: Arc<Mutex<Definitions>>,
}

impl std::fmt::Debug for HistoryReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryReader").finish_non_exhaustive()
    }
}

impl HistoryReader {
    pub(super) fn new(source: Arc<dyn HistorySource>, cache: Arc<Mutex<Definitions>>) -> Self {
        Self {
            source: Arc::new(RwLock::new(Some(source))),
            cache,
        }
    }

    /// Called when the store closes.
    pub(super) fn close(&self) {
        *self.source.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// An archived run by id (None when it is not archived or cannot be read; a record that
    /// cannot be read is logged).
    pub fn get(&self, id: &PipelineRunId) -> Option<PipelineRun> {
        let source = self.source()?;
        let record = logged(source.get(&id.0))??;
        self.decode(source.as_ref(), &record)
    }

    /// A pipeline's archived runs, newest logical date first, at most `limit`.
    pub fn newest(&self, pipeline: &PipelineName, limit: usize) -> Vec<PipelineRun> {
        self.read_many(|source| source.newest(&pipeline.0, limit))
    }

    /// Every archived run (for tests and tools: slow with a long history).
    pub fn all(&self) -> Vec<PipelineRun> {
        self.read_many(|source| source.all())
    }

    fn read_many(
        &self,
        read: impl FnOnce(&dyn HistorySource) -> Result<Vec<Vec<u8>>, super::StoreError>,
    ) -> Vec<PipelineRun> {
        let Some(source) = self.source() else {
            return Vec::new();
        };
        logged(read(source.as_ref()))
            .unwrap_or_default()
            .iter()
            .filter_map(|record| self.decode(source.as_ref(), record))
            .collect()
    }

    fn source(&self) -> Option<Arc<dyn HistorySource>> {
        self.source
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn decode(&self, source: &dyn HistorySource, deflated: &[u8]) -> Option<PipelineRun> {
        let fetch = |digest: &str| -> Option<Pipeline> {
            let raw = logged(source.definition(digest))??;
            serde_json::from_slice(&raw).ok()
        };
        let decoded = inflate(deflated).and_then(|record| {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.decode(&record, &fetch)
        });
        match decoded {
            Ok(run) => Some(run),
            Err(message) => {
                tracing::error!(%message, "an archived pipeline run cannot be read");
                None
            }
        }
    }
}

fn logged<T>(result: Result<T, super::StoreError>) -> Option<T> {
    result
        .map_err(|e| tracing::error!(error = %e, "reading the run history failed"))
        .ok()
}
