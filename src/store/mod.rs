//! Durable state in sled (0.34) behind a typed API: pipeline runs, schedule cursors and backfills,
//! with a schema version. A write is durable only once `flush` returns, so `commit` flushes before
//! it reports success.

use crate::engine::backfill::Backfill;
use crate::engine::state::{PipelineRun, PipelineRunId, ScheduleCursor, State, Write};
use crate::model::pipeline::PipelineName;
use std::path::{Path, PathBuf};

/// The layout version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

const META_TREE: &str = "meta";
const RUNS_TREE: &str = "pipeline_runs";
const CURSORS_TREE: &str = "schedule_cursors";
const BACKFILLS_TREE: &str = "backfills";
const SCHEMA_KEY: &str = "schema_version";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "state directory {dir} is in use by another baton process (sled holds a lock on it); \
         stop the other daemon or point --config at another state_dir"
    )]
    Locked { dir: PathBuf },
    #[error(
        "cannot open the state directory {dir}: {message}; check that it exists, is writable by \
         this user and is not corrupted (restore it from a backup, or move it aside to start empty)"
    )]
    Open { dir: PathBuf, message: String },
    #[error(
        "the state directory {dir} holds an unreadable record {key}: {message}; restore the \
         directory from a backup, or move it aside to start empty"
    )]
    Corrupt {
        dir: PathBuf,
        key: String,
        message: String,
    },
    #[error(
        "the state directory {dir} was written by schema version {found}, this baton reads {expected}; \
         use a matching baton release"
    )]
    SchemaVersion {
        dir: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("writing the state directory {dir} failed: {message}")]
    Write { dir: PathBuf, message: String },
    #[error(
        "the state directory {dir} lost its database: {marker} says it holds baton's state, but \
         sled found none (its db file is corrupted, truncated or gone, and sled recovered to an \
         empty database); restore the directory from a backup, or, to start empty on purpose, \
         delete {marker}"
    )]
    Lost { dir: PathBuf, marker: PathBuf },
}

/// Written beside sled's files once the schema version is durable in sled. sled recovers a
/// corrupted or truncated `db` file to an empty database without an error; this file is the
/// witness that the directory held state, so that such a loss stops the daemon instead of letting
/// it start over (forgetting the runs it was watching).
const MARKER_FILE: &str = "baton-store";

