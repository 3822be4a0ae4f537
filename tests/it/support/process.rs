//! Test harness that runs the real binaries as child processes: `baton emulator` on a port it picks,
//! `baton run` on a temporary workspace (config, pipeline files, state directory, log file), both on
//! one anchored fast time line so that a restarted daemon sees the emulator's time.

#![allow(dead_code, clippy::unwrap_used, clippy::print_stderr)]

use super::eventually_blocking;
use baton::clock::{Clock, ScaledClock};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Deserialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

pub fn baton_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("baton")
}

/// How often a wait on a log file or a process exit looks again.
const LOG_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// A port of 127.0.0.1 free a moment ago, for a config file that must name one.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The fast time line both processes share: `start` at the real instant `epoch`, `speed` times
/// faster from there.
#[derive(Debug, Clone, Copy)]
pub struct TimeLine {
    pub epoch: DateTime<Utc>,
    pub start: DateTime<Utc>,
    pub speed: f64,
}

impl TimeLine {
    /// A time line reading `start` now.
    pub fn starting_now(start: DateTime<Utc>, speed: f64) -> Self {
        Self {
            epoch: baton::clock::SystemClock.now(),
            start,
            speed,
        }
    }

    pub fn clock(&self) -> ScaledClock {
        ScaledClock::anchored(self.epoch, self.start, self.speed)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock().now()
    }

    pub fn args(&self) -> Vec<String> {
        vec![
            "--clock-epoch".into(),
            self.epoch.to_rfc3339_opts(SecondsFormat::Micros, true),
            "--clock-start".into(),
            self.start.to_rfc3339_opts(SecondsFormat::Micros, true),
            "--clock-speed".into(),
            self.speed.to_string(),
        ]
    }

    /// Real time until the time line reads `at` (zero when it already has).
    pub fn real_until(&self, at: DateTime<Utc>) -> std::time::Duration {
        let virtual_wait = (at - self.now()).to_std().unwrap_or_default();
        virtual_wait.div_f64(self.speed)
    }

    /// Sleeps (really) until the time line reads `at`.
    pub fn sleep_until(&self, at: DateTime<Utc>) {
        std::thread::sleep(self.real_until(at));
    }
}

/// Kills the child when dropped, so a failing test leaves no process behind.
#[derive(Debug)]
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `baton emulator` as a process.
#[derive(Debug)]
pub struct EmulatorProcess {
    child: Reaped,
    pub base_url: String,
    pub token: String,
    pub account_id: i64,
    http: reqwest::Client,
}

/// One run as `GET /_emulator/runs` reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct EmulatedRun {
    pub id: i64,
    pub job_id: i64,
    pub cause: String,
    pub status: i64,
    pub via_rerun: bool,
    pub resumed_from: Option<i64>,
    pub answered_status: u16,
    /// On the shared time line.
    pub created_at: DateTime<Utc>,
}

/// One row of `GET /_emulator/requests`.
#[derive(Debug, Clone, Deserialize)]
pub struct RequestCount {
    pub route: String,
    pub status: u16,
    pub count: u64,
}

impl EmulatedRun {
    /// The attempt key (`bt-` and 16 hex digits) inside the cause, when baton sent one.
    pub fn key(&self) -> Option<String> {
        let start = self.cause.find("[bt-")? + 1;
        let end = start + self.cause[start..].find(']')?;
        Some(self.cause[start..end].to_string())
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.status, 10 | 20 | 30)
    }
}

impl EmulatorProcess {
    /// Starts the emulator on a free port of 127.0.0.1 and waits until it listens.
    pub fn start(scenario: &Path, time: &TimeLine, log: &Path) -> Self {
        let log_file = std::fs::File::create(log).unwrap();
        let child = Command::new(baton_bin())
            .args(["emulator", "--listen", "127.0.0.1:0", "--scenario"])
            .arg(scenario)
            .args(time.args())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut child = Reaped(child);
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        let mut next = || lines.next().unwrap().unwrap();
        let first = next();
        let base_url = first.rsplit(' ').next().unwrap().to_string();
        assert!(base_url.starts_with("http://127.0.0.1:"), "{first}");
        let account_id = next()
            .strip_prefix("account id: ")
            .unwrap()
            .parse()
            .unwrap();
        let token = next().strip_prefix("token: ").unwrap().to_string();
        Self {
            child,
            base_url,
            token,
            account_id,
            http: reqwest::Client::new(),
        }
    }

