//! The operator commands as processes: the real `baton run` daemon (system clock) against the
//! in-process emulator, driven by the real `baton status`, `runs`, `trigger`, `cancel`, `retry`,
//! `pause`, `resume`, `backfill`, `backfills` and `why`. Waits poll the API with a deadline; no
//! assertion depends on how long anything took.

#![allow(clippy::unwrap_used)]

use crate::support::process::{baton_bin, free_port, DaemonProcess};
use crate::support::scenario::{scenario, HANGS_JOB};
use crate::support::{eventually_blocking, slow_tests_enabled};
use baton::clock::{SharedClock, SystemClock};
use baton::emulator::{Emulator, EmulatorHandle, Scenario};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const API_TOKEN: &str = "cli-test-token-8d2e41f0";

fn scenario_yaml() -> String {
    scenario(&[
        "{ id: 101, name: staging, duration: 1s }",
        "{ id: 102, name: marts, duration: 1s }",
        "{ id: 105, name: broken, duration: 1s, outcome: error }",
        HANGS_JOB,
    ])
}

const CHAIN: &str = r#"
name: chain
steps:
  staging: { job_id: 101 }
  marts:
    job_id: 102
    depends_on: [staging]
    overrides: { schema_override: "marts_{{ ds_nodash }}" }
"#;

const BROKEN: &str = r#"
name: broken
steps:
  staging: { job_id: 101 }
  fails: { job_id: 105, depends_on: [staging] }
"#;

const HANGS: &str = r#"
name: hangs
steps:
  long: { job_id: 106 }
"#;

fn write_setup(dir: &Path, emulator: &EmulatorHandle, port: u16) -> PathBuf {
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    std::fs::write(dir.join("pipelines/chain.yaml"), CHAIN).unwrap();
    std::fs::write(dir.join("pipelines/broken.yaml"), BROKEN).unwrap();
    std::fs::write(dir.join("pipelines/hangs.yaml"), HANGS).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "dbt_cloud:\n  base_url: {}\n  account_id: {}\n  token_env: BATON_CLI_TEST_DBT_TOKEN\nstate_dir: state\npoll_interval: 1s\nlog_format: json\nhttp:\n  listen: 127.0.0.1:{port}\n  token_env: BATON_CLI_TEST_API_TOKEN\n",
            emulator.base_url(),
            emulator.account_id().0
        ),
    )
    .unwrap();
    config
}