/// The daemon's state directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    runs: sled::Tree,
    cursors: sled::Tree,
    backfills: sled::Tree,
    /// Written since the last flush.
    dirty: std::sync::atomic::AtomicBool,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. A second process gets `StoreError::Locked`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            dir: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let db = open_db(dir)?;
        let open_tree = |name: &str| {
            db.open_tree(name).map_err(|e| StoreError::Open {
                dir: dir.to_path_buf(),
                message: e.to_string(),
            })
        };
        let meta = open_tree(META_TREE)?;
        let runs = open_tree(RUNS_TREE)?;
        let cursors = open_tree(CURSORS_TREE)?;
        let backfills = open_tree(BACKFILLS_TREE)?;
        let store = Self {
            dir: dir.to_path_buf(),
            db,
            runs,
            cursors,
            backfills,
            dirty: std::sync::atomic::AtomicBool::new(false),
        };
        let marker = dir.join(MARKER_FILE);
        let had_marker = marker.exists();
        match meta.get(SCHEMA_KEY).map_err(|e| store.write_error(e))? {
            Some(raw) => {
                let found = std::str::from_utf8(&raw)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                    .unwrap_or(0);
                if found != SCHEMA_VERSION {
                    return Err(StoreError::SchemaVersion {
                        dir: dir.to_path_buf(),
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
            }
            None if had_marker => {
                return Err(StoreError::Lost {
                    dir: dir.to_path_buf(),
                    marker,
                })
            }
            None => {
                meta.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())
                    .map_err(|e| store.write_error(e))?;
                store.db.flush().map_err(|e| store.write_error(e))?;
            }
        }
        if !had_marker {
            store.write_marker(&marker)?;
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads everything into memory.
    pub fn load(&self) -> Result<State, StoreError> {
        let mut state = State::default();
        for entry in self.runs.iter() {
            let (key, value) = entry.map_err(|e| self.write_error(e))?;
            let run: PipelineRun = serde_json::from_slice(&value)
                .map_err(|e| self.corrupt(RUNS_TREE, &key, e.to_string()))?;
            state.runs.insert(run.id.clone(), run);
        }
        for entry in self.cursors.iter() {
            let (key, value) = entry.map_err(|e| self.write_error(e))?;
            let cursor: ScheduleCursor = serde_json::from_slice(&value)
                .map_err(|e| self.corrupt(CURSORS_TREE, &key, e.to_string()))?;
            let name = String::from_utf8_lossy(&key).into_owned();
            state.cursors.insert(PipelineName(name), cursor);
        }
        for entry in self.backfills.iter() {
            let (key, value) = entry.map_err(|e| self.write_error(e))?;
            let backfill: Backfill = serde_json::from_slice(&value)
                .map_err(|e| self.corrupt(BACKFILLS_TREE, &key, e.to_string()))?;
            state.backfills.insert(backfill.id.clone(), backfill);
        }
        Ok(state)
    }

    /// Applies the writes and flushes: when this returns Ok, they survive a power cut.
    pub fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        self.write(writes)?;
        self.flush()
    }

    /// Applies the writes without waiting for the disk: for changes no side effect depends on yet
    /// (the next `flush` makes them durable with everything else).
    pub fn write(&self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut runs = sled::Batch::default();
        let mut cursors = sled::Batch::default();
        let mut backfills = sled::Batch::default();
        for write in writes {
            match write {
                Write::Run(run) => runs.insert(run.id.0.as_bytes(), self.encode(run.as_ref())?),
                Write::DeleteRun(PipelineRunId(id)) => runs.remove(id.as_bytes()),
                Write::Cursor(name, cursor) => {
                    cursors.insert(name.0.as_bytes(), self.encode(cursor)?)
                }
                Write::Backfill(backfill) => {
                    backfills.insert(backfill.id.0.as_bytes(), self.encode(backfill.as_ref())?)
                }
            }
        }
        self.runs
            .apply_batch(runs)
            .map_err(|e| self.write_error(e))?;
        self.cursors
            .apply_batch(cursors)
            .map_err(|e| self.write_error(e))?;
        self.backfills
            .apply_batch(backfills)
            .map_err(|e| self.write_error(e))?;
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Makes every write so far durable (a no-op when nothing was written since the last flush).
    pub fn flush(&self) -> Result<(), StoreError> {
        if self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed) {
            self.db.flush().map_err(|e| self.write_error(e))?;
        }
        Ok(())
    }

    /// Writes the marker durably (temporary file, fsync, rename, fsync of the directory).
    fn write_marker(&self, marker: &Path) -> Result<(), StoreError> {
        use std::io::Write as _;
        let io = |e: std::io::Error| StoreError::Write {
            dir: self.dir.clone(),
            message: e.to_string(),
        };
        let temporary = self.dir.join(format!("{MARKER_FILE}.tmp"));
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        writeln!(file, "baton state, schema version {SCHEMA_VERSION}").map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, marker).map_err(io)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    fn encode<T: serde::Serialize>(&self, value: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|e| StoreError::Write {
            dir: self.dir.clone(),
            message: e.to_string(),
        })
    }

    fn write_error(&self, e: sled::Error) -> StoreError {
        StoreError::Write {
            dir: self.dir.clone(),
            message: e.to_string(),
        }
    }

    fn corrupt(&self, tree: &str, key: &[u8], message: String) -> StoreError {
        StoreError::Corrupt {
            dir: self.dir.clone(),
            key: format!("{tree}/{}", String::from_utf8_lossy(key)),
            message,
        }
    }
}

/// How long `open` waits for a store dropped in this process to let go of its lock: sled releases
/// it from its own threads, a little after the drop.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        // No background flusher: baton flushes when it must.
        .flush_every_ms(None);
    let started = std::time::Instant::now();
    loop {
        match config.open().map_err(|e| open_error(dir, e)) {
            Err(StoreError::Locked { .. }) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn open_error(dir: &Path, e: sled::Error) -> StoreError {
    let message = e.to_string();
    let locked = match &e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock || message.contains("lock")
        }
        _ => false,
    };
    if locked {
        StoreError::Locked {
            dir: dir.to_path_buf(),
        }
    } else {
        StoreError::Open {
            dir: dir.to_path_buf(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::ScheduleCursor;

    #[test]
    fn cursors_survive_reopen_and_a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .commit(&[Write::Cursor(
                    PipelineName("nightly".into()),
                    ScheduleCursor {
                        last_tick: None,
                        paused: true,
                    },
                )])
                .unwrap();
            let second = Store::open(dir.path());
            assert!(
                matches!(second, Err(StoreError::Locked { .. })),
                "{second:?}"
            );
        }
        let store = Store::open(dir.path()).unwrap();
        let state = store.load().unwrap();
        assert!(state.cursors[&PipelineName("nightly".into())].paused);
    }

    #[test]
    fn a_database_sled_recovered_to_empty_is_refused_not_started_over() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .commit(&[Write::Cursor(
                    PipelineName("nightly".into()),
                    ScheduleCursor::default(),
                )])
                .unwrap();
        }
        let db = dir.path().join("db");
        let len = std::fs::metadata(&db).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Lost { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("backup"), "{message}");
        // A directory opened once and never written to again opens again.
        let fresh = tempfile::tempdir().unwrap();
        drop(Store::open(fresh.path()).unwrap());
        drop(Store::open(fresh.path()).unwrap());
    }

    #[test]
    fn a_garbled_record_names_the_directory_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.runs.insert("x@y", &b"not json"[..]).unwrap();
            store.db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("backup"), "{err}");
    }
}
