//! The boundary every storage backend implements: row-level loads and one transaction per batch.
//! Encoding records is shared (`records.rs`); a backend only moves rows.

use super::StoreError;
use std::sync::Arc;

/// How durable a commit must be when it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives a power cut: actions that depend on it may run.
    Full,
    /// Survives a crash of the process, and a power cut once a later `Full` commit returns; never
    /// torn. For changes no side effect depends on yet (a status seen, say).
    Deferred,
}

/// One pipeline run as a row: the columns an operator reads, and the encoded record.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub pipeline: String,
    pub logical_date: String,
    pub state: &'static str,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Attempts over all steps (archived runs only count them; the bench reads it).
    pub attempts: i64,
    /// The digest of the definition the record names.
    pub definition: String,
    pub record: Vec<u8>,
}

/// A definition as stored: digest, pipeline name, JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct DefinitionRow {
    pub digest: String,
    pub pipeline: String,
    pub definition: Vec<u8>,
}

/// Everything one commit writes, already encoded. Applied in one transaction, in this order:
/// definitions before the runs naming them, archived records before their removal from the runs
/// in memory.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub definitions: Vec<DefinitionRow>,
    /// Upserted into the runs held in memory.
    pub runs: Vec<RunRow>,
    /// Inserted into the history (record deflated) and removed from the runs held in memory.
    pub archive: Vec<RunRow>,
    /// Removed from both.
    pub deletes: Vec<String>,
    /// Pipeline name, cursor JSON.
    pub cursors: Vec<(String, Vec<u8>)>,
    /// Backfill id, backfill JSON.
    pub backfills: Vec<(String, Vec<u8>)>,
    /// Replaces every resolved job reference when present.
    pub resolved_jobs: Option<Vec<(String, i64)>>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.definitions.is_empty()
            && self.runs.is_empty()
            && self.archive.is_empty()
            && self.deletes.is_empty()
            && self.cursors.is_empty()
            && self.backfills.is_empty()
            && self.resolved_jobs.is_none()
    }
}

/// Takes one commit's rows in order, inside the backend's transaction: a definition before the
/// runs naming it, an archived record before its removal from the runs held in memory.
pub trait RowSink {
    fn definition(&mut self, row: DefinitionRow) -> Result<(), StoreError>;
    /// Upserted into the runs held in memory.
    fn run(&mut self, row: RunRow) -> Result<(), StoreError>;
    /// Inserted into the history (record deflated) and removed from the runs held in memory.
    fn archive(&mut self, row: RunRow) -> Result<(), StoreError>;
    /// Removed from both.
    fn delete(&mut self, id: String) -> Result<(), StoreError>;
    fn cursor(&mut self, pipeline: String, cursor: Vec<u8>) -> Result<(), StoreError>;
    fn backfill(&mut self, id: String, backfill: Vec<u8>) -> Result<(), StoreError>;
}

/// Hands a commit's rows to a sink, one at a time.
pub type Fill<'a> = &'a mut dyn FnMut(&mut dyn RowSink) -> Result<(), StoreError>;

/// A batch collects rows (for a backend that applies them whole).
impl RowSink for Batch {
    fn definition(&mut self, row: DefinitionRow) -> Result<(), StoreError> {
        self.definitions.push(row);
        Ok(())
    }
    fn run(&mut self, row: RunRow) -> Result<(), StoreError> {
        self.runs.push(row);
        Ok(())
    }
    fn archive(&mut self, row: RunRow) -> Result<(), StoreError> {
        self.archive.push(row);
        Ok(())
    }
    fn delete(&mut self, id: String) -> Result<(), StoreError> {
        self.deletes.push(id);
        Ok(())
    }
    fn cursor(&mut self, pipeline: String, cursor: Vec<u8>) -> Result<(), StoreError> {
        self.cursors.push((pipeline, cursor));
        Ok(())
    }
    fn backfill(&mut self, id: String, backfill: Vec<u8>) -> Result<(), StoreError> {
        self.backfills.push((id, backfill));
        Ok(())
    }
}

/// What an archived run leaves in memory: its id, pipeline, state and end (RFC 3339).
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedRow {
    pub id: String,
    pub pipeline: String,
    pub state: String,
    pub finished_at: String,
}

/// The rows `load` reads.
#[derive(Debug, Default)]
pub struct Loaded {
    pub definitions: Vec<DefinitionRow>,
    /// Run id and record of each run held in memory.
    pub runs: Vec<(String, Vec<u8>)>,
    pub archived: Vec<ArchivedRow>,
    pub cursors: Vec<(String, Vec<u8>)>,
    pub backfills: Vec<(String, Vec<u8>)>,
}

/// A storage backend. Only the runtime loop calls `apply`; `history` serves readers elsewhere.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Where the state lives, for messages (never a secret: no password, no URL).
    fn location(&self) -> &str;
    fn load(&self) -> Result<Loaded, StoreError>;
    /// One transaction. With `Durability::Full` and an empty batch, makes earlier deferred commits
    /// durable.
    fn apply(&self, batch: Batch, durability: Durability) -> Result<(), StoreError>;
    /// One transaction whose rows `fill` hands over one at a time, so that a backend able to
    /// write them as they come never holds a whole commit encoded. This default collects them
    /// into a batch first.
    fn apply_rows(&self, fill: Fill<'_>, durability: Durability) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        fill(&mut batch)?;
        self.apply(batch, durability)
    }
    /// The references job names last resolved to, with their job ids: read alone at start-up,
    /// not through `load`.
    fn resolved_jobs(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Read-only access to archived runs that never blocks the writer.
    fn history(&self) -> Arc<dyn HistorySource>;
    /// The backend's own integrity check: empty when healthy, else the problems it found.
    fn check(&self) -> Result<Vec<String>, StoreError>;
    /// Bytes the state takes on disk (database and journal), for the benchmark and operators.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}

/// Archived records, by id or by pipeline (newest logical date first); records come back as
/// written (deflated JSON).
pub trait HistorySource: Send + Sync {
    fn get(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn newest(&self, pipeline: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError>;
    fn all(&self) -> Result<Vec<Vec<u8>>, StoreError>;
    fn definition(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;
}