    /// Every run the emulator ever created, from its own record.
    pub async fn runs(&self) -> Vec<EmulatedRun> {
        let body: serde_json::Value = self
            .http
            .get(format!("{}/_emulator/runs", self.base_url))
            .header("Authorization", format!("Token {}", self.token))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        serde_json::from_value(body["data"].clone()).unwrap()
    }

    /// `GET /_emulator/requests`: how many requests each (route, status) had.
    pub async fn request_counts(&self) -> Vec<RequestCount> {
        let body = self.control_get("requests").await;
        serde_json::from_value(body["data"].clone()).unwrap()
    }

    /// `GET /_emulator/faults`: the faults in force, with the tally of those injected.
    pub async fn faults(&self) -> baton::emulator::Faults {
        let body = self.control_get("faults").await;
        serde_json::from_value(body["data"].clone()).unwrap()
    }

    async fn control_get(&self, what: &str) -> serde_json::Value {
        self.http
            .get(format!("{}/_emulator/{what}", self.base_url))
            .header("Authorization", format!("Token {}", self.token))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn set_faults(&self, faults: serde_json::Value) {
        let answer = self
            .http
            .put(format!("{}/_emulator/faults", self.base_url))
            .header("Authorization", format!("Token {}", self.token))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{:?}", answer.text().await);
    }
}

/// A daemon's files: config, pipelines directory, state directory and log, in a temporary dir.
#[derive(Debug)]
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub pipelines_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
}

impl Workspace {
    /// Writes a daemon config for the emulator's account; `extra` is appended YAML (top-level
    /// keys such as `poll_interval: 5s`).
    pub fn new(emulator: &EmulatorProcess, extra: &str) -> Self {
        Self::for_account(
            &emulator.base_url,
            emulator.account_id,
            &emulator.token,
            extra,
        )
    }

    /// As `new`, for an account that may not exist (tests that never reach dbt Cloud).
    pub fn for_account(base_url: &str, account_id: i64, token: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let pipelines_dir = root.join("pipelines");
        std::fs::create_dir_all(&pipelines_dir).unwrap();
        std::fs::write(root.join("token"), token).unwrap();
        let config = root.join("baton.yaml");
        std::fs::write(
            &config,
            format!(
                "dbt_cloud:\n  base_url: {base}\n  account_id: {account}\n  token_file: token\n  \
                 requests_per_minute: 1000000\n  request_timeout: 10s\n  connect_timeout: 2s\n\
                 state_dir: state\npipelines_dir: pipelines\nhttp:\n  listen: 127.0.0.1:0\n\
                 log_format: json\n{extra}\n",
                base = base_url,
                account = account_id,
            ),
        )
        .unwrap();
        Self {
            state_dir: root.join("state"),
            log: root.join("baton.log"),
            config,
            pipelines_dir,
            dir,
        }
    }

    pub fn write_pipeline(&self, file: &str, yaml: &str) {
        std::fs::write(self.pipelines_dir.join(file), yaml).unwrap();
    }

    pub fn remove_pipeline(&self, file: &str) {
        std::fs::remove_file(self.pipelines_dir.join(file)).unwrap();
    }

    /// Starts `baton run` on this workspace; its stderr is appended to the log file.
    pub fn start_daemon(&self, time: &TimeLine) -> DaemonProcess {
        self.start_daemon_with_env(time, &[])
    }

