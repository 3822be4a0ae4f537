//! The SQLite backend: the shared store suite, and what only a file on disk can show (locking,
//! migrations, damage, disk given back).

use super::sqlite::DB_FILE;
use super::*;
use crate::engine::state::ScheduleCursor;
use rusqlite::Connection;

fn nightly_cursor() -> Write {
    Write::Cursor(PipelineName("nightly".into()), ScheduleCursor::default())
}

#[test]
fn sqlite_passes_the_store_suite() {
    suite::run_all(&|case| {
        let dir = tempfile::tempdir().unwrap();
        case(&|| Store::open(dir.path()));
    });
}

#[test]
fn a_second_opener_is_refused_while_the_first_holds_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let second = Store::open(dir.path());
    let err = second.unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("another baton process"), "{err}");
    drop(store);
    assert!(
        Store::open(dir.path()).is_ok(),
        "the lock goes with the store"
    );
}

#[test]
fn a_version_1_database_is_upgraded_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    {
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(
            "DROP TABLE resolved_jobs; DELETE FROM schema_migrations WHERE version = 2;",
        )
        .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert!(store.resolved_jobs().unwrap().is_empty());
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let version: u32 = conn
        .query_row("SELECT max(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(version, migrations::latest(migrations::SQLITE));
}

#[test]
fn a_database_from_a_newer_baton_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    {
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations VALUES (99, 'future', '2030-01-01T00:00:00Z')",
            [],
        )
        .unwrap();
    }
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::NewerSchema { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("newer baton"), "{err}");
}

#[test]
fn a_deleted_database_is_refused_not_started_over() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path())
        .unwrap()
        .commit(&[nightly_cursor()])
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("{DB_FILE}{suffix}")));
    }
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Lost { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("backup"), "{message}");
}

#[test]
fn a_garbled_record_names_the_database_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path())
        .unwrap()
        .commit(&[nightly_cursor()])
        .unwrap();
    {
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute("UPDATE schedule_cursors SET cursor = '{not json'", [])
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let err = store.load().unwrap_err().to_string();
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(err.contains("schedule_cursors nightly"), "{err}");
    assert!(err.contains("backup"), "{err}");
}

#[test]
fn a_garbled_file_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path())
        .unwrap()
        .commit(&[nightly_cursor()])
        .unwrap();
    let db = dir.path().join(DB_FILE);
    let _ = std::fs::remove_file(dir.path().join(format!("{DB_FILE}-wal")));
    std::fs::write(&db, vec![0x5a; 8192]).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(message.contains("backup"), "{message}");
}

#[test]
fn retention_gives_disk_back_and_the_backup_is_a_sound_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let def = records::tests::pipeline();
    let runs: Vec<_> = (0..2000)
        .map(|i| {
            let at = chrono::DateTime::from_timestamp(1_767_225_600 + i * 3600, 0).unwrap();
            records::tests::run(def.clone(), &at.to_rfc3339())
        })
        .collect();
    for chunk in runs.chunks(500) {
        let writes: Vec<Write> = chunk
            .iter()
            .map(|r| Write::Archive(Box::new(r.clone())))
            .collect();
        store.commit(&writes).unwrap();
    }
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let pages = |conn: &Connection| -> i64 {
        conn.query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap()
    };
    let full = pages(&conn);
    for chunk in runs.chunks(100) {
        let writes: Vec<Write> = chunk
            .iter()
            .map(|r| Write::DeleteRun(r.id.clone()))
            .collect();
        store.commit(&writes).unwrap();
    }
    let emptied = pages(&conn);
    assert!(
        emptied * 2 < full,
        "deleting every run gave back too little: {full} pages, then {emptied}"
    );

    let copy = dir.path().join("copy.db");
    sqlite::backup(&dir.path().join(DB_FILE), &copy).unwrap();
    assert!(sqlite::integrity_check(&copy).unwrap().is_empty());
    assert!(
        sqlite::backup(&dir.path().join(DB_FILE), &copy).is_err(),
        "a backup never overwrites a file"
    );
}

#[test]
fn the_history_reader_reads_while_the_writer_holds_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let old = records::tests::run(records::tests::pipeline(), "2026-01-01T00:00:00Z");
    store
        .commit(&[Write::Archive(Box::new(old.clone()))])
        .unwrap();
    let writer = Connection::open(dir.path().join(DB_FILE)).unwrap();
    writer
        .execute_batch("BEGIN IMMEDIATE; DELETE FROM run_history;")
        .unwrap();
    assert_eq!(store.history_reader().get(&old.id), Some(old));
    writer.execute_batch("ROLLBACK;").unwrap();
}

#[test]
fn an_empty_full_commit_syncs_only_when_a_deferred_one_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let syncs = || -> Option<String> {
        Connection::open(dir.path().join(DB_FILE))
            .unwrap()
            .query_row("SELECT value FROM meta WHERE key = 'full_syncs'", [], |r| {
                r.get(0)
            })
            .ok()
    };
    store.commit(&[]).unwrap();
    assert_eq!(syncs(), None, "nothing was pending: nothing to write");
    store
        .commit_with(&[nightly_cursor()], Durability::Deferred)
        .unwrap();
    store.commit(&[]).unwrap();
    assert_eq!(
        syncs().as_deref(),
        Some("1"),
        "the pending commit is synced by a write"
    );
    store.commit(&[]).unwrap();
    assert_eq!(
        syncs().as_deref(),
        Some("1"),
        "synced already: nothing more"
    );
}
