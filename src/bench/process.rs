//! The processes a benchmark runs: this same executable as `baton emulator` and as `baton run`, on
//! 127.0.0.1 with OS-picked ports, on one anchored time line; a scratch directory per scenario; a
//! small HTTP client for the emulator's and the daemon's endpoints.

use crate::clock::{Clock, ScaledClock, SystemClock};
use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The time line both processes share: `start` at the real instant `epoch`, `speed` times faster.
#[derive(Debug, Clone, Copy)]
pub struct TimeLine {
    pub epoch: DateTime<Utc>,
    pub start: DateTime<Utc>,
    pub speed: f64,
}

impl TimeLine {
    pub fn starting_now(start: DateTime<Utc>, speed: f64) -> Self {
        Self {
            epoch: SystemClock.now(),
            start,
            speed,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        ScaledClock::anchored(self.epoch, self.start, self.speed).now()
    }

    fn args(&self) -> Vec<String> {
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
    pub fn real_until(&self, at: DateTime<Utc>) -> Duration {
        (at - self.now())
            .to_std()
            .unwrap_or_default()
            .div_f64(self.speed)
    }
}

/// A scratch directory under the system's temporary directory, removed on drop unless kept.
#[derive(Debug)]
pub struct Scratch {
    pub path: PathBuf,
    keep: bool,
}

impl Scratch {
    pub fn new(label: &str, keep: bool) -> anyhow::Result<Self> {
        let stamp = SystemClock.now().format("%Y%m%d-%H%M%S%.3f");
        let path = std::env::temp_dir().join(format!(
            "baton-bench-{label}-{}-{stamp}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path, keep })
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Reaped(Option<Child>);

impl Reaped {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL and reap: nothing runs in the process after this.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        self.kill();
    }
}

fn this_executable() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find this executable to run its subcommands")
}

/// `baton emulator` as a process.
#[derive(Debug)]
pub struct EmulatorProcess {
    pub child: Reaped,
    pub base_url: String,
    pub account_id: i64,
    pub token: String,
}

impl EmulatorProcess {
    /// Starts the emulator on an OS-picked port and reads its address, account and token.
    pub fn start(scenario: &Path, time: &TimeLine, log: &Path) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log)?;
        let mut child = Command::new(this_executable()?)
            .args(["emulator", "--listen", "127.0.0.1:0", "--scenario"])
            .arg(scenario)
            .args(time.args())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("cannot start `baton emulator`")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut child = Reaped(Some(child));
        let mut lines = BufReader::new(stdout).lines();
        let mut next = || -> anyhow::Result<String> {
            match lines.next() {
                Some(line) => Ok(line?),
                None => bail!(
                    "the emulator exited before it listened; its log: {}",
                    log.display()
                ),
            }
        };
        let base_url = next()?.rsplit(' ').next().unwrap_or_default().to_string();
        let account_id = next()?
            .strip_prefix("account id: ")
            .and_then(|s| s.parse().ok())
            .context("the emulator did not print its account id")?;
        let token = next()?
            .strip_prefix("token: ")
            .context("the emulator did not print its token")?
            .to_string();
        if !base_url.starts_with("http://127.0.0.1:") {
            child.kill();
            bail!("the emulator printed an unexpected address {base_url:?}");
        }
        Ok(Self {
            child,
            base_url,
            account_id,
            token,
        })
    }
}

/// A daemon's files: config, pipelines, state directory and log.
#[derive(Debug)]
pub struct Workspace {
    pub root: PathBuf,
    pub config: PathBuf,
    pub pipelines_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
}

impl Workspace {
    /// Writes a daemon config for the emulator's account under `root`, the control API on
    /// 127.0.0.1:`port` (0: OS-picked); `extra` is appended YAML.
    pub fn new(
        root: &Path,
        emulator: &EmulatorProcess,
        port: u16,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let pipelines_dir = root.join("pipelines");
        std::fs::create_dir_all(&pipelines_dir)?;
        std::fs::write(root.join("token"), &emulator.token)?;
        let config = root.join("baton.yaml");
        std::fs::write(
            &config,
            format!(
                "dbt_cloud:\n  base_url: {base}\n  account_id: {account}\n  token_file: token\n  \
                 requests_per_minute: 1000000\n  request_timeout: 30s\n  connect_timeout: 5s\n\
                 state_dir: state\npipelines_dir: pipelines\nlog_format: json\n\
                 http:\n  listen: 127.0.0.1:{port}\n{extra}\n",
                base = emulator.base_url,
                account = emulator.account_id,
            ),
        )?;
        Ok(Self {
            root: root.to_path_buf(),
            state_dir: root.join("state"),
            log: root.join("baton.log"),
            config,
            pipelines_dir,
        })
    }

    /// Starts `baton run`; its log (JSON lines, `info`) is appended to `log`.
    pub fn start_daemon(&self, time: &TimeLine) -> anyhow::Result<Reaped> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        // `BATON_BENCH_DAEMON_WRAPPER="heaptrack -o /tmp/load"` runs the daemon under a profiler
        // (the CPU and RSS figures are then the profiler's, not the daemon's).
        let wrapper = std::env::var("BATON_BENCH_DAEMON_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(this_executable()?);
                c
            }
            None => Command::new(this_executable()?),
        };
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(time.args())
            .env("RUST_LOG", "warn,baton::cli::daemon=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start `baton run`")?;
        Ok(Reaped(Some(child)))
    }

