//! systemd integration: the unit file passes `systemd-analyze verify`, sd_notify messages reach a
//! test NOTIFY_SOCKET, and the watchdog pings only while the scheduler loop answers.

#![allow(clippy::unwrap_used)]

use crate::support::daemon;
use baton::ops::systemd::{watchdog, watchdog_for, SdNotifier};
use baton::runtime::{LoopStopped, Progress};
use chrono::{DateTime, Utc};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tokio::net::UnixDatagram;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/baton.service"),
    )
    .unwrap();
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "StateDirectory=baton",
        "DynamicUser=yes",
        "LoadCredential=dbt-cloud-token:",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed:?}");
    }
    let Ok(found) = Command::new("systemd-analyze").arg("--version").output() else {
        println!("SKIPPED: systemd-analyze is not installed (apt-get install systemd); the unit file was not verified");
        return;
    };
    assert!(found.status.success());
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/baton", env!("CARGO_BIN_EXE_baton")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys and bad values are only warnings: any line about our unit fails the test.
    let about_us: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("baton.service"))
        .collect();
    assert!(
        out.status.success() && about_us.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

fn socket() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    (dir, path, sock)
}

async fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf))
        .await
        .expect("a notification within 10 s")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn ready_stopping_and_reloading_reach_the_socket() {
    let (_dir, path, sock) = socket();
    let notifier = SdNotifier::at(&path);
    notifier.ready().unwrap();
    let ready = next(&sock).await;
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    notifier.reloading().unwrap();
    let reloading = next(&sock).await;
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    notifier.ready().unwrap();
    assert!(next(&sock).await.contains("READY=1"));
    notifier
        .ready_listening("127.0.0.1:8377".parse().unwrap())
        .unwrap();
    let listening = next(&sock).await;
    assert!(listening.lines().any(|l| l == "READY=1"), "{listening}");
    assert!(listening.contains("STATUS=scheduling; API on http://127.0.0.1:8377\n"));
    notifier.stopping().unwrap();
    assert!(next(&sock).await.lines().any(|l| l == "STOPPING=1"));
    // Without a socket nothing is sent and nothing fails.
    SdNotifier::disabled().ready().unwrap();
}

fn progress(iterations: u64) -> Progress {
    Progress {
        planned_at: DateTime::<Utc>::MIN_UTC,
        wake_at: None,
        outstanding: 0,
        iterations,
    }
}

/// Counts pings for `span` of (paused, virtual) time.
async fn pings_during(sock: &UnixDatagram, span: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + span;
    let mut pings = 0;
    let mut buf = [0u8; 512];
    while let Ok(got) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
        let n = got.unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
        pings += 1;
    }
    pings
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_stops_pinging_when_the_loop_is_stuck() {
    let (_dir, path, sock) = socket();
    let (progress_tx, progress_rx) = watch::channel(progress(1));
    let stuck = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probe = {
        let stuck = stuck.clone();
        move || {
            let stuck = stuck.load(std::sync::atomic::Ordering::SeqCst);
            async move {
                if stuck {
                    // A stuck loop never answers an inspect.
                    std::future::pending::<()>().await;
                }
                Ok::<(), LoopStopped>(())
            }
        }
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(watchdog(
        SdNotifier::at(&path),
        Duration::from_secs(10),
        progress_rx,
        probe,
        shutdown.clone(),
    ));
    // Stuck: neither progress nor an answer, so no pings over three intervals.
    assert_eq!(pings_during(&sock, Duration::from_secs(30)).await, 0);
    // The loop turns again: its iterations advance, and pings resume.
    progress_tx.send_replace(progress(2));
    assert!(pings_during(&sock, Duration::from_secs(6)).await >= 1);
    // Idle but answering: pinged every half interval.
    stuck.store(false, std::sync::atomic::Ordering::SeqCst);
    let pings = pings_during(&sock, Duration::from_secs(30)).await;
    assert!(
        (5..=7).contains(&pings),
        "{pings} pings in 30 s at a 5 s period"
    );
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn the_watchdog_pings_for_a_live_daemon() {
    let h = daemon::Harness::start(
        "2026-01-05T00:00:00Z",
        "account_id: 1\ntoken: t\njobs:\n  - {id: 100, name: a}\n",
        vec![],
    )
    .await;
    let (_dir, path, sock) = socket();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(watchdog_for(
        SdNotifier::at(&path),
        Duration::from_millis(200),
        h.daemon.clone(),
        shutdown.clone(),
    ));
    for _ in 0..3 {
        assert_eq!(next(&sock).await, "WATCHDOG=1\n");
    }
    shutdown.cancel();
    task.await.unwrap();
    h.shutdown().await;
}

/// The real binary under a test NOTIFY_SOCKET: READY only once the API accepts connections,
/// RELOADING then READY on SIGHUP, STOPPING on SIGTERM. Needs `serve()` to make the `SdNotifier`
/// calls (see the ops wiring notes); run with `cargo test --test ops_systemd -- --ignored`.
#[tokio::test]
async fn the_daemon_is_ready_only_once_its_api_listens() {
    let emulator_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator_url = format!("http://{}", emulator_listener.local_addr().unwrap());
    let clock: baton::clock::SharedClock = std::sync::Arc::new(baton::clock::SystemClock);
    let scenario = baton::emulator::Scenario::from_yaml_str(
        "account_id: 1\ntoken: notify-test-token\njobs:\n  - {id: 100, name: a}\n",
    )
    .unwrap();
    let stop_emulator = CancellationToken::new();
    let _emulator =
        baton::emulator::Emulator::start(scenario, clock, emulator_listener, stop_emulator.clone())
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("pipelines")).unwrap();
    std::fs::write(
        dir.path().join("pipelines/manual.yaml"),
        "name: manual\nsteps:\n  a: { job_id: 100 }\n",
    )
    .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "dbt_cloud:\n  base_url: {emulator_url}\n  account_id: 1\n  token_env: BATON_NOTIFY_TEST_TOKEN\nstate_dir: state\nhttp:\n  listen: 127.0.0.1:0\n"
        ),
    )
    .unwrap();
    let (_sock_dir, path, sock) = socket();
    let mut child = KillOnDrop(Some(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["run", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &path)
            .env("BATON_NOTIFY_TEST_TOKEN", "notify-test-token")
            .spawn()
            .unwrap(),
    ));
    let pid = child.0.as_ref().unwrap().id().to_string();

    let ready = next(&sock).await;
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    let api = ready
        .split("API on http://")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("READY names the API address: {ready}"));
    // At READY the API already accepts connections.
    tokio::net::TcpStream::connect(api).await.unwrap();

    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(next(&sock).await.lines().any(|l| l == "RELOADING=1"));
    assert!(next(&sock).await.lines().any(|l| l == "READY=1"));

    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    loop {
        let message = next(&sock).await;
        if message.lines().any(|l| l == "STOPPING=1") {
            break;
        }
        // Watchdog pings may come in between when WATCHDOG_USEC is set; nothing else may.
        assert_eq!(message, "WATCHDOG=1\n");
    }
    let mut process = child.0.take().unwrap();
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || process.wait()),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert!(status.success(), "{status}");
    stop_emulator.cancel();
}

/// Kills the daemon if the test fails before it stops it.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
