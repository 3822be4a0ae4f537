//! `baton store backup` and `baton store check` with the real binary, against the state of a
//! running daemon: the backup is consistent and restores; a damaged database is named with exit 1.

use crate::support::process::{TimeLine, Workspace};
use crate::support::t;
use std::time::Duration;

const PIPELINE: &str =
    "name: hourly\nschedule: { cron: \"0 * * * *\" }\nsteps:\n  s: { job_id: 1 }\n";

fn baton() -> assert_cmd::Command {
    assert_cmd::cargo::cargo_bin_cmd!("baton")
}

#[test]
fn a_backup_taken_while_the_daemon_runs_checks_ok_and_restores() {
    let ws = Workspace::for_account("http://127.0.0.1:9", 1, "unused-token", "");
    ws.write_pipeline("hourly.yaml", PIPELINE);
    ws.seed_cursor("hourly", t("2026-01-01T00:00:00Z"));
    let time = TimeLine::starting_now(t("2026-01-01T00:10:00Z"), 1.0);
    let daemon = ws.start_daemon(&time);
    assert!(ws.wait_for_log("baton started", Duration::from_secs(20)));

    let backup = ws.dir.path().join("backup.db");
    let config = ws.config.to_str().unwrap();
    let out = baton()
        .args([
            "store",
            "backup",
            backup.to_str().unwrap(),
            "--config",
            config,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("backed up"));
    let out = baton()
        .args(["store", "check", "--config", config])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
    let again = baton()
        .args([
            "store",
            "backup",
            backup.to_str().unwrap(),
            "--config",
            config,
        ])
        .output()
        .unwrap();
    assert!(!again.status.success(), "a backup never overwrites a file");
    let (status, _) = daemon.sigterm(Duration::from_secs(20));
    assert!(status.success(), "{status}");

    // Restore as docs/operations.md says: the backup in place of baton.db, its journal gone.
    for file in ["baton.db", "baton.db-wal", "baton.db-shm"] {
        let _ = std::fs::remove_file(ws.state_dir.join(file));
    }
    std::fs::copy(&backup, ws.state_dir.join("baton.db")).unwrap();
    let state = ws.load_state();
    assert_eq!(
        state.cursors[&baton::model::pipeline::PipelineName("hourly".into())].last_tick,
        Some(t("2026-01-01T00:00:00Z"))
    );
}

#[test]
fn a_damaged_database_fails_the_check_with_exit_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    drop(baton::store::Store::open(dir.path()).unwrap());
    let db = dir.path().join("baton.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("baton.db{suffix}")));
    }
    let mut bytes = std::fs::read(&db).unwrap();
    // Keep SQLite's header (so it is still "a database"), garble the pages behind it.
    for b in bytes.iter_mut().skip(100) {
        *b = 0xa5;
    }
    std::fs::write(&db, bytes).unwrap();
    let out = baton()
        .args([
            "store",
            "check",
            "--state-dir",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&db.display().to_string()), "{said}");
}
