//! Dispatch latency: from the instant the emulator made an upstream run terminal (its own record,
//! `finished_at`) to the instant it received the downstream step's trigger (`created_at`), over
//! chains of five steps on the real clock (speed 1), once with polling only and once with signed
//! webhooks (polling then slowed to a fallback that cannot help).

use super::generate::{self, job_id};
use super::output::{quantile, Report, Target};
use super::process::{free_port, Deadline, EmulatedRun, EmulatorProcess, Http, Scratch, TimeLine};
use super::{millis, start_pair, Options};
use anyhow::{bail, Context};
use std::time::Duration;

const STEPS: usize = 5;
/// Poll interval of the polling-only variant.
const POLL_INTERVAL_MS: f64 = 1000.0;
const WEBHOOK_SECRET: &str = "bench-webhook-secret";

pub async fn run(options: Options, report: &mut Report) -> anyhow::Result<()> {
    // Four edges per pipeline: 60 pipelines give 240 samples, enough for a p99.
    let pipelines = if options.quick { 5 } else { 60 };
    let polling = measure(options, pipelines, false).await?;
    report.info(
        "dispatch",
        "dispatch_poll_interval_ms",
        "poll interval used (polling only)",
        POLL_INTERVAL_MS,
        "ms",
    );
    report.info(
        "dispatch",
        "dispatch_edges",
        "edges measured per variant",
        polling.len() as f64,
        "",
    );
    report.info(
        "dispatch",
        "dispatch_polling_p50_ms",
        "polling only: p50",
        quantile(&polling, 0.5),
        "ms",
    );
    report.measured(
        "dispatch",
        "dispatch_polling_p99_ms",
        "polling only: p99",
        quantile(&polling, 0.99),
        "ms",
        Target::Below(POLL_INTERVAL_MS),
    );
    let webhooks = measure(options, pipelines, true).await?;
    report.info(
        "dispatch",
        "dispatch_webhook_p50_ms",
        "webhooks: p50",
        quantile(&webhooks, 0.5),
        "ms",
    );
    report.measured(
        "dispatch",
        "dispatch_webhook_p99_ms",
        "webhooks: p99",
        quantile(&webhooks, 0.99),
        "ms",
        Target::Below(50.0),
    );
    Ok(())
}

/// One variant: every pipeline's chain ticks at the same minute; returns one latency per edge (ms).
async fn measure(options: Options, pipelines: usize, webhooks: bool) -> anyhow::Result<Vec<f64>> {
    let label = if webhooks {
        "dispatch-webhook"
    } else {
        "dispatch-poll"
    };
    let scratch = Scratch::new(label, options.keep)?;
    let tick = chrono::DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z")?.to_utc();
    // Real time: the daemon has four seconds to start before the tick.
    let time = TimeLine::starting_now(tick - chrono::Duration::seconds(4), 1.0);
    // Durations drawn per run, so that upstreams do not all end at the same instant (a burst of
    // simultaneous ends measures the emulator's one-at-a-time webhook queue, not the daemon).
    let duration = if options.quick {
        "{ min: 100ms, max: 400ms }"
    } else {
        "{ min: 500ms, max: 2500ms }"
    };
    let jobs =
        (0..pipelines).flat_map(|p| (0..STEPS).map(move |s| (job_id(p, s), duration.to_string())));
    let (port, hook, extra) = if webhooks {
        let port = free_port()?;
        std::fs::write(scratch.join("webhook-secret"), WEBHOOK_SECRET)?;
        (
            port,
            Some(format!("http://127.0.0.1:{port}/webhooks/dbt-cloud")),
            "poll_interval: 60s\nwebhooks:\n  secret_file: webhook-secret\n  poll_interval: 60s\n",
        )
    } else {
        (0, None, "poll_interval: 1s\n")
    };
    let scenario = generate::scenario(
        jobs,
        "200ms",
        hook.as_deref().map(|url| (url, WEBHOOK_SECRET)),
    );
    let extra = format!("{extra}max_in_flight: {}\n", pipelines * 2);
    let pair = start_pair(&scratch, &scenario, &time, port, &extra, |dir| {
        generate::write_chains(dir, pipelines, STEPS, |_| "0 * * * *".into())
    })
    .await?;
    let http = Http::new()?;
    let expected = pipelines * STEPS;
    let runs = all_terminal(
        &http,
        &pair.emulator,
        expected,
        Duration::from_secs(180),
        &scratch,
    )
    .await?;
    let by_job: std::collections::BTreeMap<i64, &super::process::EmulatedRun> =
        runs.iter().map(|r| (r.job_id, r)).collect();
    let mut samples = Vec::new();
    for (upstream, downstream) in edges(&by_job, pipelines, STEPS)? {
        let finished = upstream
            .finished_at
            .context("a terminal run without finished_at")?;
        samples.push(millis(finished, downstream.created_at));
    }
    drop(pair);
    Ok(samples)
}

/// Every chain's (upstream, downstream) pair of `by_job` entries, step after step.
pub(super) fn edges<T>(
    by_job: &std::collections::BTreeMap<i64, T>,
    pipelines: usize,
    steps: usize,
) -> anyhow::Result<Vec<(&T, &T)>> {
    let mut pairs = Vec::new();
    for p in 0..pipelines {
        for s in 1..steps {
            let upstream = by_job
                .get(&job_id(p, s - 1))
                .with_context(|| format!("no run of pipeline {p} step {}", s - 1))?;
            let downstream = by_job
                .get(&job_id(p, s))
                .with_context(|| format!("no run of pipeline {p} step {s}"))?;
            pairs.push((upstream, downstream));
        }
    }
    Ok(pairs)
}

/// The emulator's runs once at least `expected` exist and all are terminal, within `limit`.
pub(super) async fn all_terminal(
    http: &Http,
    emulator: &EmulatorProcess,
    expected: usize,
    limit: Duration,
    scratch: &Scratch,
) -> anyhow::Result<Vec<EmulatedRun>> {
    let deadline = Deadline::after(limit);
    loop {
        let runs = http.runs(emulator).await.unwrap_or_default();
        if runs.len() >= expected && runs.iter().all(|r| r.is_terminal()) {
            return Ok(runs);
        }
        if deadline.passed() {
            bail!(
                "{} of {expected} runs finished within {} s; logs in {}",
                runs.iter().filter(|r| r.is_terminal()).count(),
                limit.as_secs(),
                scratch.path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
