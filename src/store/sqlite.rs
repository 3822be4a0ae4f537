//! The embedded backend: one SQLite file (`baton.db`) in the state directory, in WAL mode with
//! `synchronous=FULL`, written by one connection (the runtime loop's) and read by another (the
//! history reader) that never blocks it. A lock file keeps a second daemon out.

use super::backend::{
    ArchivedRow, Backend, Batch, DefinitionRow, Durability, Fill, HistorySource, Loaded,
};
use super::migrations::{self, Migration};
use super::sqlite_rows::Rows;
use super::StoreError;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The database file inside the state directory.
pub const DB_FILE: &str = "baton.db";
/// Held (an exclusive `flock`) by the one daemon that writes the directory.
const LOCK_FILE: &str = "baton.lock";
/// Written once the schema is durable: a directory that has it but whose database holds no schema
/// lost its database (deleted or replaced), and must not silently start over.
const MARKER_FILE: &str = "baton-store";
/// How long `open` waits for the lock before saying another daemon holds it: a process that has
/// just exited, or a child forked by a process that held it and not yet exec'd, lets go within
/// moments (on a loaded machine, up to a few hundred milliseconds were seen).
const LOCK_WAIT: Duration = Duration::from_secs(5);
const LOCK_RETRY: Duration = Duration::from_millis(20);
/// How long a connection waits for another's lock (a backup, the reader) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pages handed back to the file system after a commit that deleted runs (4 KiB each): small
/// steps, so retention never holds the loop for long.
const VACUUM_PAGES_PER_COMMIT: u32 = 256;

/// The SQLite backend of a state directory.
#[derive(Debug)]
pub struct SqliteBackend {
    location: String,
    path: PathBuf,
    writer: Mutex<Writer>,
    reader: Arc<SqliteHistory>,
    /// Kept open for the store's life: the lock is the file's.
    _lock: File,
}

#[derive(Debug)]
struct Writer {
    conn: Connection,
    /// Commits made with `synchronous=NORMAL` since the last full one.
    unsynced: bool,
    synchronous_full: bool,
}

