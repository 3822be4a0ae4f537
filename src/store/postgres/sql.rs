//! The PostgreSQL backend's statements, as async functions over one client: migrations at open,
//! the load, one fenced transaction per batch, the history reads and the check.

use super::super::backend::{ArchivedRow, Batch, DefinitionRow, Durability, Loaded};
use super::super::migrations::{self, Migration};
use crate::ha::lease::{self, Epoch, FENCE_SQL};
use tokio_postgres::{Client, Transaction};

/// Why a statement failed: the lease check refused the write, the schema is newer than this
/// build, or the database said no.
#[derive(Debug)]
pub(super) enum SqlError {
    Fenced(Epoch),
    NewerSchema {
        found: u32,
        known: u32,
    },
    Db(tokio_postgres::Error),
    /// No connection could be made (the message names no secret).
    Connect(String),
    Encoding(String),
}

impl From<tokio_postgres::Error> for SqlError {
    fn from(e: tokio_postgres::Error) -> Self {
        SqlError::Db(e)
    }
}

/// The leader's identity every write is checked against.
#[derive(Debug, Clone)]
pub struct Fence {
    pub node: String,
    pub epoch: Epoch,
    /// The lease's length: a transaction of a frozen leader is ended by the server well within
    /// it, so that the lease row it share-locked cannot keep a standby from taking over.
    pub lease: std::time::Duration,
}

/// Applies pending migrations in one transaction, serialized between nodes by the schema lock.
pub(super) async fn migrate(client: &mut Client, all: &[Migration]) -> Result<u32, SqlError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lease::SCHEMA_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current = schema_version(tx.client()).await?;
    let pending = migrations::pending(all, current).map_err(|found| SqlError::NewerSchema {
        found,
        known: migrations::latest(all),
    })?;
    for m in &pending {
        tx.batch_execute(m.sql).await?;
        let version = i32::try_from(m.version).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &m.name],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(migrations::latest(all))
}

async fn pairs(client: &Client, sql: &str) -> Result<Vec<(String, Vec<u8>)>, SqlError> {
    Ok(client
        .query(sql, &[])
        .await?
        .into_iter()
        .map(|row| {
            (
                row.get::<_, String>(0),
                row.get::<_, String>(1).into_bytes(),
            )
        })
        .collect())
}

/// The highest migration applied.
async fn schema_version(client: &Client) -> Result<u32, SqlError> {
    let version: i32 = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    Ok(u32::try_from(version).unwrap_or(0))
}

/// Everything `Backend::load` returns, read in one repeatable-read snapshot.
pub(super) async fn load(client: &mut Client) -> Result<Loaded, SqlError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let client: &Client = tx.client();
    let definitions = client
        .query("SELECT digest, pipeline, definition FROM definitions", &[])
        .await?
        .into_iter()
        .map(|row| DefinitionRow {
            digest: row.get(0),
            pipeline: row.get(1),
            definition: row.get::<_, String>(2).into_bytes(),
        })
        .collect();
    let runs = pairs(client, "SELECT id, record FROM pipeline_runs").await?;
    let archived = client
        .query(
            "SELECT id, pipeline, state, finished_at FROM run_history",
            &[],
        )
        .await?
        .into_iter()
        .map(|row| ArchivedRow {
            id: row.get(0),
            pipeline: row.get(1),
            state: row.get(2),
            finished_at: row.get(3),
        })
        .collect();
    let cursors = pairs(client, "SELECT pipeline, cursor FROM schedule_cursors").await?;
    let backfills = pairs(client, "SELECT id, backfill FROM backfills").await?;
    let loaded = Loaded {
        definitions,
        runs,
        archived,
        cursors,
        backfills,
    };
    tx.commit().await?;
    Ok(loaded)
}

fn utf8(bytes: &[u8]) -> Result<&str, SqlError> {
    std::str::from_utf8(bytes).map_err(|e| SqlError::Encoding(e.to_string()))
}