    /// As `start_daemon`, with more environment variables.
    pub fn start_daemon_with_env(
        &self,
        time: &TimeLine,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> DaemonProcess {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(baton_bin())
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(time.args())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        DaemonProcess { child: Some(child) }
    }

    /// Waits until the log holds `needle` (from any daemon started on this workspace).
    pub fn wait_for_log(&self, needle: &str, limit: std::time::Duration) -> bool {
        eventually_blocking(limit, LOG_POLL, || self.log_text().contains(needle))
    }

    /// Waits (bounded) until the daemon whose lines begin at byte `from` has installed its signal
    /// handlers: before that a SIGTERM kills it with the default disposition, as any process.
    pub fn wait_for_signal_handlers(&self, from: u64) {
        // `baton run` installs its handlers first, then reads the clock flags, which logs this.
        let installed = self.wait_for_log_after(
            from,
            "running on a scaled test clock",
            std::time::Duration::from_secs(60),
        );
        assert!(installed, "the daemon did not start within a minute");
    }

    /// The log's length in bytes: where the next daemon's lines will begin.
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// Waits until the log holds `needle` past byte `from` (reading only that part, so a long
    /// log costs nothing); false after `limit`.
    pub fn wait_for_log_after(&self, from: u64, needle: &str, limit: std::time::Duration) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        eventually_blocking(limit, LOG_POLL, || {
            let mut text = String::new();
            if let Ok(mut file) = std::fs::File::open(&self.log) {
                if file.seek(SeekFrom::Start(from)).is_ok() {
                    let _ = file.read_to_string(&mut text);
                }
            }
            text.contains(needle)
        })
    }

    /// How many times the log holds `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines (JSON) whose `event` field is `event`.
    pub fn count_events(&self, event: &str) -> usize {
        let needle = format!("\"event\":\"{event}\"");
        self.log_text()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// Records in the state directory (before any daemon runs) that `pipeline`'s schedule was
    /// last looked at `at`: ticks after it are owed, whenever the daemon starts.
    pub fn seed_cursor(&self, pipeline: &str, at: DateTime<Utc>) {
        self.write_cursor(pipeline, at, false);
    }

    /// Records `pipeline`'s schedule cursor (only while no daemon runs); a paused one ticks no more.
    pub fn write_cursor(&self, pipeline: &str, last_tick: DateTime<Utc>, paused: bool) {
        use baton::engine::state::{ScheduleCursor, Write};
        let store = baton::store::Store::open(&self.state_dir).unwrap();
        store
            .commit(&[Write::Cursor(
                baton::model::pipeline::PipelineName(pipeline.into()),
                ScheduleCursor {
                    last_tick: Some(last_tick),
                    paused,
                },
            )])
            .unwrap();
    }

    /// The daemon's state, read from its state directory (only while no daemon runs).
    pub fn load_state(&self) -> baton::engine::state::State {
        let store = baton::store::Store::open(&self.state_dir).unwrap();
        store.load_everything().unwrap()
    }
}

/// `baton run` as a process.
#[derive(Debug)]
pub struct DaemonProcess {
    child: Option<Child>,
}

impl DaemonProcess {
    /// Starts `baton run --config CONFIG` on the system clock, with `env`, its stdout and stderr
    /// into `out` and `log`.
    pub fn start(config: &Path, env: &[(&str, &str)], out: &Path, log: &Path) -> Self {
        let child = Command::new(baton_bin())
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(std::fs::File::create(log).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        DaemonProcess { child: Some(child) }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: no handler runs, nothing is flushed that was not already.
    pub fn sigkill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn signal(&self, name: &str) {
        // The shell's builtin `kill`: no signal crate, and no reliance on a `kill` binary.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{name} {}", self.pid()))
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Whether the process has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    /// Waits up to `limit` (real time) for the process to exit; `None` when it did not.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> Option<ExitStatus> {
        let mut status = None;
        eventually_blocking(limit, LOG_POLL, || {
            status = self.try_exit();
            status.is_some()
        });
        status
    }

    /// SIGTERM, then waits for the exit; returns the status and how long it took.
    pub fn sigterm(mut self, limit: std::time::Duration) -> (ExitStatus, std::time::Duration) {
        let began = std::time::Instant::now();
        self.signal("TERM");
        let status = self
            .wait_exit(limit)
            .unwrap_or_else(|| panic!("the daemon did not exit within {limit:?} of SIGTERM"));
        (status, began.elapsed())
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn minutes(n: i64) -> Duration {
    Duration::minutes(n)
}