    /// The control API's address from the log's newest "control API listening" line, waiting up
    /// to `limit` for it to appear after `skip` bytes of log.
    pub async fn api_address(
        &self,
        daemon: &mut Reaped,
        skip: usize,
        limit: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let fresh = text.get(skip..).unwrap_or_default();
            if let Some(addr) = fresh
                .lines()
                .rev()
                .filter(|l| l.contains("control API listening"))
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find_map(|v| v["listen"].as_str().map(str::to_string))
            {
                return Ok(format!("http://{addr}"));
            }
            if !daemon.alive() {
                bail!(
                    "the daemon exited during start-up; its log ({}) ends:\n{}",
                    self.log.display(),
                    tail(&text, 15)
                );
            }
            if Instant::now() >= deadline {
                bail!("the daemon did not listen within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn log_len(&self) -> usize {
        std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize)
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One run as `GET /_emulator/runs` reports it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct EmulatedRun {
    pub job_id: i64,
    pub status: i64,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl EmulatedRun {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status, 10 | 20 | 30)
    }
}

/// Talks to the emulator's control endpoints and to the daemon's HTTP server.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
}

/// Routes of `/_emulator/requests` that are not dbt Cloud API calls.
const NOT_API: [&str; 2] = ["control", "not_found"];

impl Http {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .no_proxy()
                .build()?,
        })
    }

    async fn emulator_get(
        &self,
        emulator: &EmulatorProcess,
        path: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let answer = self
            .client
            .get(format!("{}{path}", emulator.base_url))
            .header("Authorization", format!("Token {}", emulator.token))
            .send()
            .await?
            .error_for_status()?;
        Ok(answer.json().await?)
    }

    /// Every run the emulator created, with its status now.
    pub async fn runs(&self, emulator: &EmulatorProcess) -> anyhow::Result<Vec<EmulatedRun>> {
        let body = self.emulator_get(emulator, "/_emulator/runs").await?;
        Ok(serde_json::from_value(body["data"].clone())?)
    }

    /// Requests answered so far by route (every status), API routes only.
    pub async fn api_requests(
        &self,
        emulator: &EmulatorProcess,
    ) -> anyhow::Result<BTreeMap<String, u64>> {
        let body = self.emulator_get(emulator, "/_emulator/requests").await?;
        let mut counts = BTreeMap::new();
        collect_counts(&body["data"], &mut counts);
        counts.retain(|route, _| !NOT_API.contains(&route.as_str()));
        Ok(counts)
    }

    /// The HTTP status of `GET url`, or none when nothing answered.
    pub async fn status_of(&self, url: &str) -> Option<u16> {
        self.client
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    pub async fn text(&self, url: &str) -> anyhow::Result<String> {
        Ok(self
            .client
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }
}

/// Reads `/_emulator/requests` in whichever shape it has: a list of `{route, status, count}`
/// objects or a map of route to count (or to a map of status to count).
fn collect_counts(value: &serde_json::Value, into: &mut BTreeMap<String, u64>) {
    match value {
        serde_json::Value::Array(items) => {
            for item in items {
                if let (Some(route), Some(count)) = (item["route"].as_str(), item["count"].as_u64())
                {
                    *into.entry(route.to_string()).or_default() += count;
                }
            }
        }
        serde_json::Value::Object(map) => {
            for (route, v) in map {
                let n = match v {
                    serde_json::Value::Object(by_status) => {
                        by_status.values().filter_map(|c| c.as_u64()).sum()
                    }
                    other => other.as_u64().unwrap_or(0),
                };
                *into.entry(route.clone()).or_default() += n;
            }
        }
        _ => {}
    }
}

/// Sum of the values of `/metrics` samples of `family` whose label set contains `label`.
pub fn metric_sum(text: &str, family: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']) && l.contains(label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A free port on 127.0.0.1, for the one daemon whose address the emulator must know before the
/// daemon starts (its webhook URL). The port is released before use: a tiny race, fine here.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A real-time limit for a wait loop.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(limit: Duration) -> Self {
        Self(Instant::now() + limit)
    }

    pub fn passed(self) -> bool {
        Instant::now() >= self.0
    }
}
