//! `baton demo`: the daemon driving the built-in dbt Cloud emulator with the example pipelines, in a
//! temporary state directory, with every step's progress printed as it happens.

use crate::clock::{ScaledClock, SharedClock};
use crate::config::{load_pipeline_str, load_pipelines};
use crate::dbt_cloud::client::{ClientConfig, DbtCloudClient};
use crate::dbt_cloud::RequestBudget;
use crate::emulator::{Emulator, EmulatorHandle, Scenario};
use crate::engine::event::{Event, OperatorRequest, Transition, TransitionKind};
use crate::engine::state::PipelineRunState;
use crate::engine::EngineConfig;
use crate::model::pipeline::Pipeline;
use crate::runtime::{Daemon, DaemonHandle, RuntimeSettings};
use crate::secret::Secret;
use crate::store::Store;
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

const EMBEDDED_PIPELINES: [(&str, &str); 4] = [
    ("nightly.yaml", include_str!("../../pipelines/nightly.yaml")),
    (
        "weekly_backfill.yaml",
        include_str!("../../pipelines/weekly_backfill.yaml"),
    ),
    (
        "sydney_hourly.yaml",
        include_str!("../../pipelines/sydney_hourly.yaml"),
    ),
    (
        "regional_handoff.yaml",
        include_str!("../../pipelines/regional_handoff.yaml"),
    ),
];
const EMBEDDED_SCENARIO: &str = include_str!("../../pipelines/demo.scenario.yaml");

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Pipeline files to run (the built-in examples when the directory does not exist).
    #[arg(long, default_value = "pipelines")]
    pub pipelines: PathBuf,
    /// How many times faster than real time the demo's clock runs.
    #[arg(long, default_value_t = 10.0)]
    pub speed: f64,
    /// Stop by itself after this long (real time), e.g. `30s`; runs until Ctrl-C otherwise.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub r#for: Option<Duration>,
    /// Seconds (real time) between demo re-triggers of pipelines that have nothing running.
    #[arg(long, default_value_t = 20)]
    pub retrigger_every: u64,
}

pub fn run(args: &DemoArgs) -> ExitCode {
    crate::logging::init_at(crate::config::daemon::LogFormat::Pretty, "warn");
    super::common::block_on(async { Ok(demo(args).await?) })
}

fn demo_pipelines(dir: &std::path::Path) -> anyhow::Result<Vec<Pipeline>> {
    if dir.is_dir() {
        return load_pipelines(&[dir.to_path_buf()])
            .map_err(|d| anyhow::anyhow!("the pipeline files have problems:\n{d}"));
    }
    EMBEDDED_PIPELINES
        .iter()
        .map(|(name, text)| {
            load_pipeline_str(name, text).map_err(|d| anyhow::anyhow!("built-in {name}:\n{d}"))
        })
        .collect()
}

async fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    if !args.speed.is_finite() || args.speed <= 0.0 {
        anyhow::bail!("--speed must be above 0");
    }
    let mut pipelines = demo_pipelines(&args.pipelines)?;
    let clock: SharedClock = Arc::new(ScaledClock::new(args.speed));
    let shutdown = CancellationToken::new();

    let scenario = Scenario::from_yaml_str(EMBEDDED_SCENARIO)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let emulator = Emulator::start(scenario, clock.clone(), listener, shutdown.clone()).await?;

    let state_dir = std::env::temp_dir().join(format!("baton-demo-{}", std::process::id()));
    let store = Store::open(&state_dir)?;
    let client = demo_client(&emulator, clock.clone())?;
    // The one emulator plays every account the pipelines name, and answers their job names.
    let accounts: std::collections::BTreeMap<_, _> = pipelines
        .iter()
        .flat_map(|p| p.steps.iter().map(|s| s.account.clone()))
        .chain(std::iter::once(crate::ids::AccountName::default()))
        .map(|a| (a, client.clone()))
        .collect();
    crate::dbt_cloud::job_names::resolve_job_names(
        &accounts,
        &mut pipelines,
        &std::collections::BTreeMap::new(),
    )
    .await
    .map_err(|p| anyhow::anyhow!("job names could not be resolved:\n  {}", p.join("\n  ")))?;
    let settings = RuntimeSettings {
        engine: EngineConfig {
            poll_interval: Duration::from_secs(2),
            reconcile_delay: Duration::from_secs(5),
            ..EngineConfig::default()
        },
        ..RuntimeSettings::default()
    };
    let daemon = Daemon::new(settings, pipelines.clone(), store, client, clock.clone())
        .context("starting the daemon")?
        .with_accounts(accounts);
    let daemon_shutdown = CancellationToken::new();
    let (handle, task) = crate::runtime::spawn(daemon, daemon_shutdown.clone());

    print_banner(&emulator, &state_dir, args, &pipelines, clock.now());
    let printer = tokio::spawn(print_transitions(handle.clone(), clock.clone()));
    for p in &pipelines {
        let _ = handle.send(Event::Operator(OperatorRequest::TriggerPipeline {
            pipeline: p.name.clone(),
            logical_date: None,
        }));
    }
    let stop = async {
        match args.r#for {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = retrigger(handle.clone(), Duration::from_secs(args.retrigger_every.max(1))) => {}
    }
    println!("\nstopping: runs in flight are left to the emulator, state is flushed");
    let summary = summarize(&handle).await;
    daemon_shutdown.cancel();
    task.await??;
    printer.abort();
    shutdown.cancel();
    emulator.stopped().await;
    let _ = std::fs::remove_dir_all(&state_dir);
    println!("{summary}");
    Ok(())
}

fn demo_client(emulator: &EmulatorHandle, clock: SharedClock) -> anyhow::Result<DbtCloudClient> {
    let config = ClientConfig::new(
        emulator.base_url().parse()?,
        emulator.account_id(),
        Secret::new(emulator.token()),
    );
    let budget = Arc::new(RequestBudget::new(config.requests_per_minute, clock));
    Ok(DbtCloudClient::with_budget(config, budget)?)
}

fn print_banner(
    emulator: &EmulatorHandle,
    state_dir: &std::path::Path,
    args: &DemoArgs,
    pipelines: &[Pipeline],
    now: DateTime<Utc>,
) {
    println!("baton demo: the daemon against a local dbt Cloud emulator");
    println!(
        "  emulator   {}/api/v2/  (account {})",
        emulator.base_url(),
        emulator.account_id()
    );
    println!("  state      {} (removed at exit)", state_dir.display());
    println!("  clock      {}x real time; Ctrl-C stops", args.speed);
    for p in pipelines {
        let next = p
            .schedule
            .as_ref()
            .and_then(|s| crate::model::schedule::Schedule::new(s).ok())
            .and_then(|s| s.next_after(now))
            .map(|t| crate::humanize::when(t, crate::humanize::zone_of(p)))
            .unwrap_or_else(|| "not scheduled".into());
        println!(
            "  pipeline   {:<16} {} steps, next scheduled tick {next}",
            p.name.0,
            p.steps.len()
        );
    }
    println!("every pipeline is triggered now, and again whenever it is idle for a while\n");
}

/// Keeps the demo lively: pipelines with nothing active are triggered again.
async fn retrigger(handle: DaemonHandle, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let idle = handle
            .inspect(|engine, _| {
                engine
                    .pipelines()
                    .filter(|p| {
                        !engine
                            .state()
                            .runs
                            .values()
                            .any(|r| r.pipeline() == &p.name && !r.state.is_terminal())
                    })
                    .map(|p| p.name.clone())
                    .collect::<Vec<_>>()
            })
            .await;
        let Ok(idle) = idle else { return };
        for pipeline in idle {
            let _ = handle.send(Event::Operator(OperatorRequest::TriggerPipeline {
                pipeline,
                logical_date: None,
            }));
        }
    }
}

async fn print_transitions(handle: DaemonHandle, clock: SharedClock) {
    let mut rx = handle.transitions();
    loop {
        match rx.recv().await {
            Ok(t) => {
                if let Some(line) = render(&t, clock.now()) {
                    println!("{line}");
                }
            }
            Err(RecvError::Lagged(n)) => println!("  ... {n} transitions not shown"),
            Err(RecvError::Closed) => return,
        }
    }
}

