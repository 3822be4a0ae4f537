//! Dispatch latency when polling predicts: chains of three jobs whose runs last 30 s ± 10 %,
//! polling only at the default 10 s interval, each chain run three times (every three minutes).
//! The first round has no history (the interval alone finds the ends); the latency target is over
//! the later rounds, when each job's durations are known. Latency is measured on the emulator's
//! own record, from an upstream run's `finished_at` to the downstream trigger's `created_at`, on a
//! time line `SPEED` times faster than real time (so milliseconds are scenario milliseconds); API
//! requests are every request the emulator answered over all rounds, per finished run.

use super::dispatch::{all_terminal, edges};
use super::generate::{self, job_id};
use super::output::{quantile, Report, Target};
use super::process::{EmulatedRun, Http, Scratch, TimeLine};
use super::requests::settled_request_count;
use super::{millis, start_pair, Options};
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::time::Duration;

const STEPS: usize = 3;
const ROUNDS: usize = 3;
/// Scenario seconds per real second.
const SPEED: f64 = 4.0;
const DURATION: &str = "{ min: 27s, max: 33s }";
const POLL_INTERVAL: &str = "10s";

pub async fn run(options: Options, report: &mut Report) -> anyhow::Result<()> {
    // Two edges per chain and round: 50 chains give 200 samples over the learned rounds.
    let pipelines = if options.quick { 8 } else { 50 };
    let measured = measure(options, pipelines).await?;
    let scenario = "dispatch_predicted";
    report.info(
        scenario,
        "dispatch_predicted_edges",
        "edges measured after the first round",
        measured.learned.len() as f64,
        "",
    );
    report.info(
        scenario,
        "dispatch_predicted_cold_p99_ms",
        "first round (no history yet): p99",
        quantile(&measured.cold, 0.99),
        "ms",
    );
    report.measured(
        scenario,
        "dispatch_predicted_p50_ms",
        "predicted polling, 10 s interval: p50",
        quantile(&measured.learned, 0.5),
        "ms",
        Target::AtMost(2500.0),
    );
    report.measured(
        scenario,
        "dispatch_predicted_p99_ms",
        "predicted polling, 10 s interval: p99",
        quantile(&measured.learned, 0.99),
        "ms",
        Target::AtMost(5000.0),
    );
    report.measured(
        scenario,
        "api_requests_per_attempt_predicted",
        "API requests per finished attempt (all rounds)",
        measured.requests as f64 / measured.finished.max(1) as f64,
        "",
        Target::AtMost(1.5),
    );
    Ok(())
}

struct Measured {
    /// Latencies (ms) of the first round, before any job has history.
    cold: Vec<f64>,
    /// Latencies (ms) of the later rounds.
    learned: Vec<f64>,
    requests: u64,
    finished: usize,
}

async fn measure(options: Options, pipelines: usize) -> anyhow::Result<Measured> {
    let scratch = Scratch::new("dispatch-predicted", options.keep)?;
    let tick = chrono::DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z")?.to_utc();
    // The daemon has four real seconds to start before the first tick.
    let lead = chrono::Duration::milliseconds((4.0 * SPEED * 1000.0) as i64);
    let time = TimeLine::starting_now(tick - lead, SPEED);
    let jobs =
        (0..pipelines).flat_map(|p| (0..STEPS).map(move |s| (job_id(p, s), DURATION.to_string())));
    let scenario = generate::scenario(jobs, "200ms", None);
    let extra = format!(
        "poll_interval: {POLL_INTERVAL}\nmax_in_flight: {}\n",
        pipelines * 2
    );
    let pair = start_pair(&scratch, &scenario, &time, 0, &extra, |dir| {
        generate::write_chains(dir, pipelines, STEPS, |_| "*/3 * * * *".into())
    })
    .await?;
    let http = Http::new()?;
    let expected = pipelines * STEPS * ROUNDS;
    // Three rounds of three minutes, in real time, and room for a slow machine.
    let limit = Duration::from_secs_f64(ROUNDS as f64 * 180.0 / SPEED + 120.0);
    let runs = all_terminal(&http, &pair.emulator, expected, limit, &scratch).await?;
    let requests = settled_request_count(&http, &pair.emulator, 15.0 / SPEED).await?;
    if let Ok(by_route) = http.api_requests(&pair.emulator).await {
        eprintln!("bench: dispatch_predicted requests by route: {by_route:?}");
    }
    drop(pair);
    let mut by_job: BTreeMap<i64, Vec<&EmulatedRun>> = BTreeMap::new();
    for run in &runs {
        by_job.entry(run.job_id).or_default().push(run);
    }
    for list in by_job.values_mut() {
        list.sort_by_key(|r| r.created_at);
    }
    let mut cold = Vec::new();
    let mut learned = Vec::new();
    for (upstream, downstream) in edges(&by_job, pipelines, STEPS)? {
        if upstream.len() != ROUNDS || downstream.len() != ROUNDS {
            bail!(
                "a chain ran {} and {} times instead of {ROUNDS} (a round skipped?); logs in {}",
                upstream.len(),
                downstream.len(),
                scratch.path.display()
            );
        }
        for (round, (up, down)) in upstream.iter().zip(downstream.iter()).enumerate() {
            let finished = up
                .finished_at
                .context("a terminal run without finished_at")?;
            let latency = millis(finished, down.created_at);
            if round == 0 {
                cold.push(latency);
            } else {
                learned.push(latency);
            }
        }
    }
    Ok(Measured {
        cold,
        learned,
        requests,
        finished: runs.len(),
    })
}
