//! Restart to resumed: the daemon triggers one long-running attempt in each of `P` pipelines (five
//! chained steps each), is SIGKILLed, the bench seeds its store offline with finished pipeline runs
//! totalling a million finished attempts (five per run), then restarts it on the real clock.
//!
//! "Resumed" means both: `/readyz` answered 200 (state loaded, the scheduler loop answering, dbt
//! Cloud reachable) AND the emulator has received, since the restart, as many `list_runs` requests
//! as one batched poll of every in-flight run takes (one per 100 runs); `/readyz` probes another
//! route (the account), and only when no request of the daemon was answered lately. The emulator
//! counts requests by route only, so this is "as many polls as a full round", not proof that each
//! run id was in one of them.

use super::generate::{self, job_id};
use super::output::{Report, Target};
use super::process::{Deadline, EmulatorProcess, Http, Scratch, TimeLine};
use super::{procfs, start_pair, Options};
use crate::dbt_cloud::wire::RunStatus;
use crate::engine::state::{
    AttemptKey, AttemptOutcome, AttemptPhase, PipelineRun, PipelineRunId, PipelineRunState,
    StatusChange, StepRun, StepState, Write,
};
use crate::ids::RunId;
use crate::store::{Durability, Store};
use anyhow::{bail, Context};
use std::time::{Duration, Instant};

const STEPS: usize = 5;
const POLL_BATCH: usize = 100;
const SEED_BATCH: usize = 1000;
/// The longest wait for the daemon to start, load and poll.
const LIMIT: Duration = Duration::from_secs(600);

