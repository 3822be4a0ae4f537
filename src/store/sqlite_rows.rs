//! How the SQLite backend writes a turn's rows: each row as it comes, with cached statements,
//! inside the writer's open transaction.

use super::backend::{Batch, DefinitionRow, RowSink, RunRow};
use super::sqlite::classify;
use super::StoreError;
use rusqlite::params;

const INSERT_DEFINITION: &str =
    "INSERT INTO definitions (digest, pipeline, definition) VALUES (?1, ?2, ?3) \
     ON CONFLICT (digest) DO NOTHING";
const UPSERT_HISTORY: &str = "INSERT INTO run_history \
     (id, pipeline, logical_date, state, started_at, finished_at, attempts, definition, record) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
     ON CONFLICT (id) DO UPDATE SET pipeline = excluded.pipeline, \
     logical_date = excluded.logical_date, state = excluded.state, \
     started_at = excluded.started_at, finished_at = excluded.finished_at, \
     attempts = excluded.attempts, definition = excluded.definition, record = excluded.record";
const FORGET_RUN: &str = "DELETE FROM pipeline_runs WHERE id = ?1";
const FORGET_HISTORY: &str = "DELETE FROM run_history WHERE id = ?1";
const UPSERT_RUN: &str = "INSERT INTO pipeline_runs \
     (id, pipeline, logical_date, state, started_at, finished_at, definition, record) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
     started_at = excluded.started_at, finished_at = excluded.finished_at, \
     definition = excluded.definition, record = excluded.record";
const UPSERT_CURSOR: &str = "INSERT INTO schedule_cursors (pipeline, cursor) VALUES (?1, ?2) \
     ON CONFLICT (pipeline) DO UPDATE SET cursor = excluded.cursor";
const UPSERT_BACKFILL: &str = "INSERT INTO backfills (id, backfill) VALUES (?1, ?2) \
     ON CONFLICT (id) DO UPDATE SET backfill = excluded.backfill";

/// Writes each row as it comes, inside the writer's open transaction (statements cached).
pub(super) struct Rows<'a, 'c> {
    pub(super) tx: &'a rusqlite::Transaction<'c>,
    pub(super) location: &'a str,
    pub(super) written: usize,
    pub(super) deleted: bool,
}

impl Rows<'_, '_> {
    fn execute<P: rusqlite::Params>(&mut self, sql: &str, params: P) -> Result<(), StoreError> {
        self.written += 1;
        self.tx
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute(params))
            .map(drop)
            .map_err(|e| classify(self.location, e))
    }

    fn text<'b>(&self, bytes: &'b [u8]) -> Result<&'b str, StoreError> {
        utf8(bytes).map_err(|e| classify(self.location, e))
    }

    /// A whole batch, in the order `Batch` documents.
    pub(super) fn batch(&mut self, batch: Batch) -> Result<(), StoreError> {
        for row in batch.definitions {
            self.definition(row)?;
        }
        for row in batch.archive {
            self.archive(row)?;
        }
        for row in batch.runs {
            self.run(row)?;
        }
        for id in batch.deletes {
            self.delete(id)?;
        }
        for (pipeline, cursor) in batch.cursors {
            self.cursor(pipeline, cursor)?;
        }
        for (id, backfill) in batch.backfills {
            self.backfill(id, backfill)?;
        }
        if let Some(jobs) = batch.resolved_jobs {
            self.execute("DELETE FROM resolved_jobs", [])?;
            for (reference, job_id) in jobs {
                self.execute(
                    "INSERT INTO resolved_jobs (reference, job_id) VALUES (?1, ?2)",
                    params![reference, job_id],
                )?;
            }
        }
        Ok(())
    }
}

impl RowSink for Rows<'_, '_> {
    fn definition(&mut self, d: DefinitionRow) -> Result<(), StoreError> {
        let definition = self.text(&d.definition)?;
        self.execute(INSERT_DEFINITION, params![d.digest, d.pipeline, definition])
    }

    fn run(&mut self, r: RunRow) -> Result<(), StoreError> {
        let record = self.text(&r.record)?;
        self.execute(
            UPSERT_RUN,
            params![
                r.id,
                r.pipeline,
                r.logical_date,
                r.state,
                r.started_at,
                r.finished_at,
                r.definition,
                record,
            ],
        )
    }

    fn archive(&mut self, r: RunRow) -> Result<(), StoreError> {
        let finished = r.finished_at.as_deref().unwrap_or(r.logical_date.as_str());
        self.execute(
            UPSERT_HISTORY,
            params![
                r.id,
                r.pipeline,
                r.logical_date,
                r.state,
                r.started_at,
                finished,
                r.attempts,
                r.definition,
                super::records::deflate(&r.record),
            ],
        )?;
        self.execute(FORGET_RUN, [&r.id])
    }

    fn delete(&mut self, id: String) -> Result<(), StoreError> {
        self.deleted = true;
        self.execute(FORGET_RUN, [&id])?;
        self.execute(FORGET_HISTORY, [&id])
    }

    fn cursor(&mut self, pipeline: String, cursor: Vec<u8>) -> Result<(), StoreError> {
        let cursor = self.text(&cursor)?;
        self.execute(UPSERT_CURSOR, params![pipeline, cursor])
    }

    fn backfill(&mut self, id: String, backfill: Vec<u8>) -> Result<(), StoreError> {
        let backfill = self.text(&backfill)?;
        self.execute(UPSERT_BACKFILL, params![id, backfill])
    }
}

/// JSON is stored as TEXT so the sqlite3 shell (and its json functions) read it.
fn utf8(bytes: &[u8]) -> rusqlite::Result<&str> {
    std::str::from_utf8(bytes).map_err(rusqlite::Error::Utf8Error)
}
