//! Durable state behind one boundary: pipeline runs (in memory and archived), their definitions,
//! schedule cursors, backfills and resolved job references. `Store` encodes records once for every
//! backend (`records.rs`); a backend (`backend.rs`: SQLite today in `sqlite.rs`) moves rows in one
//! transaction per commit. A commit is durable when it returns.

pub mod backend;
mod history;
pub mod migrations;
pub mod postgres;
mod records;
pub mod sqlite;
mod sqlite_rows;
#[cfg(test)]
mod sqlite_tests;
#[cfg(test)]
pub(crate) mod suite;

pub use backend::Durability;
pub use history::HistoryReader;

use crate::engine::state::{
    ArchivedRun, PipelineRun, PipelineRunId, PipelineRunState, State, Write,
};
use crate::model::pipeline::{Pipeline, PipelineName};
use backend::{Backend, Batch, DefinitionRow, RowSink, RunRow};
use chrono::{DateTime, SecondsFormat, Utc};
use records::Definitions;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the state directory {location} is in use by another baton process (it holds baton.lock); \
         stop the other daemon or point --config at another state_dir"
    )]
    Locked { location: String },
    #[error(
        "cannot open the state in {location}: {message}; check that it exists, is writable by \
         this user and is not corrupted (`baton store check`; restore it from a backup, or move it \
         aside to start empty)"
    )]
    Open { location: String, message: String },
    #[error(
        "the state in {location} holds an unreadable record ({key}): {message}; run `baton store \
         check`, restore the database from a backup, or move it aside to start empty"
    )]
    Corrupt {
        location: String,
        key: String,
        message: String,
    },
    #[error(
        "the state in {location} was written by a newer baton (schema version {found}; this baton \
         knows up to {known}); run that release or a newer one, or restore a backup taken by this one"
    )]
    NewerSchema {
        location: String,
        found: u32,
        known: u32,
    },
    /// A PostgreSQL store's writer is no longer the leader: the write changed nothing.
    #[error(
        "the state in {location} was not written: this node is no longer the leader (epoch \
         {epoch} was deposed or its lease lapsed)"
    )]
    Fenced { location: String, epoch: i64 },
    #[error("writing the state in {location} failed: {message}")]
    Write { location: String, message: String },
    #[error(
        "the state in {location} lost its database: {marker} says it held baton's state, but the \
         database has none (deleted or replaced); restore it from a backup, or, to start empty on \
         purpose, delete {marker}"
    )]
    Lost { location: String, marker: String },
}

/// The daemon's durable state.
#[derive(Debug)]
pub struct Store {
    backend: Box<dyn Backend>,
    /// Shared with the history readers, so a definition is decoded once per process.
    defs: Arc<Mutex<Definitions>>,
    reader: HistoryReader,
}