/// One transaction: the fence (when the store has one), then the batch. Every statement is
/// idempotent (upserts, deletes, a whole replacement), so a batch whose commit was cut off by a
/// lost connection may be applied again.
pub(super) async fn apply(
    client: &mut Client,
    fence: Option<&Fence>,
    batch: &Batch,
    durability: Durability,
) -> Result<(), SqlError> {
    let tx = client.transaction().await?;
    if durability == Durability::Deferred {
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await?;
    }
    if let Some(fence) = fence {
        if tx
            .query_opt(FENCE_SQL, &[&fence.node, &fence.epoch.0])
            .await?
            .is_none()
        {
            return Err(SqlError::Fenced(fence.epoch));
        }
    }
    write_batch(&tx, batch).await?;
    if batch.is_empty() {
        // A commit that writes nothing flushes nothing: bump a counter so this synchronous
        // commit flushes the write-ahead log, earlier deferred commits included.
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('full_syncs', '1')
             ON CONFLICT (key) DO UPDATE SET value = (meta.value::bigint + 1)::text",
            &[],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn write_batch(tx: &Transaction<'_>, batch: &Batch) -> Result<(), SqlError> {
    if !batch.definitions.is_empty() {
        let insert = tx
            .prepare(
                "INSERT INTO definitions (digest, pipeline, definition) VALUES ($1, $2, $3)
                 ON CONFLICT (digest) DO NOTHING",
            )
            .await?;
        for d in &batch.definitions {
            tx.execute(&insert, &[&d.digest, &d.pipeline, &utf8(&d.definition)?])
                .await?;
        }
    }
    let forget = tx
        .prepare("DELETE FROM pipeline_runs WHERE id = $1")
        .await?;
    if !batch.archive.is_empty() {
        let history = tx
            .prepare(
                "INSERT INTO run_history
                 (id, pipeline, logical_date, state, started_at, finished_at, attempts, definition, record)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (id) DO UPDATE SET pipeline = excluded.pipeline,
                 logical_date = excluded.logical_date, state = excluded.state,
                 started_at = excluded.started_at, finished_at = excluded.finished_at,
                 attempts = excluded.attempts, definition = excluded.definition,
                 record = excluded.record",
            )
            .await?;
        for r in &batch.archive {
            let finished = r.finished_at.as_deref().unwrap_or(r.logical_date.as_str());
            let record = super::super::records::deflate(&r.record);
            tx.execute(
                &history,
                &[
                    &r.id,
                    &r.pipeline,
                    &r.logical_date,
                    &r.state,
                    &r.started_at,
                    &finished,
                    &r.attempts,
                    &r.definition,
                    &record,
                ],
            )
            .await?;
            tx.execute(&forget, &[&r.id]).await?;
        }
    }
    if !batch.runs.is_empty() {
        let runs = tx
            .prepare(
                "INSERT INTO pipeline_runs
                 (id, pipeline, logical_date, state, started_at, finished_at, definition, record)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state,
                 started_at = excluded.started_at, finished_at = excluded.finished_at,
                 definition = excluded.definition, record = excluded.record",
            )
            .await?;
        for r in &batch.runs {
            tx.execute(
                &runs,
                &[
                    &r.id,
                    &r.pipeline,
                    &r.logical_date,
                    &r.state,
                    &r.started_at,
                    &r.finished_at,
                    &r.definition,
                    &utf8(&r.record)?,
                ],
            )
            .await?;
        }
    }
    if !batch.deletes.is_empty() {
        let forget_history = tx.prepare("DELETE FROM run_history WHERE id = $1").await?;
        for id in &batch.deletes {
            tx.execute(&forget, &[id]).await?;
            tx.execute(&forget_history, &[id]).await?;
        }
    }
    for (pipeline, cursor) in &batch.cursors {
        tx.execute(
            "INSERT INTO schedule_cursors (pipeline, cursor) VALUES ($1, $2)
             ON CONFLICT (pipeline) DO UPDATE SET cursor = excluded.cursor",
            &[pipeline, &utf8(cursor)?],
        )
        .await?;
    }
    for (id, backfill) in &batch.backfills {
        tx.execute(
            "INSERT INTO backfills (id, backfill) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET backfill = excluded.backfill",
            &[id, &utf8(backfill)?],
        )
        .await?;
    }
    if let Some(jobs) = &batch.resolved_jobs {
        tx.execute("DELETE FROM resolved_jobs", &[]).await?;
        for (reference, job_id) in jobs {
            tx.execute(
                "INSERT INTO resolved_jobs (reference, job_id) VALUES ($1, $2)",
                &[reference, job_id],
            )
            .await?;
        }
    }
    Ok(())
}

/// The schema is the one this build writes (foreign keys and types guard the rows themselves).
pub(super) async fn check(client: &Client, all: &[Migration]) -> Result<Vec<String>, SqlError> {
    let mut problems = Vec::new();
    let version = schema_version(client).await?;
    if version != migrations::latest(all) {
        problems.push(format!(
            "schema version {version}, expected {}",
            migrations::latest(all)
        ));
    }
    Ok(problems)
}

pub(super) async fn resolved_jobs(client: &Client) -> Result<Vec<(String, i64)>, SqlError> {
    Ok(client
        .query("SELECT reference, job_id FROM resolved_jobs", &[])
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

pub(super) async fn size(client: &Client) -> Result<u64, SqlError> {
    let bytes: i64 = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?
        .get(0);
    Ok(u64::try_from(bytes).unwrap_or(0))
}

pub(super) async fn history_get(client: &Client, id: &str) -> Result<Option<Vec<u8>>, SqlError> {
    Ok(client
        .query_opt("SELECT record FROM run_history WHERE id = $1", &[&id])
        .await?
        .map(|row| row.get(0)))
}

pub(super) async fn history_newest(
    client: &Client,
    pipeline: &str,
    limit: usize,
) -> Result<Vec<Vec<u8>>, SqlError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(client
        .query(
            "SELECT record FROM run_history WHERE pipeline = $1
              ORDER BY logical_date DESC, id DESC LIMIT $2",
            &[&pipeline, &limit],
        )
        .await?
        .into_iter()
        .map(|row| row.get(0))
        .collect())
}

pub(super) async fn history_all(client: &Client) -> Result<Vec<Vec<u8>>, SqlError> {
    Ok(client
        .query("SELECT record FROM run_history", &[])
        .await?
        .into_iter()
        .map(|row| row.get(0))
        .collect())
}

pub(super) async fn definition(client: &Client, digest: &str) -> Result<Option<Vec<u8>>, SqlError> {
    Ok(client
        .query_opt(
            "SELECT definition FROM definitions WHERE digest = $1",
            &[&digest],
        )
        .await?
        .map(|row| row.get::<_, String>(0).into_bytes()))
}
