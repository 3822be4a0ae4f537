//! Reading archived pipeline runs (finished runs the engine no longer holds in memory) for the
//! HTTP API and for the runtime when an operator retries one. Read-only: only the runtime writes.

use super::records::Definitions;
use crate::engine::state::{PipelineRun, PipelineRunId};
use crate::model::pipeline::{Pipeline, PipelineName};
use std::sync::{Arc, Mutex, RwLock};

/// A cheap, clonable reader of the run history. It lets go of the database when the store is
/// dropped (reading nothing from then on), so a reader kept by a task never holds sled's lock
/// on the state directory.
#[derive(Clone)]
pub struct HistoryReader {
    trees: Arc<RwLock<Option<Trees>>>,
}

struct Trees {
    history: sled::Tree,
    definitions: sled::Tree,
    cache: Arc<Mutex<Definitions>>,
}

impl std::fmt::Debug for HistoryReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryReader").finish_non_exhaustive()
    }
}

impl HistoryReader {
    pub(super) fn new(
        history: sled::Tree,
        definitions: sled::Tree,
        cache: Arc<Mutex<Definitions>>,
    ) -> Self {
        Self {
            trees: Arc::new(RwLock::new(Some(Trees {
                history,
                definitions,
                cache,
            }))),
        }
    }

    /// Called when the store closes.
    pub(super) fn close(&self) {
        *self.trees.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// An archived run by id (None when it is not archived or cannot be read; a record that
    /// cannot be read is logged).
    pub fn get(&self, id: &PipelineRunId) -> Option<PipelineRun> {
        self.with(|t| {
            let bytes = t.history.get(id.0.as_bytes()).ok().flatten()?;
            t.decode(&bytes)
        })
        .flatten()
    }

    /// A pipeline's archived runs, newest logical date first, at most `limit`.
    pub fn newest(&self, pipeline: &PipelineName, limit: usize) -> Vec<PipelineRun> {
        let prefix = format!("{}@", pipeline.0);
        self.with(|t| {
            t.history
                .scan_prefix(prefix.as_bytes())
                .rev()
                .filter_map(Result::ok)
                .filter_map(|(_, bytes)| t.decode(&bytes))
                .take(limit)
                .collect()
        })
        .unwrap_or_default()
    }

    /// Every archived run (for tests and tools: slow with a long history).
    pub fn all(&self) -> Vec<PipelineRun> {
        self.with(|t| {
            t.history
                .iter()
                .filter_map(Result::ok)
                .filter_map(|(_, bytes)| t.decode(&bytes))
                .collect()
        })
        .unwrap_or_default()
    }

    fn with<T>(&self, read: impl FnOnce(&Trees) -> T) -> Option<T> {
        let trees = self.trees.read().unwrap_or_else(|e| e.into_inner());
        trees.as_ref().map(read)
    }
}

impl Trees {
    fn decode(&self, bytes: &[u8]) -> Option<PipelineRun> {
        let fetch = |digest: &str| -> Option<Pipeline> {
            let raw = self.definitions.get(digest.as_bytes()).ok().flatten()?;
            serde_json::from_slice(&raw).ok()
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.decode(bytes, &fetch) {
            Ok(run) => Some(run),
            Err(message) => {
                tracing::error!(%message, "an archived pipeline run cannot be read");
                None
            }
        }
    }
}