impl SqliteBackend {
    /// Opens (creating if needed) the database in `dir`, applying pending migrations.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(DB_FILE);
        let location = path.display().to_string();
        let open_error = |message: String| StoreError::Open {
            location: location.clone(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| open_error(e.to_string()))?;
        let asked = std::time::Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if asked.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Locked {
                        location: dir.display().to_string(),
                    })
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(open_error(e.to_string())),
            }
        }
        let marker = dir.join(MARKER_FILE);
        let mut conn = Connection::open(&path).map_err(|e| classify(&location, e))?;
        configure(&conn, &location)?;
        let version = migrate(&mut conn, &location, migrations::SQLITE, marker.exists())?;
        if !marker.exists() {
            write_marker(dir, &marker, version).map_err(|e| open_error(e.to_string()))?;
        }
        let reader = Arc::new(SqliteHistory::open(&path, &location)?);
        Ok(Self {
            location,
            path,
            writer: Mutex::new(Writer {
                conn,
                unsynced: false,
                synchronous_full: true,
            }),
            reader,
            _lock: lock,
        })
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_error(&self, e: rusqlite::Error) -> StoreError {
        classify(&self.location, e)
    }

    /// One transaction whose rows `fill` writes as it goes. With `may_skip` (nothing to write),
    /// no transaction at all unless earlier deferred commits must now become durable.
    fn write(
        &self,
        durability: Durability,
        may_skip: bool,
        fill: &mut dyn FnMut(&mut Rows<'_, '_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut writer = self.writer();
        let full = durability == Durability::Full;
        if may_skip && (!full || !writer.unsynced) {
            return Ok(());
        }
        let err = |e| classify(&self.location, e);
        if writer.synchronous_full != full {
            let pragma = if full {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            writer.conn.execute_batch(pragma).map_err(err)?;
            writer.synchronous_full = full;
        }
        let tx = writer
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut rows = Rows {
            tx: &tx,
            location: &self.location,
            written: 0,
            deleted: false,
        };
        fill(&mut rows)?;
        let (written, deleted) = (rows.written, rows.deleted);
        if written == 0 {
            // Nothing to write, yet earlier deferred commits must become durable: a commit with
            // synchronous=FULL syncs the whole write-ahead log, theirs included.
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('full_syncs', '1') \
                 ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
                [],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        writer.unsynced = !full;
        if deleted {
            incremental_vacuum(&writer.conn).map_err(err)?;
        }
        Ok(())
    }
}

/// The connection settings every connection of the writer uses.
fn configure(conn: &Connection, location: &str) -> Result<(), StoreError> {
    let err = |e| classify(location, e);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    // Only takes effect before the first table exists: a new database gives freed pages back.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")
        .map_err(err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Open {
            location: location.to_string(),
            message: format!("SQLite refused WAL mode (journal mode is {mode})"),
        });
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(err)
}

/// Applies the pending migrations in one transaction; returns the version now in force.
fn migrate(
    conn: &mut Connection,
    location: &str,
    all: &[Migration],
    had_marker: bool,
) -> Result<u32, StoreError> {
    let err = |e| classify(location, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL
         ) STRICT;",
    )
    .map_err(err)?;
    let current: u32 = tx
        .query_row(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )
        .map_err(err)?;
    if current == 0 && had_marker {
        return Err(StoreError::Lost {
            location: location.to_string(),
            marker: Path::new(location)
                .with_file_name(MARKER_FILE)
                .display()
                .to_string(),
        });
    }
    let pending = migrations::pending(all, current).map_err(|found| StoreError::NewerSchema {
        location: location.to_string(),
        found,
        known: migrations::latest(all),
    })?;
    for m in &pending {
        tx.execute_batch(m.sql).map_err(err)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) \
             VALUES (?1, ?2, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
            params![m.version, m.name],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)?;
    Ok(migrations::latest(all))
}

/// Writes the marker durably (temporary file, fsync, rename, fsync of the directory).
fn write_marker(dir: &Path, marker: &Path, version: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    let temporary = dir.join(format!("{MARKER_FILE}.tmp"));
    let mut file = File::create(&temporary)?;
    writeln!(
        file,
        "baton state: {DB_FILE} holds it (schema version {version}); \
         if {DB_FILE} is gone, restore it from a backup"
    )?;
    file.sync_all()?;
    std::fs::rename(&temporary, marker)?;
    File::open(dir)?.sync_all()
}

/// Names what went wrong: a damaged file, a lock, or anything else.
pub(super) fn classify(location: &str, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    let code = e.sqlite_error_code();
    let message = e.to_string();
    match code {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            location: location.to_string(),
            key: "the database file".into(),
            message,
        },
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
            StoreError::Open {
                location: location.to_string(),
                message,
            }
        }
        _ => StoreError::Write {
            location: location.to_string(),
            message,
        },
    }
}

impl Backend for SqliteBackend {
    fn location(&self) -> &str {
        &self.location
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        let writer = self.writer();
        let conn = &writer.conn;
        let read = || -> rusqlite::Result<Loaded> {
            Ok(Loaded {
                definitions: rows(
                    conn,
                    "SELECT digest, pipeline, definition FROM definitions",
                    |row| {
                        Ok(DefinitionRow {
                            digest: row.get(0)?,
                            pipeline: row.get(1)?,
                            definition: row.get::<_, String>(2)?.into_bytes(),
                        })
                    },
                )?,
                runs: rows(conn, "SELECT id, record FROM pipeline_runs", text_pair)?,
                archived: rows(
                    conn,
                    "SELECT id, pipeline, state, finished_at FROM run_history \
                     INDEXED BY run_history_by_pipeline",
                    |row| {
                        Ok(ArchivedRow {
                            id: row.get(0)?,
                            pipeline: row.get(1)?,
                            state: row.get(2)?,
                            finished_at: row.get(3)?,
                        })
                    },
                )?,
                cursors: rows(
                    conn,
                    "SELECT pipeline, cursor FROM schedule_cursors",
                    text_pair,
                )?,
                backfills: rows(conn, "SELECT id, backfill FROM backfills", text_pair)?,
            })
        };
        read().map_err(|e| self.write_error(e))
    }

    fn apply(&self, batch: Batch, durability: Durability) -> Result<(), StoreError> {
        let may_skip = batch.is_empty();
        let mut batch = Some(batch);
        self.write(durability, may_skip, &mut |rows| match batch.take() {
            Some(batch) => rows.batch(batch),
            None => Ok(()),
        })
    }