pub async fn run(options: Options, report: &mut Report) -> anyhow::Result<()> {
    let (pipelines, history_attempts) = if options.quick {
        (20, 2_000)
    } else {
        (1_000, 1_000_000)
    };
    let scratch = Scratch::new("restart", options.keep)?;
    let tick = chrono::DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z")?.to_utc();
    let time = TimeLine::starting_now(tick - chrono::Duration::seconds(4), 1.0);
    let jobs = (0..pipelines).map(|p| (job_id(p, 0), "10h".to_string()));
    let scenario = generate::scenario(jobs, "200ms", None);
    let extra = format!("poll_interval: 5s\nmax_in_flight: {pipelines}\n");
    let mut pair = start_pair(&scratch, &scenario, &time, 0, &extra, |dir| {
        generate::write_chains(dir, pipelines, STEPS, |_| "0 * * * *".into())
    })
    .await?;
    let http = Http::new()?;

    // Every attempt triggered, then two full poll rounds, so that every run id is persisted.
    let deadline = Deadline::after(Duration::from_secs(120));
    loop {
        let created = http.runs(&pair.emulator).await.map_or(0, |r| r.len());
        if created >= pipelines {
            break;
        }
        if deadline.passed() {
            bail!("{created} of {pipelines} runs triggered within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rounds = pipelines.div_ceil(POLL_BATCH) as u64;
    let before = list_runs(&http, &pair.emulator).await?;
    wait_for_list_runs(
        &http,
        &pair.emulator,
        before + 2 * rounds,
        Duration::from_millis(100),
    )
    .await
    .context("before the kill")?;
    pair.daemon.kill();

    let seeding = Instant::now();
    let seeded = seed(&pair.workspace.state_dir, history_attempts)?;
    let seed_seconds = seeding.elapsed().as_secs_f64();
    let store_mib = procfs::dir_mib(&pair.workspace.state_dir);

    let baseline = list_runs(&http, &pair.emulator).await?;
    let log_before = pair.workspace.log_len();
    let spawned = Instant::now();
    let mut daemon = pair.workspace.start_daemon(&time)?;
    let api = pair
        .workspace
        .api_address(&mut daemon, log_before, LIMIT)
        .await?;
    let ready_url = format!("{api}/readyz");
    let deadline = Deadline::after(LIMIT);
    while http.status_of(&ready_url).await != Some(200) {
        if deadline.passed() {
            bail!("/readyz did not answer 200 within {LIMIT:?} of the restart");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ready_at = spawned.elapsed();
    wait_for_list_runs(
        &http,
        &pair.emulator,
        baseline + rounds,
        Duration::from_millis(2),
    )
    .await
    .context("after the restart")?;
    let resumed_at = spawned.elapsed();
    let rss = procfs::peak_rss_mib(daemon.pid()).unwrap_or(f64::NAN);
    daemon.kill();
    drop(pair);

    report.info(
        "restart",
        "restart_attempts_in_flight",
        "attempts in flight",
        pipelines as f64,
        "",
    );
    report.info(
        "restart",
        "restart_finished_attempts",
        "finished attempts in the store",
        seeded as f64,
        "",
    );
    report.info(
        "restart",
        "restart_seed_seconds",
        "seeding the store offline",
        seed_seconds,
        "s",
    );
    report.info(
        "restart",
        "restart_store_mib",
        "store size on disk",
        store_mib,
        "MiB",
    );
    report.measured(
        "restart",
        "store_bytes_per_finished_attempt",
        "store size over its finished attempts",
        store_mib * 1024.0 * 1024.0 / seeded as f64,
        "B",
        Target::AtMost(400.0),
    );
    report.info(
        "restart",
        "restart_ready_ms",
        "spawn to /readyz 200",
        ready_at.as_secs_f64() * 1000.0,
        "ms",
    );
    report.info(
        "restart",
        "restart_peak_rss_mib",
        "restarted daemon peak RSS",
        rss,
        "MiB",
    );
    report.measured(
        "restart",
        "restart_resumed_ms",
        "spawn to resumed (ready + every in-flight run polled)",
        resumed_at.as_secs_f64() * 1000.0,
        "ms",
        Target::Below(500.0),
    );
    Ok(())
}

/// Writes finished pipeline runs (five finished attempts each) until `attempts` are stored; each
/// pipeline's in-flight run is the template, copied to earlier hours. They are written archived,
/// as the daemon that ran them would have left them (they ended long before `memory_window`).
/// Returns the attempts written.
fn seed(state_dir: &std::path::Path, attempts: usize) -> anyhow::Result<usize> {
    let store = Store::open(state_dir).context("opening the dead daemon's store")?;
    let state = store.load()?;
    let templates: Vec<&PipelineRun> = state
        .runs
        .values()
        .filter(|r| !r.state.is_terminal())
        .collect();
    if templates.is_empty() {
        bail!("the store holds no pipeline run in flight to copy");
    }
    let runs_wanted = attempts.div_ceil(STEPS);
    let mut written = 0;
    let mut batch = Vec::with_capacity(SEED_BATCH);
    let mut hours_back = 1;
    let mut next_run_id = 1_000_000_000_000i64;
    'outer: loop {
        for template in &templates {
            if written >= runs_wanted {
                break 'outer;
            }
            let run = finished_copy(template, hours_back, &mut next_run_id)
                .context("a template run has no attempt")?;
            batch.push(Write::Archive(Box::new(run)));
            written += 1;
            if batch.len() == SEED_BATCH {
                store.commit_with(&batch, Durability::Deferred)?;
                batch.clear();
            }
        }
        hours_back += 1;
    }
    store.commit(&batch)?;
    Ok(written * STEPS)
}

/// `template` as it would be stored had it run `hours_back` hours earlier and succeeded, each
/// step with one finished attempt.
fn finished_copy(
    template: &PipelineRun,
    hours_back: i64,
    next_run_id: &mut i64,
) -> Option<PipelineRun> {
    let sample = template.steps.values().find_map(|s| s.attempts.first())?;
    let logical = template.logical_date - chrono::Duration::hours(hours_back);
    let mut run = template.clone();
    run.id = PipelineRunId::new(template.pipeline(), logical);
    run.logical_date = logical;
    run.data_interval_start = logical - chrono::Duration::hours(1);
    run.state = PipelineRunState::Succeeded;
    run.created_at = logical;
    run.started_at = Some(logical);
    run.finished_at = Some(logical + chrono::Duration::minutes(10));
    run.cancel_reason = None;
    let mut at = logical;
    for step in &template.definition.steps {
        let mut attempt = sample.clone();
        attempt.number = 1;
        attempt.key = AttemptKey::derive(&run.id, &step.name, 1);
        attempt.job_id = step.job_id;
        attempt.phase = AttemptPhase::Finished;
        *next_run_id += 1;
        attempt.run_id = Some(RunId(*next_run_id));
        attempt.status = Some(RunStatus::Success);
        attempt.outcome = Some(AttemptOutcome::Success);
        attempt.request.cause = format!(
            "baton: {} {} {} attempt 1 [{}]",
            template.pipeline().0,
            step.name.0,
            logical.to_rfc3339(),
            attempt.key.0
        );
        attempt.created_at = at;
        attempt.accepted_at = Some(at);
        attempt.resend_at = None;
        attempt.reconcile_at = None;
        attempt.cancel = None;
        let running = at + chrono::Duration::seconds(10);
        attempt.queued_since = Some(at);
        attempt.running_since = Some(running);
        at += chrono::Duration::minutes(2);
        attempt.finished_at = Some(at);
        attempt.history = vec![
            StatusChange {
                status: 1,
                at: attempt.created_at,
            },
            StatusChange {
                status: 3,
                at: running,
            },
            StatusChange { status: 10, at },
        ];
        run.steps.insert(
            step.name.clone(),
            StepRun {
                state: StepState::Succeeded,
                attempts: vec![attempt],
            },
        );
    }
    Some(run)
}

async fn list_runs(http: &Http, emulator: &EmulatorProcess) -> anyhow::Result<u64> {
    Ok(http
        .api_requests(emulator)
        .await?
        .get("list_runs")
        .copied()
        .unwrap_or(0))
}

/// Waits until the emulator has answered `wanted` `list_runs` requests in all.
async fn wait_for_list_runs(
    http: &Http,
    emulator: &EmulatorProcess,
    wanted: u64,
    step: Duration,
) -> anyhow::Result<()> {
    let deadline = Deadline::after(LIMIT);
    while list_runs(http, emulator).await? < wanted {
        if deadline.passed() {
            bail!("the daemon did not poll its runs within {LIMIT:?}");
        }
        tokio::time::sleep(step).await;
    }
    Ok(())
}
