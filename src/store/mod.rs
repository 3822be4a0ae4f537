//! Durable state in sled (0.34) behind a typed API: pipeline runs (in memory and archived),
//! their definitions, schedule cursors and backfills, with a schema version. A write is durable
//! only once `flush` returns, so `commit` flushes before it reports success.

#[cfg(test)]
mod archive_tests;
mod history;
mod job_refs;
mod records;

pub use history::HistoryReader;

use crate::engine::backfill::Backfill;
use crate::engine::state::{ArchivedRun, PipelineRunId, ScheduleCursor, State, Write};
use crate::model::pipeline::{Pipeline, PipelineName};
use records::{Definitions, IndexEntry};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The layout version this build writes. Schema 1 (definitions inline in each run record, no
/// archive) is read and upgraded in place.
pub const SCHEMA_VERSION: u32 = 2;
const OLDEST_READABLE_SCHEMA: u32 = 1;

const META_TREE: &str = "meta";
/// Pipeline runs the engine holds in memory: unfinished and recently finished.
const RUNS_TREE: &str = "pipeline_runs";
/// Archived runs' records, keyed by run id (`pipeline@date`), so a pipeline's runs are adjacent.
const HISTORY_TREE: &str = "run_history";
/// One small entry per archived run, read at start-up instead of the records.
const INDEX_TREE: &str = "run_index";
/// Pipeline definitions by digest, shared by the run records that name them.
const DEFINITIONS_TREE: &str = "definitions";
const CURSORS_TREE: &str = "schedule_cursors";
const BACKFILLS_TREE: &str = "backfills";
const SCHEMA_KEY: &str = "schema_version";
/// sled's page cache: the engine keeps what it needs in memory, so a small cache is enough.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

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
    history: sled::Tree,
    index: sled::Tree,
    definitions: sled::Tree,
    cursors: sled::Tree,
    backfills: sled::Tree,
    /// Shared with the history readers, so a definition is decoded once per process.
    defs: Arc<Mutex<Definitions>>,
    reader: HistoryReader,
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
        let history = open_tree(HISTORY_TREE)?;
        let definitions = open_tree(DEFINITIONS_TREE)?;
        let defs: Arc<Mutex<Definitions>> = Arc::default();
        let store = Self {
            dir: dir.to_path_buf(),
            runs,
            reader: HistoryReader::new(history.clone(), definitions.clone(), defs.clone()),
            history,
            index: open_tree(INDEX_TREE)?,
            definitions,
            db,
            cursors,
            backfills,
            defs,
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
                if !(OLDEST_READABLE_SCHEMA..=SCHEMA_VERSION).contains(&found) {
                    return Err(StoreError::SchemaVersion {
                        dir: dir.to_path_buf(),
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
                if found < SCHEMA_VERSION {
                    // Records of the older schema are read as they are and rewritten when they
                    // change; the version says this build has written here.
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())
                        .map_err(|e| store.write_error(e))?;
                    store.db.flush().map_err(|e| store.write_error(e))?;
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

    /// Reads what the daemon keeps in memory: the runs not archived in full, one small entry per
    /// archived run, cursors and backfills. Archived records stay on disk.
    pub fn load(&self) -> Result<State, StoreError> {
        let mut state = State::default();
        self.load_definitions()?;
        for entry in self.runs.iter() {
            let (key, value) = entry.map_err(|e| self.write_error(e))?;
            let run = self.decode_run(RUNS_TREE, &key, &value)?;
            state.runs.insert(run.id.clone(), run);
        }
        let mut last_success: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
            std::collections::HashMap::new();
        for entry in self.index.iter() {
            let (key, value) = entry.map_err(|e| self.write_error(e))?;
            let (run_state, finished_at, pipeline) = IndexEntry::peek(&value)
                .map_err(|message| self.corrupt(INDEX_TREE, &key, message))?;
            let id = PipelineRunId(String::from_utf8_lossy(&key).into_owned());
            if state.runs.contains_key(&id) {
                // Retried after it was archived: the record in memory is the current one.
                continue;
            }
            if run_state == crate::engine::state::PipelineRunState::Succeeded {
                match last_success.get_mut(pipeline) {
                    Some(last) => *last = (*last).max(finished_at),
                    None => {
                        last_success.insert(pipeline.to_string(), finished_at);
                    }
                }
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

    /// Like `load`, with every archived run read back in full into `runs` (for tests and tools:
    /// slow with a long history).
    pub fn load_everything(&self) -> Result<State, StoreError> {
        let mut state = self.load()?;
        for entry in self.history.iter() {
            let (key, value) = entry.map_err(|e| self.write_error(e))?;
            let run = self.decode_run(HISTORY_TREE, &key, &value)?;
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

    fn load_definitions(&self) -> Result<(), StoreError> {
        let mut defs = self.defs.lock().unwrap_or_else(|e| e.into_inner());
        for entry in self.definitions.iter() {
            let (key, value) = entry.map_err(|e| self.write_error(e))?;
            let definition: Pipeline = serde_json::from_slice(&value)
                .map_err(|e| self.corrupt(DEFINITIONS_TREE, &key, e.to_string()))?;
            defs.insert_stored(String::from_utf8_lossy(&key).into_owned(), definition);
        }
        Ok(())
    }

    fn decode_run(
        &self,
        tree: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<crate::engine::state::PipelineRun, StoreError> {
        let mut defs = self.defs.lock().unwrap_or_else(|e| e.into_inner());
        defs.decode(value, &|_| None)
            .map_err(|message| self.corrupt(tree, key, message))
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
        let mut history = sled::Batch::default();
        let mut index = sled::Batch::default();
        let mut definitions = sled::Batch::default();
        let mut cursors = sled::Batch::default();
        let mut backfills = sled::Batch::default();
        let mut defs = self.defs.lock().unwrap_or_else(|e| e.into_inner());
        let mut encode_run = |run: &crate::engine::state::PipelineRun| {
            let encoded = defs.encode(run).map_err(|e| self.encode_error(e))?;
            if let Some((digest, bytes)) = encoded.new_definition {
                definitions.insert(digest.as_bytes(), bytes);
            }
            Ok::<_, StoreError>(encoded.record)
        };
        for write in writes {
            match write {
                Write::Run(run) => runs.insert(run.id.0.as_bytes(), encode_run(run)?),
                Write::Archive(run) => {
                    let key = run.id.0.as_bytes();
                    history.insert(key, encode_run(run)?);
                    index.insert(key, IndexEntry::of(run).encode());
                    runs.remove(key);
                }
                Write::DeleteRun(PipelineRunId(id)) => {
                    runs.remove(id.as_bytes());
                    history.remove(id.as_bytes());
                    index.remove(id.as_bytes());
                }
                Write::Cursor(name, cursor) => {
                    cursors.insert(name.0.as_bytes(), self.encode(cursor)?)
                }
                Write::Backfill(backfill) => {
                    backfills.insert(backfill.id.0.as_bytes(), self.encode(backfill.as_ref())?)
                }
            }
        }
        drop(defs);
        // Definitions before the runs naming them, and an archived record before its removal
        // from the runs tree: a crash in between leaves a run in both places, never in neither.
        for (tree, batch) in [
            (&self.definitions, definitions),
            (&self.history, history),
            (&self.index, index),
            (&self.runs, runs),
            (&self.cursors, cursors),
            (&self.backfills, backfills),
        ] {
            tree.apply_batch(batch).map_err(|e| self.write_error(e))?;
        }
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
        serde_json::to_vec(value).map_err(|e| self.encode_error(e))
    }

    fn encode_error(&self, e: serde_json::Error) -> StoreError {
        StoreError::Write {
            dir: self.dir.clone(),
            message: e.to_string(),
        }
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

impl Drop for Store {
    fn drop(&mut self) {
        self.reader.close();
    }
}

/// How long `open` waits for a store dropped in this process to let go of its lock: sled releases
/// it from its own threads, a little after the drop.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        .cache_capacity(CACHE_BYTES)
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