/// One line a person can follow; `None` for transitions too fine-grained to show.
fn render(t: &Transition, now: DateTime<Utc>) -> Option<String> {
    let (mark, what) = match t.what {
        TransitionKind::PipelineRunCreated => ("+", "pipeline run created".to_string()),
        TransitionKind::PipelineRunStarted => return None,
        TransitionKind::PipelineRunSucceeded => ("✔", "PIPELINE RUN SUCCEEDED".to_string()),
        TransitionKind::PipelineRunFailed => ("✖", format!("PIPELINE RUN FAILED: {}", t.detail)),
        TransitionKind::PipelineRunCancelled => ("■", "pipeline run cancelled".to_string()),
        TransitionKind::PipelineRunLate => ("⏰", format!("LATE: {}", t.detail)),
        TransitionKind::TickSkipped | TransitionKind::TicksMissed => ("·", t.detail.clone()),
        TransitionKind::StepTriggering => ("▶", t.detail.clone()),
        TransitionKind::StepTriggered => (
            "▶",
            format!(
                "queued in dbt Cloud as run {}",
                t.dbt_run.map(|r| r.to_string()).unwrap_or_default()
            ),
        ),
        TransitionKind::StepStatus if t.detail.starts_with("Running") => {
            ("…", "running".to_string())
        }
        TransitionKind::StepStatus => return None,
        TransitionKind::StepSucceeded => ("✔", "succeeded".to_string()),
        TransitionKind::StepFailed => ("✖", format!("failed: {}", t.detail)),
        TransitionKind::StepRetryScheduled => ("↻", t.detail.clone()),
        TransitionKind::StepUpstreamFailed => ("⤫", "not run: an upstream step failed".to_string()),
        TransitionKind::StepCancelled => ("■", "cancelled".to_string()),
        TransitionKind::CancelRequested => ("■", format!("cancel requested: {}", t.detail)),
        TransitionKind::TriggerAmbiguous => ("?", t.detail.clone()),
        TransitionKind::TriggerAdopted => ("✓", format!("run adopted by its key: {}", t.detail)),
        TransitionKind::TriggerResent => ("↻", format!("trigger re-sent: {}", t.detail)),
        TransitionKind::UnknownStatus => ("?", format!("unknown status {}", t.detail)),
        TransitionKind::BackfillCreated => ("+", format!("backfill created: {}", t.detail)),
        TransitionKind::BackfillFinished => ("✔", format!("backfill finished: {}", t.detail)),
    };
    let logical = t
        .run
        .as_ref()
        .and_then(|r| r.0.split_once('@'))
        .map(|(_, d)| d.trim_end_matches('Z').replacen('T', " ", 1))
        .unwrap_or_default();
    let step = match (&t.step, t.attempt) {
        (Some(s), Some(n)) if n > 0 => format!("{s} #{n}"),
        (Some(s), _) => s.clone(),
        _ => String::new(),
    };
    Some(format!(
        "{} {mark} {:<15} {:<19} {:<15} {what}",
        now.format("%H:%M:%S"),
        t.pipeline.0,
        logical,
        step,
    ))
}

async fn summarize(handle: &DaemonHandle) -> String {
    handle
        .inspect(|engine, _| {
            let in_memory = engine.state().runs.values().map(|r| r.state);
            let archived = engine.state().archived.values().map(|a| a.state);
            let (mut ok, mut failed, mut active) = (0, 0, 0);
            for state in in_memory.chain(archived) {
                match state {
                    PipelineRunState::Succeeded => ok += 1,
                    PipelineRunState::Failed | PipelineRunState::Cancelled => failed += 1,
                    _ => active += 1,
                }
            }
            format!(
                "pipeline runs: {ok} succeeded, {failed} failed or cancelled, {active} still active"
            )
        })
        .await
        .unwrap_or_else(|_| "the daemon had already stopped".into())
}
