//! How a pipeline run is encoded for any backend: its definition is stored once, by digest, in the
//! `definitions` table, and the run record names it, so a state change rewrites only the run.

use crate::engine::state::{
    CancelReason, PipelineRun, PipelineRunId, PipelineRunState, RunOrigin, StepRun,
};
use crate::model::pipeline::{Pipeline, StepName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A run record as written: everything but the definition, which it names.
#[derive(Serialize)]
struct RunRecordOut<'a> {
    id: &'a PipelineRunId,
    definition_ref: &'a str,
    logical_date: DateTime<Utc>,
    data_interval_start: DateTime<Utc>,
    origin: &'a RunOrigin,
    state: PipelineRunState,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    cancel_reason: &'a Option<CancelReason>,
    steps: &'a BTreeMap<StepName, StepRun>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    late_since: Option<DateTime<Utc>>,
}

/// A run record as read: records of the sled era carried the definition inline; today's name it.
#[derive(Deserialize)]
struct RunRecordIn {
    id: PipelineRunId,
    #[serde(default)]
    definition: Option<Pipeline>,
    #[serde(default)]
    definition_ref: Option<String>,
    logical_date: DateTime<Utc>,
    data_interval_start: DateTime<Utc>,
    origin: RunOrigin,
    state: PipelineRunState,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    cancel_reason: Option<CancelReason>,
    steps: BTreeMap<StepName, StepRun>,
    /// Absent in records written before deadlines existed.
    #[serde(default)]
    deadline: Option<DateTime<Utc>>,
    #[serde(default)]
    late_since: Option<DateTime<Utc>>,
}

/// Definitions by digest, and the digest of each definition the engine shares between runs.
#[derive(Debug, Default)]
pub(super) struct Definitions {
    by_digest: HashMap<String, Arc<Pipeline>>,
    /// Keyed by the `Arc`'s address; holding the `Arc` keeps the address from being reused.
    digest_of: HashMap<usize, (Arc<Pipeline>, String)>,
}

/// What encoding a run produced: its record, and its definition when the store lacks it.
pub(super) struct Encoded {
    pub record: Vec<u8>,
    /// The digest the record names its definition by.
    pub digest: String,
    pub new_definition: Option<(String, Vec<u8>)>,
}

impl Definitions {
    /// Makes a stored definition known (start-up).
    pub fn insert_stored(&mut self, digest: String, definition: Pipeline) {
        self.by_digest.insert(digest, Arc::new(definition));
    }

    pub fn encode(&mut self, run: &PipelineRun) -> Result<Encoded, serde_json::Error> {
        let address = Arc::as_ptr(&run.definition) as usize;
        let mut new_definition = None;
        let digest = match self.digest_of.get(&address) {
            Some((_, digest)) => digest.clone(),
            None => {
                let bytes = serde_json::to_vec(run.definition.as_ref())?;
                let digest = digest(&bytes);
                if !self.by_digest.contains_key(&digest) {
                    self.by_digest
                        .insert(digest.clone(), run.definition.clone());
                    new_definition = Some((digest.clone(), bytes));
                }
                self.forget_unshared();
                self.digest_of
                    .insert(address, (run.definition.clone(), digest.clone()));
                digest
            }
        };
        let record = serde_json::to_vec(&RunRecordOut {
            id: &run.id,
            definition_ref: &digest,
            logical_date: run.logical_date,
            data_interval_start: run.data_interval_start,
            origin: &run.origin,
            state: run.state,
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            cancel_reason: &run.cancel_reason,
            steps: &run.steps,
            deadline: run.deadline,
            late_since: run.late_since,
        })?;
        Ok(Encoded {
            record,
            digest,
            new_definition,
        })
    }