impl Store {
    /// Opens (creating if needed) the SQLite store in `dir`. A second process gets
    /// `StoreError::Locked`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Ok(Self::with_backend(Box::new(sqlite::SqliteBackend::open(
            dir,
        )?)))
    }

    /// A store over any backend.
    pub fn with_backend(backend: Box<dyn Backend>) -> Self {
        let defs: Arc<Mutex<Definitions>> = Arc::default();
        let reader = HistoryReader::new(backend.history(), defs.clone());
        Self {
            backend,
            defs,
            reader,
        }
    }

    /// Where the state lives (a path, never a secret), for messages.
    pub fn location(&self) -> &str {
        self.backend.location()
    }

    /// Reads what the daemon keeps in memory: the runs not archived, one small entry per archived
    /// run, cursors and backfills. Archived records stay on disk.
    pub fn load(&self) -> Result<State, StoreError> {
        let loaded = self.backend.load()?;
        let mut state = State::default();
        let mut defs = self.defs.lock().unwrap_or_else(|e| e.into_inner());
        for row in loaded.definitions {
            let definition: Pipeline = serde_json::from_slice(&row.definition)
                .map_err(|e| self.corrupt("definitions", &row.digest, e.to_string()))?;
            defs.insert_stored(row.digest, definition);
        }
        for (id, record) in loaded.runs {
            let run = defs
                .decode(&record, &|_| None)
                .map_err(|message| self.corrupt("pipeline_runs", &id, message))?;
            state.runs.insert(run.id.clone(), run);
        }
        drop(defs);
        let mut last_success: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        state.archived.reserve(loaded.archived.len());
        for row in loaded.archived {
            let id = PipelineRunId(row.id);
            if state.runs.contains_key(&id) {
                // Retried after it was archived: the record in memory is the current one.
                continue;
            }
            let run_state = parse_state(&row.state).ok_or_else(|| {
                self.corrupt("run_history", &id.0, format!("state {}", row.state))
            })?;
            let finished_at = DateTime::parse_from_rfc3339(&row.finished_at)
                .map_err(|e| self.corrupt("run_history", &id.0, e.to_string()))?
                .with_timezone(&Utc);
            if run_state == PipelineRunState::Succeeded {
                let last = last_success.entry(row.pipeline).or_insert(finished_at);
                *last = (*last).max(finished_at);
            }
            state.archived.insert(
                id,
                ArchivedRun {
                    state: run_state,
                    finished_at,
                },
            );
        }
        state.archived_last_success = last_success
            .into_iter()
            .map(|(name, at)| (PipelineName(name), at))
            .collect();
        for (name, cursor) in loaded.cursors {
            let cursor = serde_json::from_slice(&cursor)
                .map_err(|e| self.corrupt("schedule_cursors", &name, e.to_string()))?;
            state.cursors.insert(PipelineName(name), cursor);
        }
        for (id, backfill) in loaded.backfills {
            let backfill: crate::engine::backfill::Backfill = serde_json::from_slice(&backfill)
                .map_err(|e| self.corrupt("backfills", &id, e.to_string()))?;
            state.backfills.insert(backfill.id.clone(), backfill);
        }
        Ok(state)
    }

    /// Like `load`, with every archived run read back in full into `runs` (for tests and tools:
    /// slow with a long history).
    pub fn load_everything(&self) -> Result<State, StoreError> {
        let mut state = self.load()?;
        for run in self.reader.all() {
            state.archived.remove(&run.id);
            state.runs.entry(run.id.clone()).or_insert(run);
        }
        state.archived_last_success.clear();
        Ok(state)
    }

    /// A reader of archived runs, for other tasks (it never writes; it reads nothing once the
    /// store is dropped).
    pub fn history_reader(&self) -> HistoryReader {
        self.reader.clone()
    }

    /// Applies the writes in one transaction, durable (they survive a power cut) when this
    /// returns Ok.
    pub fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        self.commit_with(writes, Durability::Full)
    }

    /// Applies the writes in one transaction. `Durability::Deferred` is for changes no side effect
    /// depends on yet: they survive a crash of the process, and a power cut once a later full
    /// commit (even an empty one) returns.
    pub fn commit_with(&self, writes: &[Write], durability: Durability) -> Result<(), StoreError> {
        self.commit_from(writes, None, durability)
    }

    /// Like `commit_with`, reading each `Write::Changed` run from `state` (the engine's, as its
    /// step left it). Each run is encoded and handed to the backend in turn, so a large commit
    /// never holds every run copied or encoded at once; still one transaction.
    pub fn commit_from(
        &self,
        writes: &[Write],
        state: Option<&State>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        if writes.is_empty() {
            return self.backend.apply(Batch::default(), durability);
        }
        self.backend.apply_rows(
            &mut |rows: &mut dyn RowSink| self.encode_into(writes, state, rows),
            durability,
        )
    }

    /// The resolved job references (reference → job id) kept for a dbt Cloud outage.
    pub fn resolved_jobs(&self) -> Result<BTreeMap<String, crate::ids::JobId>, StoreError> {
        Ok(self
            .backend
            .resolved_jobs()?
            .into_iter()
            .map(|(reference, id)| (reference, crate::ids::JobId(id)))
            .collect())
    }

    /// Replaces the resolved job references, durably.
    pub fn save_resolved_jobs(
        &self,
        jobs: &BTreeMap<String, crate::ids::JobId>,
    ) -> Result<(), StoreError> {
        let batch = Batch {
            resolved_jobs: Some(jobs.iter().map(|(r, id)| (r.clone(), id.0)).collect()),
            ..Batch::default()
        };
        self.backend.apply(batch, Durability::Full)
    }

    /// The backend's integrity check: empty when healthy.
    pub fn check(&self) -> Result<Vec<String>, StoreError> {
        self.backend.check()
    }

    /// Bytes the state takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.backend.size_on_disk()
    }

    /// Encodes the writes one by one into `rows`, in the order a batch is applied: archived
    /// records, runs held in memory, deletions, cursors, backfills (each run after the new
    /// definition it names).
    fn encode_into(
        &self,
        writes: &[Write],
        state: Option<&State>,
        rows: &mut dyn RowSink,
    ) -> Result<(), StoreError> {
        for write in writes {
            if let Write::Archive(run) = write {
                let row = self.encode_run(run, rows)?;
                rows.archive(row)?;
            }
        }
        for write in writes {
            let run = match write {
                Write::Run(run) => run.as_ref(),
                Write::Changed(id) => match state.map(|state| state.runs.get(id)) {
                    Some(Some(run)) => run,
                    // Gone from memory since (archived or deleted): that write says so.
                    Some(None) => continue,
                    None => {
                        return Err(StoreError::Write {
                            location: self.location().to_string(),
                            message: format!(
                                "run {id} was committed as changed without the state holding it"
                            ),
                        })
                    }
                },
                _ => continue,
            };
            let row = self.encode_run(run, rows)?;
            rows.run(row)?;
        }
        for write in writes {
            match write {
                Write::DeleteRun(id) => rows.delete(id.0.clone())?,
                Write::Cursor(name, cursor) => {
                    rows.cursor(name.0.clone(), self.encode_json(cursor)?)?
                }
                Write::Backfill(backfill) => {
                    rows.backfill(backfill.id.0.clone(), self.encode_json(backfill.as_ref())?)?
                }
                Write::Run(_) | Write::Changed(_) | Write::Archive(_) => {}
            }
        }
        Ok(())
    }

    /// One run's row; its definition goes to `rows` first when the store has not written it yet.
    fn encode_run(&self, run: &PipelineRun, rows: &mut dyn RowSink) -> Result<RunRow, StoreError> {
        let encoded = {
            let mut defs = self.defs.lock().unwrap_or_else(|e| e.into_inner());
            defs.encode(run).map_err(|e| self.encode_error(e))?
        };
        if let Some((digest, definition)) = encoded.new_definition {
            rows.definition(DefinitionRow {
                digest,
                pipeline: run.pipeline().0.clone(),
                definition,
            })?;
        }
        Ok(run_row(run, encoded.digest, encoded.record))
    }

    fn encode_json<T: serde::Serialize>(&self, value: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|e| self.encode_error(e))
    }

    fn encode_error(&self, e: serde_json::Error) -> StoreError {
        StoreError::Write {
            location: self.location().to_string(),
            message: e.to_string(),
        }
    }

    fn corrupt(&self, table: &str, key: &str, message: String) -> StoreError {
        StoreError::Corrupt {
            location: self.location().to_string(),
            key: format!("{table} {key}"),
            message,
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.reader.close();
    }
}

