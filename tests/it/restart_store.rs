//! The state directory under misuse, with the real binary: a second daemon on a directory in use
//! exits non-zero naming it; a deleted database, or a garbled record, stops
//! the daemon with a message naming the directory and what to do, instead of starting over.

#![allow(clippy::unwrap_used)]

use crate::support::process::{TimeLine, Workspace};
use std::time::Duration;

const PIPELINE: &str =
    "name: hourly\nschedule: { cron: \"0 * * * *\" }\nsteps:\n  s: { job_id: 1 }\n";

/// A workspace whose dbt Cloud is never reached (nothing is due within the tests).
fn workspace() -> Workspace {
    let ws = Workspace::for_account("http://127.0.0.1:9", 1, "unused-token", "");
    ws.write_pipeline("hourly.yaml", PIPELINE);
    ws
}

fn time() -> TimeLine {
    TimeLine::starting_now(crate::support::t("2026-01-01T00:10:00Z"), 1.0)
}

/// Runs a daemon until it has written its state, then stops it cleanly.
fn run_once(ws: &Workspace, time: &TimeLine) {
    let daemon = ws.start_daemon(time);
    assert!(ws.wait_for_log("baton started", Duration::from_secs(20)));
    let (status, _) = daemon.sigterm(Duration::from_secs(20));
    assert!(status.success(), "{status}");
}

/// Starts a daemon that must refuse to start; returns what it logged.
fn refused(ws: &Workspace, time: &TimeLine) -> String {
    let before = ws.log_text().len();
    let mut daemon = ws.start_daemon(time);
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .expect("the daemon should have exited");
    assert!(!status.success(), "{status}");
    ws.log_text()[before..].to_string()
}

#[test]
fn a_second_daemon_on_the_same_state_directory_exits_non_zero_naming_it() {
    let ws = workspace();
    let time = time();
    let mut first = ws.start_daemon(&time);
    assert!(ws.wait_for_log("baton started", Duration::from_secs(20)));
    let said = refused(&ws, &time);
    let dir = ws.state_dir.display().to_string();
    assert!(said.contains(&dir), "{said}");
    assert!(said.contains("in use by another baton process"), "{said}");
    assert!(
        first.try_exit().is_none(),
        "the first daemon must keep running"
    );
    let (status, _) = first.sigterm(Duration::from_secs(20));
    assert!(status.success());
}

#[test]
fn a_deleted_database_stops_the_daemon_with_a_clear_message() {
    let ws = workspace();
    let time = time();
    run_once(&ws, &time);
    for file in ["baton.db", "baton.db-wal", "baton.db-shm"] {
        let _ = std::fs::remove_file(ws.state_dir.join(file));
    }
    let said = refused(&ws, &time);
    assert!(said.contains(&ws.state_dir.display().to_string()), "{said}");
    assert!(said.contains("lost its database"), "{said}");
    assert!(said.contains("backup"), "{said}");
}

#[test]
fn a_garbled_record_stops_the_daemon_with_a_clear_message() {
    let ws = workspace();
    let time = time();
    run_once(&ws, &time);
    {
        let db = rusqlite::Connection::open(ws.state_dir.join("baton.db")).unwrap();
        db.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        db.execute(
            "INSERT INTO pipeline_runs (id, pipeline, logical_date, state, definition, record) \
             VALUES ('hourly@2026-01-01T00:00:00Z', 'hourly', '2026-01-01T00:00:00.000Z', \
             'running', 'unknown', '{not json')",
            [],
        )
        .unwrap();
    }
    let said = refused(&ws, &time);
    assert!(said.contains(&ws.state_dir.display().to_string()), "{said}");
    assert!(said.contains("unreadable record"), "{said}");
    assert!(said.contains("backup"), "{said}");
}
