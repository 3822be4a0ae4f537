//! dbt Cloud API requests per finished attempt: N one-step pipelines on N distinct jobs (dbt Cloud
//! runs one run per job at a time), all due at the same tick, `max_in_flight` = N; every API
//! request the emulator answered (control endpoints excluded) divided by the runs that finished.
//! Jobs run 1 to 3 minutes of scenario time with the default 10 s poll interval, on a time line
//! 30 times faster than real time (120 with `--quick`).

use super::generate::{self, job_id};
use super::output::{Report, Target};
use super::process::{Deadline, Http, Scratch, TimeLine};
use super::{start_pair, Options};
use anyhow::bail;
use std::time::Duration;

/// Scenario seconds per real second (four times more with `--quick`).
const SPEED: f64 = 30.0;
/// Real time the daemon has to start before the tick.
const LEAD_SECONDS: f64 = 2.0;

pub async fn run(options: Options, report: &mut Report) -> anyhow::Result<()> {
    let sizes: [(&str, usize); 3] = if options.quick {
        [("small", 10), ("medium", 100), ("large", 200)]
    } else {
        [("small", 10), ("medium", 100), ("large", 1000)]
    };
    for (tier, n) in sizes {
        let (requests, finished) = measure(options, n).await?;
        let per_attempt = requests as f64 / finished.max(1) as f64;
        report.info(
            "requests",
            &format!("api_concurrent_runs_{tier}"),
            &format!("concurrent runs ({tier})"),
            n as f64,
            "",
        );
        let key = format!("api_requests_per_attempt_{tier}");
        let label = format!("API requests per finished attempt at {n}");
        if tier == "medium" {
            report.measured(
                "requests",
                &key,
                &label,
                per_attempt,
                "",
                Target::AtMost(1.5),
            );
        } else {
            report.info("requests", &key, &label, per_attempt, "");
        }
    }
    Ok(())
}

/// Returns (API requests, finished runs) for one concurrency level.
async fn measure(options: Options, n: usize) -> anyhow::Result<(u64, usize)> {
    let scratch = Scratch::new(&format!("requests-{n}"), options.keep)?;
    let tick = chrono::DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z")?.to_utc();
    let speed = if options.quick { SPEED * 4.0 } else { SPEED };
    let lead = chrono::Duration::milliseconds((LEAD_SECONDS * speed * 1000.0) as i64);
    let time = TimeLine::starting_now(tick - lead, speed);
    let jobs = (0..n).map(|p| (job_id(p, 0), "{ min: 1m, max: 3m }".to_string()));
    let scenario = generate::scenario(jobs, "1s", None);
    let extra = format!("poll_interval: 10s\nmax_in_flight: {n}\n");
    let pair = start_pair(&scratch, &scenario, &time, 0, &extra, |dir| {
        generate::write_chains(dir, n, 1, |_| "0 * * * *".into())
    })
    .await?;
    let http = Http::new()?;
    let deadline = Deadline::after(Duration::from_secs(120));
    let finished = loop {
        let runs = http.runs(&pair.emulator).await.unwrap_or_default();
        let finished = runs.iter().filter(|r| r.is_terminal()).count();
        if finished >= n {
            break finished;
        }
        if deadline.passed() {
            bail!(
                "{finished} of {n} runs finished within 120 s; logs in {}",
                scratch.path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let total = settled_request_count(&http, &pair.emulator, 30.0 / speed).await?;
    drop(pair);
    Ok((total, finished))
}

/// Every API request the emulator answered, read once the count has stood still for
/// `settle_seconds` of real time: once every run is over the daemon stops asking, and its last
/// poll (the one that sees the last runs end) is then counted too.
pub(super) async fn settled_request_count(
    http: &Http,
    emulator: &super::process::EmulatorProcess,
    settle_seconds: f64,
) -> anyhow::Result<u64> {
    let mut last = 0;
    let mut stable_since = std::time::Instant::now();
    let settle = Duration::from_secs_f64(settle_seconds);
    loop {
        let total: u64 = http.api_requests(emulator).await?.values().sum();
        if total != last {
            last = total;
            stable_since = std::time::Instant::now();
        } else if stable_since.elapsed() >= settle {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