fn run_row(run: &PipelineRun, definition: String, record: Vec<u8>) -> RunRow {
    RunRow {
        id: run.id.0.clone(),
        pipeline: run.pipeline().0.clone(),
        logical_date: timestamp(run.logical_date),
        state: state_name(run.state),
        started_at: run.started_at.map(timestamp),
        finished_at: run.finished_at.map(timestamp),
        attempts: run
            .steps
            .values()
            .map(|s| i64::try_from(s.attempts.len()).unwrap_or(i64::MAX))
            .sum(),
        definition,
        record,
    }
}

/// Times as the columns hold them: RFC 3339 in UTC to the millisecond, so they sort as text.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

const STATE_NAMES: [(PipelineRunState, &str); 5] = [
    (PipelineRunState::Queued, "queued"),
    (PipelineRunState::Running, "running"),
    (PipelineRunState::Succeeded, "succeeded"),
    (PipelineRunState::Failed, "failed"),
    (PipelineRunState::Cancelled, "cancelled"),
];

fn state_name(state: PipelineRunState) -> &'static str {
    STATE_NAMES
        .iter()
        .find(|(s, _)| *s == state)
        .map_or("unknown", |(_, name)| name)
}

fn parse_state(name: &str) -> Option<PipelineRunState> {
    STATE_NAMES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(s, _)| *s)
}