fn baton(config: &Path, args: &[&str]) -> Output {
    Command::new(baton_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("BATON_CLI_TEST_API_TOKEN", API_TOKEN)
        .env("BATON_CLI_TEST_DBT_TOKEN", "test-token")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(config: &Path, args: &[&str]) -> String {
    let o = baton(config, args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(!stdout(&o).contains(API_TOKEN) && !stderr(&o).contains(API_TOKEN));
    stdout(&o)
}

fn json(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&ok(config, &all)).unwrap()
}

/// Polls `check` until it holds, failing after a generous deadline.
fn wait_for(what: &str, check: impl FnMut() -> bool) {
    let held = eventually_blocking(Duration::from_secs(60), Duration::from_millis(200), check);
    assert!(held, "gave up waiting for {what}");
}

fn start_daemon(dir: &Path, config: &Path) -> DaemonProcess {
    let daemon = DaemonProcess::start(
        config,
        &[
            ("BATON_CLI_TEST_API_TOKEN", API_TOKEN),
            ("BATON_CLI_TEST_DBT_TOKEN", "test-token"),
            ("RUST_LOG", "debug"),
        ],
        &dir.join("daemon.out"),
        &dir.join("daemon.log"),
    );
    wait_for("the daemon to answer", || {
        baton(config, &["status"]).status.code() == Some(0)
    });
    daemon
}

async fn emulator() -> (EmulatorHandle, CancellationToken) {
    let clock: SharedClock = Arc::new(SystemClock);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let handle = Emulator::start(
        Scenario::from_yaml_str(&scenario_yaml()).unwrap(),
        clock,
        listener,
        shutdown.clone(),
    )
    .await
    .unwrap();
    (handle, shutdown)
}

fn latest_state(config: &Path, pipeline: &str) -> String {
    let v = json(config, &["status", pipeline]);
    v["latest_run"]["state"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operator_command_against_a_running_daemon() {
    // About half a minute of real time: the daemon runs on the system clock.
    if !slow_tests_enabled("cli_control_commands::every_operator_command_against_a_running_daemon")
    {
        return;
    }
    let (emulator, emulator_shutdown) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_setup(dir.path(), &emulator, free_port());
    let daemon = start_daemon(dir.path(), &config);

    let table = ok(&config, &["status"]);
    assert!(table.starts_with("PIPELINE"), "{table}");
    assert!(table.contains("chain") && table.contains("idle"), "{table}");

    // trigger, then status and runs match the emulator's record.
    let out = ok(
        &config,
        &["trigger", "chain", "--logical-date", "2026-02-14"],
    );
    assert!(
        out.contains("triggered chain@2026-02-14T00:00:00Z"),
        "{out}"
    );
    wait_for("chain to succeed", || {
        latest_state(&config, "chain") == "succeeded"
    });
    let recorded = emulator.runs();
    let marts = recorded.iter().find(|r| r.job_id.0 == 102).unwrap();
    assert_eq!(
        marts.request.schema_override.as_deref(),
        Some("marts_20260214")
    );
    let detail = ok(&config, &["status", "chain"]);
    assert!(detail.contains(&marts.id.0.to_string()), "{detail}");
    assert!(detail.contains("Success"), "{detail}");
    let runs = ok(&config, &["runs", "chain"]);
    assert!(
        runs.contains("chain@2026-02-14T00:00:00Z") && runs.contains("manual"),
        "{runs}"
    );

    // A failure shows the failed model, its message and the link; retry runs the failed step.
    ok(&config, &["trigger", "broken"]);
    wait_for("broken to fail", || {
        latest_state(&config, "broken") == "failed"
    });
    wait_for("the failure details", || {
        ok(&config, &["status", "broken"]).contains("Database Error")
    });
    let runs = ok(&config, &["runs", "broken"]);
    assert!(
        runs.contains("fails: model.") && runs.contains("http"),
        "{runs}"
    );
    let id = json(&config, &["status", "broken"])["latest_run"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = ok(&config, &["retry", &id]);
    assert!(out.contains("retrying"), "{out}");
    wait_for("the retry to run the failed step", || {
        emulator.runs().iter().filter(|r| r.job_id.0 == 105).count() == 2
    });
    wait_for("the retried run to end", || {
        latest_state(&config, "broken") == "failed"
    });
    assert_eq!(
        emulator.runs().iter().filter(|r| r.job_id.0 == 101).count(),
        2
    );

    // Refusals: exit 1 with a message that says what to do.
    let o = baton(&config, &["retry", "chain@2026-02-14T00:00:00Z"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("only a failed or cancelled"),
        "{}",
        stderr(&o)
    );
    let o = baton(&config, &["trigger", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no pipeline named `nope`"),
        "{}",
        stderr(&o)
    );

    // cancel: the dbt Cloud run is cancelled and confirmed.
    ok(&config, &["trigger", "hangs"]);
    wait_for("hangs to run in dbt Cloud", || {
        emulator.runs().iter().any(|r| r.job_id.0 == 106)
    });
    let id = json(&config, &["status", "hangs"])["latest_run"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("why to see it in dbt Cloud", || {
        let why = json(&config, &["why", "hangs"]);
        why["reason"] == "running" || why["reason"] == "dbt_cloud_queue"
    });
    ok(&config, &["cancel", &id]);
    wait_for("the cancel to be confirmed", || {
        latest_state(&config, "hangs") == "cancelled"
    });
    let hang = emulator
        .runs()
        .into_iter()
        .find(|r| r.job_id.0 == 106)
        .unwrap();
    assert_eq!(hang.status.code(), 30);

    // pause, why, resume.
    let out = ok(&config, &["pause", "chain"]);
    assert!(out.contains("paused chain"), "{out}");
    let why = ok(&config, &["why", "chain"]);
    assert!(
        why.contains("paused") && why.contains("baton resume chain"),
        "{why}"
    );
    ok(&config, &["resume", "chain"]);
    let why = json(&config, &["why", "chain"]);
    assert_eq!(why["reason"], "unscheduled", "{why}");

    // backfill: dry run starts nothing; the real one runs each date once.
    let before = emulator.runs().len();
    let dry = ok(
        &config,
        &[
            "backfill",
            "chain",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-03",
            "--every",
            "1d",
            "--dry-run",
        ],
    );
    assert!(dry.contains("3 of 3 dates would run"), "{dry}");
    for day in ["20260101", "20260102", "20260103"] {
        assert!(dry.contains(&format!("marts_{day}")), "{dry}");
    }
    assert_eq!(emulator.runs().len(), before, "a dry run started something");
    let out = ok(
        &config,
        &[
            "backfill",
            "chain",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-03",
            "--every",
            "1d",
            "--max-active",
            "2",
        ],
    );
    assert!(out.contains("created backfill bf-"), "{out}");
    let id = out.split_whitespace().nth(2).unwrap().to_string();
    wait_for("the backfill to finish", || {
        json(&config, &["backfills", &id])["state"] == "succeeded"
    });
    let list = ok(&config, &["backfills"]);
    assert!(list.contains(&id) && list.contains("succeeded"), "{list}");
    let schemas: Vec<String> = emulator
        .runs()
        .iter()
        .filter(|r| r.job_id.0 == 102)
        .filter_map(|r| r.request.schema_override.clone())
        .collect();
    for day in ["20260101", "20260102", "20260103"] {
        assert_eq!(
            schemas
                .iter()
                .filter(|s| **s == format!("marts_{day}"))
                .count(),
            1
        );
    }

    // A wrong token: exit 4.
    let o = Command::new(baton_bin())
        .args(["status", "--config"])
        .arg(&config)
        .env("BATON_CLI_TEST_API_TOKEN", "not-the-token")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));

    // Stop the daemon; then the CLI says it is not running (exit 3).
    daemon.sigterm(Duration::from_secs(60));
    let o = baton(&config, &["status"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is `baton run --config"),
        "{}",
        stderr(&o)
    );

    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    assert!(log.contains("control API listening"), "{log}");
    assert!(log.contains("operator triggered"), "{log}");
    assert!(
        !log.contains(API_TOKEN),
        "the token leaked into the daemon's log"
    );
    emulator_shutdown.cancel();
}

#[test]
fn a_daemon_on_a_public_address_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::write(
        &config,
        "dbt_cloud:\n  base_url: http://127.0.0.1:9\n  account_id: 1\n  token_env: BATON_CLI_TEST_DBT_TOKEN\nstate_dir: state\nhttp:\n  listen: 0.0.0.0:0\n",
    )
    .unwrap();
    let o = Command::new(baton_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("BATON_CLI_TEST_DBT_TOKEN", "x")
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("refusing to serve the control API on 0.0.0.0"),
        "{}",
        stderr(&o)
    );
}