    fn apply_rows(&self, fill: Fill<'_>, durability: Durability) -> Result<(), StoreError> {
        self.write(durability, false, &mut |rows| fill(rows))
    }

    fn resolved_jobs(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let writer = self.writer();
        rows(
            &writer.conn,
            "SELECT reference, job_id FROM resolved_jobs",
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(|e| self.write_error(e))
    }

    fn history(&self) -> Arc<dyn HistorySource> {
        self.reader.clone()
    }

    fn check(&self) -> Result<Vec<String>, StoreError> {
        integrity_check(&self.path)
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for suffix in ["", "-wal"] {
            let file = PathBuf::from(format!("{}{suffix}", self.path.display()));
            total += std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        }
        Ok(total)
    }
}

/// Gives freed pages back to the file system. The pragma frees one page per step, so it is stepped
/// to the end.
fn incremental_vacuum(conn: &Connection) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(&format!(
        "PRAGMA incremental_vacuum({VACUUM_PAGES_PER_COMMIT})"
    ))?;
    let mut rows = statement.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

fn rows<T>(
    conn: &Connection,
    sql: &str,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut statement = conn.prepare(sql)?;
    let rows = statement.query_map([], map)?;
    rows.collect()
}

/// A key and a JSON text column, as bytes.
fn text_pair(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Vec<u8>)> {
    Ok((row.get(0)?, row.get::<_, String>(1)?.into_bytes()))
}

/// `PRAGMA integrity_check` on its own read-only connection: empty when the database is sound.
pub fn integrity_check(path: &Path) -> Result<Vec<String>, StoreError> {
    let location = path.display().to_string();
    let conn = open_read_only(path, &location)?;
    let mut statement = conn
        .prepare("PRAGMA integrity_check")
        .map_err(|e| classify(&location, e))?;
    let lines: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .map_err(|e| classify(&location, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| classify(&location, e))?;
    Ok(lines.into_iter().filter(|line| line != "ok").collect())
}

/// A consistent copy of the database at `target`, taken while a daemon may be writing
/// (`VACUUM INTO` reads one snapshot; the copy is compact and needs no journal).
pub fn backup(path: &Path, target: &Path) -> Result<(), StoreError> {
    let location = path.display().to_string();
    if target.exists() {
        return Err(StoreError::Open {
            location: target.display().to_string(),
            message: "the backup file exists already; name a new file".into(),
        });
    }
    let conn = open_read_only(path, &location)?;
    let target = target.to_str().ok_or_else(|| StoreError::Open {
        location: target.display().to_string(),
        message: "the backup path is not UTF-8".into(),
    })?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|e| classify(&location, e))?;
    Ok(())
}

fn open_read_only(path: &Path, location: &str) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Open {
            location: location.to_string(),
            message: "no such database (is state_dir right?)".into(),
        });
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| classify(location, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| classify(location, e))?;
    Ok(conn)
}

/// The history reader's own read-only connection: in WAL mode it reads a snapshot and never
/// blocks the writer.
#[derive(Debug)]
pub struct SqliteHistory {
    location: String,
    conn: Mutex<Connection>,
}

impl SqliteHistory {
    fn open(path: &Path, location: &str) -> Result<Self, StoreError> {
        Ok(Self {
            location: location.to_string(),
            conn: Mutex::new(open_read_only(path, location)?),
        })
    }

    fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        read(&conn).map_err(|e| classify(&self.location, e))
    }
}

impl HistorySource for SqliteHistory {
    fn get(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT record FROM run_history WHERE id = ?1")?
                .query_row([id], |row| row.get(0))
                .optional()
        })
    }

    fn newest(&self, pipeline: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT record FROM run_history WHERE pipeline = ?1 \
                 ORDER BY logical_date DESC, id DESC LIMIT ?2",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = statement.query_map(params![pipeline, limit], |row| row.get(0))?;
            rows.collect()
        })
    }

    fn all(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare("SELECT record FROM run_history")?;
            let rows = statement.query_map([], |row| row.get(0))?;
            rows.collect()
        })
    }

    fn definition(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT definition FROM definitions WHERE digest = ?1")?
                .query_row([digest], |row| row.get::<_, String>(0))
                .optional()
                .map(|d| d.map(String::into_bytes))
        })
    }
}