    /// Reads a record; runs with the same definition share one `Arc`. `fetch` reads a definition
    /// not met yet.
    pub fn decode(
        &mut self,
        bytes: &[u8],
        fetch: &dyn Fn(&str) -> Option<Pipeline>,
    ) -> Result<PipelineRun, String> {
        let r: RunRecordIn = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let definition = match (r.definition, r.definition_ref) {
            (_, Some(digest)) => match self.by_digest.get(&digest) {
                Some(known) => known.clone(),
                None => {
                    let fetched = Arc::new(
                        fetch(&digest)
                            .ok_or_else(|| format!("its definition {digest} is missing"))?,
                    );
                    self.by_digest.insert(digest, fetched.clone());
                    fetched
                }
            },
            (Some(inline), None) => {
                let bytes = serde_json::to_vec(&inline).map_err(|e| e.to_string())?;
                self.by_digest
                    .entry(digest(&bytes))
                    .or_insert_with(|| Arc::new(inline))
                    .clone()
            }
            (None, None) => return Err("it names no definition".into()),
        };
        let RunRecordIn {
            id,
            logical_date,
            data_interval_start,
            origin,
            state,
            created_at,
            started_at,
            finished_at,
            cancel_reason,
            steps,
            deadline,
            late_since,
            ..
        } = r;
        Ok(PipelineRun {
            id,
            definition,
            logical_date,
            data_interval_start,
            origin,
            state,
            created_at,
            started_at,
            finished_at,
            cancel_reason,
            steps,
            deadline,
            late_since,
        })
    }

    /// Drops remembered digests of definitions no run shares any more (after reloads), so the
    /// map does not grow with every reload.
    fn forget_unshared(&mut self) {
        if self.digest_of.len() < 4096 || !self.digest_of.len().is_multiple_of(1024) {
            return;
        }
        self.digest_of
            .retain(|_, (definition, _)| Arc::strong_count(definition) > 2);
    }
}

/// Archived records are deflated: they are written once, read rarely, and are most of the file.
pub(super) fn deflate(record: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(record, DEFLATE_LEVEL)
}

pub(super) fn inflate(deflated: &[u8]) -> Result<Vec<u8>, String> {
    miniz_oxide::inflate::decompress_to_vec_with_limit(deflated, MAX_RECORD_BYTES)
        .map_err(|e| format!("its deflated record does not inflate: {e}"))
}

/// miniz's default: most of the gain of level 9 at a fraction of its time.
const DEFLATE_LEVEL: u8 = 6;
/// No pipeline run's record comes near this; a larger one is damage, not data.
const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

fn digest(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..16])
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::store) fn run(definition: Arc<Pipeline>, date: &str) -> PipelineRun {
        let at: DateTime<Utc> = date.parse().unwrap();
        PipelineRun {
            id: PipelineRunId::new(&definition.name, at),
            definition,
            logical_date: at,
            data_interval_start: at,
            origin: RunOrigin::Schedule,
            state: PipelineRunState::Succeeded,
            created_at: at,
            started_at: Some(at),
            finished_at: Some(at),
            cancel_reason: None,
            steps: BTreeMap::new(),
            deadline: None,
            late_since: None,
        }
    }

    pub(in crate::store) fn pipeline() -> Arc<Pipeline> {
        let yaml = "name: nightly\nsteps:\n  a: { job_id: 1 }\n";
        Arc::new(crate::config::load_pipeline_str("nightly.yaml", yaml).unwrap())
    }

    #[test]
    fn a_definition_is_written_once_and_shared_after_reading() {
        let def = pipeline();
        let mut out = Definitions::default();
        let first = out
            .encode(&run(def.clone(), "2026-01-01T00:00:00Z"))
            .unwrap();
        let second = out
            .encode(&run(def.clone(), "2026-01-02T00:00:00Z"))
            .unwrap();
        let (digest, bytes) = first.new_definition.unwrap();
        assert!(second.new_definition.is_none());
        let mut back = Definitions::default();
        back.insert_stored(digest, serde_json::from_slice(&bytes).unwrap());
        let a = back.decode(&first.record, &|_| None).unwrap();
        let b = back.decode(&second.record, &|_| None).unwrap();
        assert!(Arc::ptr_eq(&a.definition, &b.definition));
        assert_eq!(a, run(def, "2026-01-01T00:00:00Z"));
    }

    #[test]
    fn a_record_with_its_definition_inline_is_read() {
        let def = pipeline();
        let inline = serde_json::to_vec(&run(def.clone(), "2026-01-01T00:00:00Z")).unwrap();
        let mut back = Definitions::default();
        assert_eq!(
            back.decode(&inline, &|_| None).unwrap(),
            run(def, "2026-01-01T00:00:00Z")
        );
        let missing = br#"{"id":"x@y","definition_ref":"00"}"#;
        assert!(back.decode(missing, &|_| None).is_err());
    }
}
